"""The prefetcher's shutdown: the last pull reports are tried briefly, never waited out."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from imgaccel.proxy import prefetch


async def test_a_silent_tracker_does_not_hold_the_shutdown() -> None:
    """kubelet gives a pod 30 s to stop; a black-holed tracker must not take them all."""
    prefetcher = prefetch.Prefetcher.__new__(prefetch.Prefetcher)
    prefetcher._tasks = set()
    prefetcher._http = aiohttp.ClientSession()

    async def never_answers(_wait: float) -> None:
        await asyncio.sleep(3600)

    prefetcher._send_reports = never_answers  # type: ignore[method-assign]
    started = time.monotonic()

    await asyncio.wait_for(prefetcher.__aexit__(None, None, None), 20)

    assert time.monotonic() - started < prefetch._LAST_REPORTS_SECONDS + 2
    assert prefetcher._http.closed
