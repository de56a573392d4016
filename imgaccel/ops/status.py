"""``imgaccel status``: the node's ``GET /_imgaccel/status`` as a summary for people."""

from __future__ import annotations

from typing import Any

import aiohttp

from imgaccel.errors import ImgaccelError
from imgaccel.ops.origins import answered
from imgaccel.ops.units import clock, human_bytes

SOURCES = ("origin", "cache", "peer")


class NodeUnreachable(ImgaccelError):
    """The node did not answer ``/_imgaccel/status``."""


async def fetch_status(node_url: str) -> dict[str, Any]:
    """The node's status document; ``NodeUnreachable`` with the reason otherwise."""
    url = f"{node_url.rstrip('/')}/_imgaccel/status"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
            session.get(url) as resp,
        ):
            if resp.status == 403:
                raise NodeUnreachable(
                    f"{url} answered 403: the node answers status only to its admin_networks "
                    "(loopback by default): run this on the node"
                )
            if resp.status != 200:
                raise NodeUnreachable(f"{url} answered {resp.status} (an older node?)")
            answer = await resp.json()
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise NodeUnreachable(f"cannot reach the node at {node_url}: {exc}") from None
    if not isinstance(answer, dict):
        raise NodeUnreachable(f"{url} did not answer with a status document")
    return answer


def render(status: dict[str, Any], node_url: str, recent: int = 10) -> str:
    """A few lines: the node, its cache, bytes by source, peer-to-peer, the latest serves."""
    return "\n".join(
        [
            f"node     {node_url} (imgaccel {status.get('version', '?')})",
            _cache(status["cache"]),
            _served(status["served"], status["origin_bytes_saved"]),
            _p2p(status.get("p2p")),
            *_origins(status.get("origins", {})),
            *_recent(status.get("recent", [])[:recent]),
        ]
    )


def _cache(cache: dict[str, Any]) -> str:
    quota = cache["quota_bytes"]
    share = f" of {human_bytes(quota)} quota ({cache['bytes'] / quota:.0%})" if quota else ""
    shared = cache.get("shared_bytes", 0)  # a node of an earlier version does not say
    once = f"; {human_bytes(shared)} of it kept once with containerd's copies" if shared else ""
    return (
        f"cache    {human_bytes(cache['bytes'])}{share} in {cache['blobs']} blobs, "
        f"{cache['dir']}{once}"
    )


def _served(served: dict[str, int], saved: int) -> str:
    total = sum(served.get(s, 0) for s in SOURCES)
    by_source = ", ".join(f"{s} {human_bytes(served.get(s, 0))}" for s in SOURCES)
    share = f" ({saved / total:.0%})" if total else ""
    return f"served   {by_source}; not from the origin: {human_bytes(saved)}{share}"


def _p2p(p2p: dict[str, Any] | None) -> str:
    if not p2p:
        return "p2p      off (no tracker configured)"
    line = (
        f"p2p      node {p2p['node_id']} at {p2p['tracker']}: {p2p['peers']} peers, "
        f"up {human_bytes(p2p['uploaded_bytes'])}, down {human_bytes(p2p['downloaded_bytes'])}"
    )
    if "torrents" in p2p:  # from an older node: not reported
        count = p2p["torrents"]
        line += f", {count} torrent{'' if count == 1 else 's'}"
        if not p2p.get("cache_seeded", True):
            line += " (still seeding the cache, since the start)"
    if failing := p2p.get("tracker_failing"):
        line += (
            f"\n  tracker FAILING since {clock(failing['since'])}: {failing['reason']} (after 3 "
            "minutes peers are no longer sent to this node)"
        )
    return line


def _origins(origins: dict[str, dict[str, Any]]) -> list[str]:
    if not origins:
        return ["origins  no origin request since the node started"]
    lines = ["origins  as the node last heard from them:"]
    for registry, state in origins.items():
        if state["up"]:
            line = answered(state)
        else:
            line = f"FAILING since {clock(state['last_failure'])}: {state['failure']}"
        lines.append(f"  {registry:<24}  {line}")
    return lines


def _recent(serves: list[dict[str, Any]]) -> list[str]:
    if not serves:
        return ["recent   no blobs served since the node started"]
    lines = ["recent   blobs served, newest first:"]
    for serve in serves:
        digest = str(serve["digest"])
        lines.append(
            f"  {clock(serve['when'])}  {digest[:19]}…  {human_bytes(serve['bytes']):>9}  "
            f"{serve['source']:<6}  {serve['seconds']:.2f}s"
        )
    return lines
