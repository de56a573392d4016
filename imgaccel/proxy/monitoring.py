"""The metrics listener: ``/metrics`` and ``/healthz`` alone, on an address of their own.

The mirror binds loopback (containerd on the same host is its only client), so Prometheus and
kubelet cannot reach it there; ``metrics_listen`` (``--metrics-listen 0.0.0.0:9465``) opens a
second, plain HTTP site that serves only these two read-only routes, never the registry API.
It lives and dies with the node app (a ``cleanup_ctx`` entry after the node's own).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

from aiohttp import web

from imgaccel.address import split_listen
from imgaccel.proxy.state import NODE
from imgaccel.serve import listening

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: The metrics listener's base URL (with the real port when asked for port 0).
METRICS_URL = web.AppKey("metrics_url", str)


def metrics_listener(
    listen: str, routes: Mapping[str, Handler]
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A ``cleanup_ctx`` entry serving ``routes`` (path -> GET handler) on ``listen``."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        side = web.Application()
        side[NODE] = app[NODE]
        for path, handler in routes.items():
            side.router.add_get(path, handler)
        host, port = split_listen(listen)
        async with listening(side, host, port) as url:
            app[METRICS_URL] = url
            log.info("metrics and health on %s", url, extra={"metrics_url": url})
            yield

    return context
