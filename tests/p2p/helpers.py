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


async def collect(download: Download) -> bytes:
    """Land every piece, then the whole file as libtorrent wrote it."""
    async for _ in download.land():
        pass
    return download.path.read_bytes()


async def land_checked(download: Download, data: bytes, landed: list[int]) -> None:
    """Land pieces until the download ends or raises, checking each piece's bytes in the file
    at the moment it is reported, and adding it to ``landed``."""
    metainfo = download.metainfo
    async for batch in download.land():
        with download.path.open("rb") as file:
            for index in batch:
                start = index * metainfo.piece_length
                file.seek(start)
                piece = file.read(metainfo.piece_size(index))
                assert piece == data[start : start + len(piece)], f"piece {index} is wrong"
        landed += batch
