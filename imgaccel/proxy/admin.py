"""The node's cache admin API under ``/_imgaccel/`` (used by ``imgaccel cache`` and
``imgaccel prewarm``).

====== ============================ ==========================================================
GET    /_imgaccel/cache             ``{used_bytes, quota_bytes, blobs: [{digest, size,
                                    last_access, pinned_until, reason}]}``, LRU first
POST   /_imgaccel/pins              ``{digests, seconds, reason, sizes?}`` -> ``{pinned,
                                    missing, not_kept}`` (missing: not in the cache, e.g. the
                                    quota could not keep it; not_kept: ``{digest: {reason,
                                    message}}`` for a missing blob whose size ``sizes`` gave
                                    that the cache could not keep now, reason ``quota``,
                                    ``too_big`` (over the whole quota) or ``disk``, the floor
                                    of ``cache.min_free_percent``)
DELETE /_imgaccel/pins/{digest}     -> 204
POST   /_imgaccel/gc                ``{target_bytes?}`` (default: the quota) -> ``{removed,
                                    used_bytes}``: expired pins dropped, then least recently used
                                    unpinned blobs deleted down to the target (with no quota and
                                    no target, none: "no quota" is not "a quota of 0 bytes")
POST   /_imgaccel/rescan            -> ``{indexed, indexed_bytes, evicted, used_bytes,
                                    quota_bytes, cache_dir, sharing}``: index the blobs another
                                    process committed to the cache (``imgaccel snapshot
                                    import``), and evict down to the quota as a fill would;
                                    with peer-to-peer on, seed and publish the ones indexed
                                    (``sharing`` of them, read in the background)
====== ============================ ==========================================================

The routes are fixed paths beside ``/v2/`` (no registry name can reach them: names are
validated) and every digest is parsed as a :class:`Digest` before it names a file. They go
through the same error middleware as the registry API: bad input is a 4xx, never a traceback.
Every route here, the listing too, and ``GET /_imgaccel/status`` answer only ``admin_networks``
(loopback by default), so a node whose mirror listens on the network neither lets the network
edit its cache nor tells it which (private) images the node holds and runs.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import math
from typing import Any

from aiohttp import web

from imgaccel.cache import pins
from imgaccel.cache.store import BlobStore
from imgaccel.errors import Denied, RegistryError, not_kept_reason
from imgaccel.oci.digest import Digest
from imgaccel.proxy.state import NODE

_MAX_DIGESTS = 10_000
_MAX_PIN_SECONDS = 366 * 86400.0


class AdminInvalid(RegistryError):
    status = 400
    code = "INVALID_REQUEST"


async def cache_listing(request: web.Request) -> web.Response:
    require_admin(request, "reading the cache listing")
    node = request.app[NODE]
    store, pinned = node.store, pins.pins(node.store, node.meta)
    blobs = []
    for digest, entry in store.entries():
        pin = pinned.get(digest)
        blobs.append(
            {
                "digest": str(digest),
                "size": entry.size,
                "last_access": entry.last_access,
                "pinned_until": store.pinned_until(digest),
                "reason": pin.reason if pin else None,
                "reasons": list(pin.reasons) if pin else [],
            }
        )
    return web.json_response(
        {"used_bytes": store.used_bytes, "quota_bytes": store.quota_bytes, "blobs": blobs}
    )


def require_admin(request: web.Request, action: str = "changing the cache") -> None:
    """Denied unless the client is in ``admin_networks`` (loopback by default)."""
    try:
        client = ipaddress.ip_address((request.remote or "").split("%")[0])
    except ValueError:
        client = None
    networks = request.app[NODE].settings.admin_networks
    if client is None or not any(client in network for network in networks):
        raise Denied(
            f"{action} is allowed only from {', '.join(map(str, networks))}",
            detail={"client": request.remote},
        )


async def pin_blobs(request: web.Request) -> web.Response:
    require_admin(request)
    node = request.app[NODE]
    body = await _body(request)
    digests = body.get("digests")
    if not isinstance(digests, list) or len(digests) > _MAX_DIGESTS:
        raise AdminInvalid(f"'digests' must be a list of at most {_MAX_DIGESTS} digests")
    seconds = body.get("seconds")
    if (
        isinstance(seconds, bool)  # an int to Python, not a number to the client
        or not isinstance(seconds, int | float)
        or not 0 <= seconds <= _MAX_PIN_SECONDS
    ):
        raise AdminInvalid(f"'seconds' must be a number from 0 to {_MAX_PIN_SECONDS:.0f}")
    reason = str(body.get("reason") or "manual")[:64]
    sizes = _sizes(body.get("sizes", {}))
    parsed = [Digest.parse(str(d)) for d in digests]
    pinned = [d for d in parsed if pins.pin(node.store, node.meta, d, float(seconds), reason)]
    missing = [str(d) for d in parsed if d not in pinned]
    not_kept = {d: why for d in missing if (why := _not_kept(node.store, sizes.get(d)))}
    return web.json_response(
        {"pinned": [str(d) for d in pinned], "missing": missing, "not_kept": not_kept}
    )


def _sizes(sizes: object) -> dict[str, int]:
    """The optional ``sizes`` of a pin request: the blobs' sizes by digest, as the client's
    manifests give them."""
    if (
        not isinstance(sizes, dict)
        or len(sizes) > _MAX_DIGESTS
        or any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in sizes.values())
    ):
        raise AdminInvalid("'sizes' must map digests to their sizes in bytes")
    return sizes


def _not_kept(store: BlobStore, size: int | None) -> dict[str, str] | None:
    """Why the cache could not keep a blob of ``size`` bytes now: the quota or the disk."""
    why = None if size is None else store.refusal(size)
    if why is None:
        return None
    return {"reason": not_kept_reason(why), "message": str(why)}


async def unpin_blob(request: web.Request) -> web.Response:
    require_admin(request)
    node = request.app[NODE]
    # ?reason=R drops that reason's pin only; without it every pin of the blob goes.
    reason = request.query.get("reason")
    pins.unpin(node.store, node.meta, Digest.parse(request.match_info["digest"]), reason)
    return web.Response(status=204)


async def collect_garbage(request: web.Request) -> web.Response:
    require_admin(request)
    node = request.app[NODE]
    body = await _body(request) if request.can_read_body else {}
    target = body.get("target_bytes")
    if target is None and not node.store.quota_bytes:
        # No target and no quota ("0: none"), so no limit to delete down to: a target of
        # 0 bytes would delete every unpinned blob. Expired pins go, as in collect().
        pins.load_pins(node.store, node.meta)
        return web.json_response({"removed": [], "used_bytes": node.store.used_bytes})
    if target is None:
        target = node.store.quota_bytes
    if isinstance(target, bool) or not isinstance(target, int) or target < 0:
        raise AdminInvalid("'target_bytes' must be a non-negative integer")
    removed = pins.collect(node.store, node.meta, target)
    return web.json_response(
        {"removed": [str(d) for d in removed], "used_bytes": node.store.used_bytes}
    )


async def rescan(request: web.Request) -> web.Response:
    """Index what a snapshot import (another process) committed to this node's cache, so it is
    served and counted against the quota (a miss indexes one such blob by itself, but only the
    quota's count makes eviction see them all), and offer them to peers as fetched ones are.
    A fill running here indexes its own blob."""
    require_admin(request)
    node = request.app[NODE]
    store = node.store
    found = await asyncio.to_thread(store.on_disk)  # a listing of every blob: off the loop
    evictions = store.evictions
    indexed = store.rescan(found, busy=node.fetcher.fills)
    peers = node.fetcher.peers
    return web.json_response(
        {
            "indexed": [str(d) for d in indexed],
            "indexed_bytes": sum(indexed.values()),
            "evicted": store.evictions - evictions,
            "used_bytes": store.used_bytes,
            "quota_bytes": store.quota_bytes,
            "cache_dir": str(store.root.absolute()),  # the importer compares it with its own
            "sharing": peers.share(indexed) if peers is not None else 0,
        }
    )


async def _body(request: web.Request) -> dict[str, Any]:
    # Not request.json(): a declared charset Python does not know makes it raise
    # LookupError, which no handler expects (a 500).
    data = await request.read()
    try:
        body = json.loads(data.decode(request.charset or "utf-8"))
    except (ValueError, LookupError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise AdminInvalid("the body is not JSON (in UTF-8 or its declared charset)") from None
    if not isinstance(body, dict) or any(
        isinstance(v, float) and not math.isfinite(v) for v in body.values()
    ):
        raise AdminInvalid("the body must be a JSON object")
    return body


def add_routes(app: web.Application) -> None:
    app.router.add_get("/_imgaccel/cache", cache_listing)
    app.router.add_post("/_imgaccel/pins", pin_blobs)
    app.router.add_delete("/_imgaccel/pins/{digest}", unpin_blob)
    app.router.add_post("/_imgaccel/gc", collect_garbage)
    app.router.add_post("/_imgaccel/rescan", rescan)
