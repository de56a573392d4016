"""Helpers shared by the p2p tests."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from imgaccel.p2p.download import Download
from imgaccel.p2p.metainfo import Metainfo
from imgaccel.p2p.swarm import Swarm


@dataclass(frozen=True)
class Blob:
    path: Path
    data: bytes
    metainfo: Metainfo


SwarmFactory = Callable[..., contextlib.AbstractAsyncContextManager[Swarm]]


async def collect(download: Download, offset: int = 0) -> bytes:
    return b"".join([chunk async for chunk in download.stream(offset)])
