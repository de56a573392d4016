"""``GET /_imgaccel/status``: what ``imgaccel status`` shows, as JSON.

Outside ``/v2/`` on purpose: no registry client asks for it. It needs no credentials and names
no repository, but the digests it lists tell which images run here, and it names the node's
directories: like the cache listing it answers only ``admin_networks`` (loopback by default;
``imgaccel status`` runs on the node). ``/healthz`` and ``/metrics`` stay open. Shape::

    {"version",
     "cache": {"dir", "bytes", "blobs", "quota_bytes", "shared_bytes"},
     "served": {"cache": B, "peer": B, "origin": B}, "origin_bytes_saved": B,
     "p2p": null | {"tracker", "certs_dir", "node_id", "peers",
                    "uploaded_bytes", "downloaded_bytes", "torrents", "cache_seeded",
                    "tracker_answered": null | T, "tracker_failing": null | {"since", "reason"}},
     "origins": {REGISTRY: {"up", "last_answer", "last_failure", "failure", "failures"}},
     "recent": [{"digest", "source", "bytes", "seconds", "when"}, ...]}   # newest first
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from imgaccel import __version__
from imgaccel.proxy.admin import require_admin
from imgaccel.proxy.state import NODE, Node

SOURCES = ("cache", "peer", "origin")


async def status(request: web.Request) -> web.Response:
    require_admin(request, "reading the node's status")
    node = request.app[NODE]
    return web.json_response(
        {
            "version": __version__,
            "cache": _cache(node),
            "served": {
                source: _sample(node, "imgaccel_bytes_served_total", source) for source in SOURCES
            },
            "origin_bytes_saved": _sample(node, "imgaccel_origin_bytes_saved_total"),
            "p2p": await _p2p(node),
            "origins": node.origins.as_json(),
            "recent": [serve.as_json() for serve in node.recent.newest_first()],
        }
    )


def _cache(node: Node) -> dict[str, Any]:
    return {
        "dir": str(node.settings.cache.dir),
        "bytes": node.store.used_bytes,
        "blobs": len(node.store),
        "quota_bytes": node.store.quota_bytes,
        # Kept once on disk with containerd's copy (imgaccel.cache.containerd), at the last look.
        "shared_bytes": _sample(node, "imgaccel_cache_shared_bytes"),
    }


def _sample(node: Node, name: str, source: str | None = None) -> int:
    labels = {"source": source} if source else None
    return int(node.metrics.registry.get_sample_value(name, labels) or 0)


async def _p2p(node: Node) -> dict[str, Any] | None:
    peers = node.fetcher.peers
    if peers is None or peers.swarm is None:
        return None
    stats = await peers.swarm.stats()
    return {
        "tracker": peers.tracker_url,
        "certs_dir": str(peers.settings.certs_dir),
        "node_id": peers.node_id,
        "peers": stats.peers,
        "uploaded_bytes": stats.total_uploaded,
        "downloaded_bytes": stats.total_downloaded,
        "torrents": len(peers.swarm),
        "cache_seeded": peers.reseeded.is_set(),  # false while a restarted node re-seeds it
        "tracker_answered": peers.tracker_answered,
        "tracker_failing": _failing(peers.tracker_failing),
    }


def _failing(failing: tuple[float, str] | None) -> dict[str, Any] | None:
    return None if failing is None else {"since": failing[0], "reason": failing[1]}
