"""Seeders: nodes that fetch cold blobs from the origin for the cluster.

A seeder heartbeats (``POST /v1/seeders`` ``{"node"}``) and long-polls its queue
(``GET /v1/seeders/work?node=ID&wait=S`` -> ``{"work": [{digest, registry, repository}]}``;
polling counts as a heartbeat). For each item it claims the digest (``role: seeder``; the
claim is already its own), fetches, verifies and publishes the metainfo, renewing meanwhile.
"""

from __future__ import annotations

from aiohttp import web

from imgaccel.tracker.api import ApiError, json_body, node_field, wait_param
from imgaccel.tracker.claims import work_key
from imgaccel.tracker.state import STATE
from imgaccel.tracker.store import WorkItem


def _items(items: list[WorkItem]) -> list[dict[str, str]]:
    return [{"digest": i.digest, "registry": i.registry, "repository": i.repository} for i in items]


async def handle_heartbeat(request: web.Request) -> web.Response:
    state = request.app[STATE]
    node = node_field(await json_body(request))
    state.store.seeder_heartbeat(node, state.now())
    return web.json_response({"ttl_seconds": state.settings.seeder_ttl})


async def handle_work(request: web.Request) -> web.Response:
    state = request.app[STATE]
    node = request.query.get("node", "")
    if not node or len(node) > 256:
        raise ApiError(400, "?node= must name the seeder")
    # Polling is the heartbeat: answer well within the TTL so the seeder stays alive.
    wait = wait_param(request, min(state.settings.max_wait_seconds, state.settings.seeder_ttl / 2))
    state.store.seeder_heartbeat(node, state.now())
    items = state.store.take_work(node)
    if not items and wait > 0:
        await state.notifier.wait(work_key(node), wait)
        if request.transport is None or request.transport.is_closing():
            # The seeder went away (restarted) while this poll waited: taking its work now
            # would hand it to nobody, and the nodes waiting on its claim would idle for the
            # lease. The work stays queued for its next poll.
            return web.json_response({"work": []})
        state.store.seeder_heartbeat(node, state.now())
        items = state.store.take_work(node)
    return web.json_response({"work": _items(items)})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/seeders", handle_heartbeat)
    app.router.add_get("/v1/seeders/work", handle_work)
