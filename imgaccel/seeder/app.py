"""``make_app(settings)`` for the seeder: the node's app plus the tracker work loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from imgaccel.errors import ConfigError
from imgaccel.proxy.app import make_app as make_node_app
from imgaccel.proxy.state import NODE
from imgaccel.proxy.target import ALLOWLIST
from imgaccel.seeder.metrics import SeederMetrics
from imgaccel.seeder.worker import SeederWorker
from imgaccel.settings import Settings

WORKER = web.AppKey("seeder_worker", SeederWorker)


def make_app(settings: Settings) -> web.Application:
    if not settings.p2p.tracker_url:
        raise ConfigError("the seeder needs a tracker (--tracker)")
    settings = settings.model_copy(
        update={"p2p": settings.p2p.model_copy(update={"role": "seeder"})}
    )
    app = make_node_app(settings)
    app.cleanup_ctx.append(_worker)
    return app


async def _worker(app: web.Application) -> AsyncIterator[None]:
    node = app[NODE]
    peers = node.fetcher.peers
    assert peers is not None and peers.tracker is not None
    worker = SeederWorker(
        peers.tracker,
        node.fetcher,
        metrics=SeederMetrics(node.metrics.registry),
        registries=app[ALLOWLIST],
    )
    app[WORKER] = worker
    task = asyncio.create_task(worker.run(), name="seeder-work")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
