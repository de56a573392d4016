"""The metainfo registry: which torrent serves which blob digest.

A node that has verified a blob publishes its .torrent (``PUT /v1/metainfo/{digest}``); others
fetch it (``GET``, with ``?wait=`` to long-poll while another node fetches the blob). After a
tracker restart with lost state, nodes learn what to re-publish from ``POST /v1/holdings``.
"""

from __future__ import annotations

import hashlib
import logging
import ssl

from aiohttp import web

from imgaccel import bencode
from imgaccel.oci.digest import Digest
from imgaccel.tracker.api import ApiError, digest_param, json_body, node_field, wait_param
from imgaccel.tracker.state import STATE, TrackerState
from imgaccel.tracker.store import Published

log = logging.getLogger(__name__)

TORRENT_TYPE = "application/x-bittorrent"
MAX_TORRENT_BYTES = 8 << 20


def metainfo_key(digest: str) -> str:
    """The notifier key woken when ``digest`` is published or its claim ends."""
    return f"metainfo:{digest}"


def check_torrent(data: bytes, digest: str, cluster_ca_der: bytes | None = None) -> bytes:
    """Check that ``data`` is a .torrent for ``digest``; its v1 info-hash, or ApiError 400.

    The info dictionary's ``name`` must name the digest: ``sha256:HEX``, ``sha256-HEX`` (the
    engine's file name) or the bare ``HEX``. With ``cluster_ca_der`` (a TLS tracker) it must be
    an SSL torrent of this cluster: its ``ssl-cert`` is the cluster CA. Any other torrent's
    peers would announce without a client certificate and be refused, a swarm that never forms.
    """
    try:
        torrent = bencode.decode(data)
        info_raw = bencode.raw_value(data, b"info")
    except bencode.BencodeError as exc:
        raise ApiError(400, f"not a torrent: {exc}") from None
    info = torrent.get(b"info") if isinstance(torrent, dict) else None
    if not isinstance(info, dict) or not isinstance(info.get(b"name"), bytes):
        raise ApiError(400, "not a torrent: no info dictionary with a name")
    parsed = Digest.parse(digest)
    names = (str(parsed), f"{parsed.algorithm}-{parsed.hex}", parsed.hex)
    if info[b"name"] not in {name.encode() for name in names}:
        raise ApiError(400, "the torrent's name is not the digest", name=repr(info[b"name"])[:200])
    if cluster_ca_der is not None and _cert_der(info.get(b"ssl-cert")) != cluster_ca_der:
        raise ApiError(400, "not an SSL torrent of this cluster: ssl-cert is not the cluster CA")
    return hashlib.sha1(info_raw).digest()


def _cert_der(pem: object) -> bytes | None:
    if not isinstance(pem, bytes):
        return None
    try:
        return ssl.PEM_cert_to_DER_cert(pem.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None


def publish(state: TrackerState, digest: str, published: Published) -> tuple[int, Published]:
    """Record metainfo; (201 new | 200 same | 409 a different torrent won, the stored one)."""
    existing = state.store.put_metainfo(digest, published, state.now())
    if existing is not None:
        return (200 if existing.info_hash == published.info_hash else 409), existing
    state.store.delete_claim(digest)
    state.seeder_declined.pop(digest, None)
    state.notifier.notify(metainfo_key(digest))
    log.info(
        "published %s (info-hash %s) by %s", digest, published.info_hash.hex(), published.publisher
    )
    return 201, published


async def handle_put(request: web.Request) -> web.Response:
    digest = digest_param(request)
    data = await request.read()
    info_hash = check_torrent(data, digest, request.app[STATE].cluster_ca_der)
    publisher = request.query.get("node") or request.remote or "unknown"
    if len(publisher) > 256:
        raise ApiError(400, "?node= must be at most 256 characters")
    status, stored = publish(request.app[STATE], digest, Published(data, info_hash, publisher))
    return web.json_response(
        {"digest": digest, "info_hash": stored.info_hash.hex(), "publisher": stored.publisher},
        status=status,
    )


async def handle_get(request: web.Request) -> web.Response:
    state = request.app[STATE]
    digest = digest_param(request)
    wait = wait_param(request, state.settings.max_wait_seconds)
    found = state.store.get_metainfo(digest)
    if found is None and wait > 0:
        await state.notifier.wait(metainfo_key(digest), wait)
        found = state.store.get_metainfo(digest)
    if found is None:
        claim = state.store.get_claim(digest)
        raise ApiError(
            404,
            "no metainfo for this digest",
            digest=digest,
            holder=claim.holder if claim is not None else None,
        )
    return web.Response(
        body=found.torrent,
        content_type=TORRENT_TYPE,
        headers={"X-Info-Hash": found.info_hash.hex()},
    )


async def handle_holdings(request: web.Request) -> web.Response:
    """``{node, digests}`` -> ``{unknown: [...]}``: the digests the node should re-publish."""
    state = request.app[STATE]
    body = await json_body(request)
    node_field(body)  # checked, as on every call, though the answer does not depend on it
    raw = body.get("digests")
    if not isinstance(raw, list) or not all(isinstance(d, str) for d in raw):
        raise ApiError(400, "'digests' must be a list of digests")
    digests = [str(Digest.parse(d)) for d in raw]
    known = state.store.known_digests(digests)
    return web.json_response({"unknown": [d for d in digests if d not in known]})


def add_routes(app: web.Application) -> None:
    app.router.add_put("/v1/metainfo/{digest}", handle_put)
    app.router.add_get("/v1/metainfo/{digest}", handle_get)
    app.router.add_post("/v1/holdings", handle_holdings)
