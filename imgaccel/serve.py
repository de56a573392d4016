"""Run an aiohttp app until SIGINT/SIGTERM, announcing the bound address (port 0 works)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import signal
import ssl
import sys
from collections.abc import AsyncIterator, Sequence

from aiohttp import web


async def serve(
    app: web.Application,
    host: str,
    port: int,
    name: str,
    ssl_context: ssl.SSLContext | None = None,
    more: Sequence[tuple[str, int]] = (),
) -> None:
    """Serve until a signal; print ``imgaccel NAME listening on URL`` once ready. ``more``: more
    addresses to serve the same app on (the node's ``registry_listen``)."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        for site_host, site_port in [(host, port), *more]:
            site = web.TCPSite(runner, site_host, site_port, ssl_context=ssl_context, backlog=1024)
            await site.start()
        scheme = "https" if ssl_context else "http"
        for address in runner.addresses:
            bound_host, bound_port = address[0], address[1]
            shown = f"[{bound_host}]" if ":" in bound_host else bound_host
            print(
                f"imgaccel {name} listening on {scheme}://{shown}:{bound_port}",
                file=sys.stderr,
                flush=True,
            )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def listening(
    app: web.Application, host: str, port: int, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[str]:
    """Serve ``app`` on ``host:port`` until the block ends; yields its base URL (the real port
    when asked for 0). For a second, smaller site beside a service (metrics and health)."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        with contextlib.suppress(ValueError):
            if ipaddress.ip_address(bound_host).version == 6:
                bound_host = f"[{bound_host}]"
        yield f"{'https' if ssl_context else 'http'}://{bound_host}:{bound_port}"
    finally:
        await runner.cleanup()
