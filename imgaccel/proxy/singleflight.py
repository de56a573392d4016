"""Run one coroutine per key however many callers ask at once (devpi's "fetch each key once")."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    """Concurrent callers of :meth:`run` with equal keys share one call and its outcome."""

    def __init__(self) -> None:
        self._running: dict[K, asyncio.Future[V]] = {}

    async def run(self, key: K, call: Callable[[], Awaitable[V]]) -> V:
        """``call()``'s outcome, shared with every caller of the same key meanwhile. A caller
        whose leader was cancelled (its client went away) does not inherit the cancellation: it
        runs the call again, as the new leader or a waiter of one."""
        while (running := self._running.get(key)) is not None:
            try:
                return await asyncio.shield(running)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not running.cancelled() or (task is not None and task.cancelling()):
                    raise  # this caller was cancelled, not (only) the one it waited for
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._running[key] = future
        try:
            result = await call()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # shared with the waiters; retrieved here so it is never "lost"
            raise
        else:
            future.set_result(result)
            return result
        finally:
            del self._running[key]
