"""A token bucket in bytes per second: the budget background fetching may spend."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class TokenBucket:
    """``rate`` bytes/s on average, bursts up to ``burst`` bytes; ``rate`` 0 means no limit.

    :meth:`spend` takes bytes already fetched (the size of what comes next is not always known)
    and, when that overdrew the bucket, sleeps until the debt is paid back. A background fill
    spends each MiB as it arrives (:meth:`~imgaccel.cache.fill.Fill.pacer_now`), so a big blob
    keeps to ``rate`` too.
    """

    def __init__(
        self, rate: int, burst: int | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else rate
        self._clock = clock
        self._tokens = float(self.burst)
        self._stamp = clock()

    def delay_after(self, nbytes: int) -> float:
        """Spend ``nbytes``; the seconds to wait before spending more."""
        if not self.rate:
            return 0.0
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        self._tokens -= nbytes
        return max(0.0, -self._tokens / self.rate)

    async def spend(self, nbytes: int) -> None:
        delay = self.delay_after(nbytes)
        if delay:
            await asyncio.sleep(delay)
