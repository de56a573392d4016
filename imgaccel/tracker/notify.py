"""Wake long-polling requests when the thing they wait for happens (by key)."""

from __future__ import annotations

import asyncio


class Notifier:
    """Waiters by key: :meth:`notify` wakes every current waiter of a key.

    A waiter registers before its first ``await``, so a handler that checks the store and then
    calls :meth:`wait` cannot miss a notification sent between the two.
    """

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}
        self._waiters: dict[str, int] = {}

    async def wait(self, key: str, seconds: float) -> bool:
        """Wait up to ``seconds``; True when notified."""
        event = self._events.setdefault(key, asyncio.Event())
        self._waiters[key] = self._waiters.get(key, 0) + 1
        try:
            async with asyncio.timeout(seconds):
                await event.wait()
            return True
        except TimeoutError:
            return False
        finally:
            self._forget(key, event)

    def notify(self, key: str) -> None:
        event = self._events.pop(key, None)
        if event is not None:
            event.set()

    def waiting(self, key: str) -> int:
        """How many requests wait on ``key`` now."""
        return self._waiters.get(key, 0)

    def _forget(self, key: str, event: asyncio.Event) -> None:
        self._waiters[key] -= 1
        if not self._waiters[key]:
            del self._waiters[key]
            if self._events.get(key) is event:
                del self._events[key]

    def notify_all(self) -> None:
        """Wake every waiter (shutdown: long polls answer now instead of holding it up)."""
        for key in list(self._events):
            self.notify(key)
