"""One finding of ``imgaccel doctor``: what was checked, how it went, and what to do about it."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Status(enum.Enum):
    OK = "ok"
    WARN = "warn"
    FAIL = "FAIL"
    SKIP = "skip"  # not applicable on this node (no dockerd, no tracker configured)


@dataclass(frozen=True)
class Check:
    """``name``: what was checked; ``detail``: what was found; ``fix``: the exact remedy."""

    name: str
    status: Status
    detail: str
    fix: str = ""

    def as_json(self) -> dict[str, str]:
        return {
            "name": self.name,
            "status": self.status.value,
            "detail": self.detail,
            "fix": self.fix,
        }


def ok(name: str, detail: str) -> Check:
    return Check(name, Status.OK, detail)


def warn(name: str, detail: str, fix: str) -> Check:
    return Check(name, Status.WARN, detail, fix)


def fail(name: str, detail: str, fix: str) -> Check:
    return Check(name, Status.FAIL, detail, fix)


def skip(name: str, detail: str) -> Check:
    return Check(name, Status.SKIP, detail)
