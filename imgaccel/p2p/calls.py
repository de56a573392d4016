"""libtorrent calls that wait for its network thread, made off the event loop.

``torrent_handle.status()``, ``get_peer_info()`` and ``piece_availability()`` (and
``session.add_torrent``) are round trips: the caller waits until libtorrent's one network thread
gets to them, 1-9 ms with transfers under way. The share tick makes three of them per
downloading torrent five times a second; made on the loop, they held it 17-22 ms a tick at the
median and 120-150 ms at the 99th percentile (one process: a seed and three downloader sessions,
4 blobs of 192 MiB each, 2 cores), and every response the node was streaming waited. The
binding lets go of the GIL while it waits, so in a worker thread such a call costs the loop
nothing (the same tick: 0.4 ms at the median, 5-8 ms at the 99th percentile, mostly waiting for
the GIL). The periodic calls are made here: the share tick and a landing's progress poll. The
one-off calls of adding a torrent or starting a landing stay on the loop, as do those that only
post a request to the network thread and return (``prioritize_pieces``, ``set_flags``,
``flush_cache``, ``pause``, ``connect_peer``, ``remove_torrent``, ``post_session_stats``:
microseconds).

A session must not be destroyed under a call still running in a thread, whether its caller is
still waiting or was cancelled: :meth:`BlockingCalls.drain` waits for every call in flight.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class BlockingCalls:
    """Runs blocking libtorrent calls in the loop's default executor and keeps count of them."""

    def __init__(self) -> None:
        self._running: set[asyncio.Future[Any]] = set()

    async def run(self, fn: Callable[..., T], /, *args: Any) -> T:
        """``fn(*args)`` in a worker thread. A cancelled caller stops waiting for it at once;
        the call itself goes on (a thread cannot be stopped) and :meth:`drain` waits for it."""
        # An executor future rather than asyncio.to_thread's task: the loop's shutdown, which
        # cancels every task left, must not mark a call done while its thread still runs.
        call = asyncio.get_running_loop().run_in_executor(None, functools.partial(fn, *args))
        self._running.add(call)
        call.add_done_callback(self._done)
        return await asyncio.shield(call)

    def _done(self, call: asyncio.Future[Any]) -> None:
        self._running.discard(call)
        if not call.cancelled():
            call.exception()  # retrieved: a caller cancelled meanwhile never asks for it

    async def drain(self) -> None:
        """Return once no call is in flight (calls started meanwhile included)."""
        while self._running:
            await asyncio.wait(set(self._running))
