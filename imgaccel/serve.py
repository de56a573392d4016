"""Run an aiohttp app until SIGINT/SIGTERM, announcing the bound address (port 0 works)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl
import sys

from aiohttp import web


async def serve(
    app: web.Application, host: str, port: int, name: str, ssl_context: ssl.SSLContext | None = None
) -> None:
    """Serve until a signal; print ``imgaccel NAME listening on URL`` once ready."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context, backlog=1024)
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
