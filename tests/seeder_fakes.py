"""Stand-ins for a seeder worker's tracker and cache filesystem, for tests that drive
:class:`imgaccel.seeder.worker.SeederWorker` without a tracker."""

from __future__ import annotations

import errno
from pathlib import Path

from imgaccel.cache.space import Usage


class ReleasingTracker:
    """The worker's tracker calls: every lease renews; renewals and what the worker gives back
    are recorded."""

    def __init__(self) -> None:
        self.renewed: list[str] = []
        self.released: list[str] = []

    async def renew(self, digest: str) -> bool:
        self.renewed.append(digest)
        return True

    async def release(self, digest: str) -> None:
        self.released.append(digest)


def unaskable(_path: Path) -> Usage:
    """A cache's filesystem that will not say what is free (the fill's preallocation decides)."""
    raise OSError(errno.EOPNOTSUPP, "statvfs is not supported")
