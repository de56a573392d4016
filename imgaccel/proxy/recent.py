"""The node's recent blob serves: a small ring buffer for ``imgaccel status``."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass


@dataclass(frozen=True, slots=True)
class Serve:
    """One blob sent to a client: where its bytes came from and how long it took."""

    digest: str
    source: str  # cache, peer or origin
    bytes: int
    seconds: float
    when: float  # Unix time at the end of the serve

    def as_json(self) -> dict[str, object]:
        return asdict(self)


class RecentServes:
    """The last ``size`` blob serves, oldest first; older ones fall off."""

    def __init__(self, size: int = 50, clock: Callable[[], float] = time.time) -> None:
        self._serves: deque[Serve] = deque(maxlen=size)
        self._clock = clock

    def add(self, digest: str, source: str, nbytes: int, seconds: float) -> None:
        self._serves.append(Serve(digest, source, nbytes, seconds, self._clock()))

    def newest_first(self) -> list[Serve]:
        return list(reversed(self._serves))
