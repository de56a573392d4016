"""The BitTorrent HTTP tracker protocol: ``GET /announce`` and ``GET /scrape`` (BEP 3, 23, 7, 48).

``info_hash`` and ``peer_id`` are raw bytes, percent-encoded; the query string is parsed here as
bytes because aiohttp would decode it as UTF-8. Bad input gets HTTP 200 with a bencoded
``failure reason``, as BitTorrent clients expect, never a 5xx. (Unencoded non-ASCII bytes in the
request line never get here: aiohttp's parser answers 400 itself, and no real client sends them.)
"""

from __future__ import annotations

import ipaddress
import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

from aiohttp import web

from imgaccel import bencode
from imgaccel.tracker.api import ApiError, json_body, node_field
from imgaccel.tracker.state import STATE, TrackerState
from imgaccel.tracker.store import MAX_INT64
from imgaccel.tracker.swarm import Address, IPAddress, Peer, compact, normalize_ip

log = logging.getLogger(__name__)

EVENTS = frozenset({"", "started", "completed", "stopped", "paused"})


class AnnounceError(ValueError):
    """An announce or scrape the tracker cannot accept; its text is the failure reason."""


@dataclass(frozen=True, slots=True)
class AnnounceRequest:
    """One validated announce."""

    info_hash: bytes
    peer_id: bytes
    port: int
    left: int
    event: str
    numwant: int | None
    compact: bool
    no_peer_id: bool
    ip: IPAddress | None


def parse_query(raw: str) -> dict[str, list[bytes]]:
    """A raw query string -> name -> values, values as bytes (``+`` is kept: see module doc)."""
    params: dict[str, list[bytes]] = defaultdict(list)
    for part in raw.split("&"):
        name, _, value = part.partition("=")
        if name:
            params[unquote_to_bytes(name).decode("latin-1")].append(unquote_to_bytes(value))
    return params


def _one(params: dict[str, list[bytes]], name: str, default: bytes | None = None) -> bytes:
    values = params.get(name)
    if not values:
        if default is None:
            raise AnnounceError(f"missing {name}")
        return default
    return values[0]


def _int(params: dict[str, list[bytes]], name: str, default: int | None = None) -> int:
    """A non-negative integer below 2**63: SQLite cannot store a bigger one (OverflowError)."""
    raw = _one(params, name, None if default is None else str(default).encode())
    if not raw.isdigit() or len(raw) > 19 or int(raw) > MAX_INT64:
        raise AnnounceError(f"{name} must be a non-negative integer below 2**63")
    return int(raw)


def _hash(raw: bytes, name: str) -> bytes:
    if len(raw) != 20:
        raise AnnounceError(f"{name} must be 20 bytes, got {len(raw)}")
    return raw


def parse_announce(params: dict[str, list[bytes]]) -> AnnounceRequest:
    """Validate an announce's parameters; :class:`AnnounceError` says what is wrong."""
    info_hash = _hash(_one(params, "info_hash"), "info_hash")
    peer_id = _hash(_one(params, "peer_id"), "peer_id")
    port = _int(params, "port")
    if not 0 < port < 65536:
        raise AnnounceError("port out of range")
    left = _int(params, "left")
    for counter in ("uploaded", "downloaded"):
        _int(params, counter, 0)
    event = _one(params, "event", b"").decode("latin-1")
    if event not in EVENTS:
        raise AnnounceError(f"unknown event {event[:20]!r}")
    return AnnounceRequest(
        info_hash=info_hash,
        peer_id=peer_id,
        port=port,
        left=left,
        event=event,
        numwant=_int(params, "numwant") if "numwant" in params else None,
        compact=_one(params, "compact", b"1") != b"0",
        no_peer_id=_one(params, "no_peer_id", b"0") == b"1",
        ip=_parse_ip(params["ip"][0]) if params.get("ip") else None,
    )


def _parse_ip(raw: bytes) -> IPAddress:
    try:
        return normalize_ip(ipaddress.ip_address(raw.decode("ascii")))
    except (UnicodeDecodeError, ValueError):
        raise AnnounceError("ip is not an IP address") from None


def announce(state: TrackerState, req: AnnounceRequest, ip: IPAddress) -> dict[str, object]:
    """Apply ``req`` to the swarms and the store; the bencodable reply."""
    now, settings = state.now(), state.settings
    if req.event == "stopped":
        state.swarms.remove(req.info_hash, req.peer_id)
        state.store.delete_peers([(req.info_hash, req.peer_id)])
    else:
        peer = Peer(req.peer_id, ip, req.port, req.left, now)
        state.store.save_peer(req.info_hash, peer)  # first: if it fails, memory is untouched
        if replaced := state.swarms.update(req.info_hash, peer):
            state.store.delete_peers([(req.info_hash, old) for old in replaced])
    if req.event == "completed":
        state.swarms.completed(req.info_hash)
        state.store.add_downloaded(req.info_hash)
    state.announces.labels(event=req.event or "none").inc()
    numwant = min(
        settings.numwant_default if req.numwant is None else req.numwant, settings.numwant_max
    )
    wanted = 0 if req.event == "stopped" else numwant
    peers = state.swarms.select(req.info_hash, req.peer_id, wanted, now)
    complete, incomplete, _ = state.swarms.stats(req.info_hash, now)
    seed = req.left == 0 and state.swarms.refreshes((ip, req.port), now)
    reply: dict[str, object] = {
        "interval": settings.seed_announce_interval if seed else settings.announce_interval,
        "min interval": settings.min_announce_interval,
        "complete": complete,
        "incomplete": incomplete,
    }
    return reply | _peer_lists(peers, req)


def _peer_lists(peers: list[Peer], req: AnnounceRequest) -> dict[str, object]:
    if req.compact:
        v4, v6 = compact(peers)
        return {"peers": v4, "peers6": v6} if v6 else {"peers": v4}
    listed: list[dict[str, object]] = []
    for peer in peers:
        entry: dict[str, object] = {"ip": str(peer.ip), "port": peer.port}
        if not req.no_peer_id:
            entry["peer id"] = peer.peer_id
        listed.append(entry)
    return {"peers": listed}


def scrape(state: TrackerState, info_hashes: list[bytes]) -> dict[str, object]:
    """The scrape reply for ``info_hashes`` (unknown ones count zero)."""
    files: dict[bytes, object] = {}
    for info_hash in info_hashes:
        complete, incomplete, downloaded = state.swarms.stats(info_hash, state.now())
        files[info_hash] = {
            "complete": complete,
            "incomplete": incomplete,
            "downloaded": downloaded,
        }
    return {"files": files}


def _bencoded(reply: dict[str, object]) -> web.Response:
    return web.Response(body=bencode.encode(reply), content_type="text/plain")


def _failure(request: web.Request, reason: str) -> web.Response:
    log.info("refused %s from %s: %s", request.path, request.remote, reason)
    return _bencoded({"failure reason": reason})


def _raw_query(request: web.Request) -> str:
    return request.raw_path.partition("?")[2]


async def handle_announce(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        req = parse_announce(parse_query(_raw_query(request)))
        return _bencoded(announce(state, req, req.ip or _remote_ip(request)))
    except AnnounceError as exc:
        return _failure(request, str(exc))
    except Exception:  # a BitTorrent client understands a failure reason, not a 500
        log.exception("announce failed")
        return _failure(request, "internal tracker error")


async def handle_scrape(request: web.Request) -> web.Response:
    hashes = parse_query(_raw_query(request)).get("info_hash", [])
    try:
        return _bencoded(scrape(request.app[STATE], [_hash(raw, "info_hash") for raw in hashes]))
    except AnnounceError as exc:
        return _failure(request, str(exc))


async def handle_alive(request: web.Request) -> web.Response:
    """``{node, port, ip?, info_hashes, downloading?}``: the node whose peers listen at ``ip``
    (else the caller's address) and ``port`` still holds the torrents of ``info_hashes`` (hex):
    its peers in them are heard from now. With ``downloading`` (those of ``info_hashes`` it
    holds only in part), it seeds the rest, and joins as a seeding peer the swarms of those it
    has no peer in: a node restarted on thousands of cached blobs makes this one call, not an
    announce per blob. -> ``{interval, unknown}``: call again within ``interval`` seconds;
    announce the ``unknown`` ones again (the tracker lost them: a restart without its data, or
    a peer expired). One call a minute instead of an announce per blob."""
    state = request.app[STATE]
    body = await json_body(request)
    address, hashes = _node_peers(request, body)
    seeds: set[bytes] = set()
    if "downloading" in body:
        downloading = set(_info_hashes(body, "downloading"))
        if not downloading <= set(hashes):
            raise ApiError(400, "'downloading' must name only torrents in 'info_hashes'")
        seeds = set(hashes) - downloading
    done = state.swarms.refresh(address, hashes, state.now(), seeds=seeds)
    state.store.touch_peers(done.refreshed)
    state.store.save_peers(done.joined)
    state.announces.labels(event="alive").inc()
    if done.joined:
        log.info("node %s joined %d swarms as a seed", body["node"], len(done.joined))
    return web.json_response(
        {"interval": state.settings.announce_interval, "unknown": [h.hex() for h in done.unknown]}
    )


async def handle_left(request: web.Request) -> web.Response:
    """The same body as ``/v1/alive``, and ``stopping`` (default true): the node's peers leave
    those swarms now (one call instead of a "stopped" announce per torrent); the node stops,
    unless ``stopping`` is false (it evicted those blobs, and goes on). -> ``{removed}``."""
    state = request.app[STATE]
    body = await json_body(request)
    address, hashes = _node_peers(request, body)
    stopping = body.get("stopping", True)
    if not isinstance(stopping, bool):
        raise ApiError(400, "'stopping' must be true or false")
    gone = state.swarms.leave(address, hashes, stopping=stopping)
    state.store.delete_peers(gone)
    state.announces.labels(event="left").inc()
    return web.json_response({"removed": len(gone)})


def _node_peers(request: web.Request, body: dict[str, Any]) -> tuple[Address, list[bytes]]:
    """The address and info-hashes of an ``/v1/alive`` or ``/v1/left`` body, or a 400."""
    node_field(body)
    port = body.get("port")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ApiError(400, "'port' must be the node's peer-to-peer port, 1-65535")
    raw_ip = body.get("ip")
    if raw_ip is not None and not isinstance(raw_ip, str):
        raise ApiError(400, "'ip' must be an IP address")
    try:
        ip = _parse_ip(raw_ip.encode()) if raw_ip is not None else _remote_ip(request)
    except (AnnounceError, UnicodeEncodeError):
        raise ApiError(400, "'ip' must be an IP address") from None
    return (ip, port), _info_hashes(body, "info_hashes")


def _info_hashes(body: dict[str, Any], name: str) -> list[bytes]:
    hashes = body.get(name)
    if not isinstance(hashes, list) or not all(_is_hex_hash(h) for h in hashes):
        raise ApiError(400, f"'{name}' must be a list of 40-character hex info-hashes")
    return [bytes.fromhex(h) for h in hashes]


def _is_hex_hash(value: object) -> bool:
    return (
        isinstance(value, str)
        and len(value) == 40
        and all(c in "0123456789abcdefABCDEF" for c in value)
    )


def _remote_ip(request: web.Request) -> IPAddress:
    if request.remote is None:
        raise AnnounceError("cannot tell the peer's address; send ip=")
    return _parse_ip(request.remote.encode())


def add_routes(app: web.Application) -> None:
    app.router.add_get("/announce", handle_announce)
    app.router.add_get("/scrape", handle_scrape)
    app.router.add_post("/v1/alive", handle_alive)
    app.router.add_post("/v1/left", handle_left)
