"""Running the tracker app on a real socket: used by the CLI and by tests alike."""

from __future__ import annotations

import contextlib
import ipaddress
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

from imgaccel.address import split_listen
from imgaccel.serve import listening
from imgaccel.tracker import metrics
from imgaccel.tracker.app import make_app
from imgaccel.tracker.auth import server_context
from imgaccel.tracker.config import TrackerSettings
from imgaccel.tracker.state import STATE, Clock


@dataclass(frozen=True)
class Served:
    """A tracker being served: its base URL (with the real port when asked for 0) and its app;
    ``metrics_url``: the plain /healthz and /metrics listener, when ``metrics_listen`` is set."""

    url: str
    app: web.Application
    metrics_url: str | None = None


@contextlib.asynccontextmanager
async def running(settings: TrackerSettings, *, clock: Clock = time.time) -> AsyncIterator[Served]:
    """Serve the tracker until the block ends."""
    host, port = split_listen(settings.listen)
    ssl_context = None
    if settings.tls:
        assert settings.ca_cert and settings.cert and settings.key
        ssl_context = server_context(settings.ca_cert, settings.cert, settings.key)
    app = make_app(settings, clock=clock)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        async with _metrics_site(app, settings.metrics_listen) as metrics_url:
            yield Served(base_url(settings.tls, bound_host, bound_port), app, metrics_url)
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def _metrics_site(app: web.Application, listen: str | None) -> AsyncIterator[str | None]:
    """/healthz and /metrics alone over plain HTTP (never the API), if ``listen`` is set."""
    if listen is None:
        yield None
        return
    side = web.Application()
    side[STATE] = app[STATE]
    metrics.add_routes(side)
    host, port = split_listen(listen)
    async with listening(side, host, port) as url:
        yield url


def base_url(tls: bool, host: str, port: int) -> str:
    """``http(s)://HOST:PORT`` with IPv6 hosts in brackets."""
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    return f"{'https' if tls else 'http'}://{host}:{port}"
