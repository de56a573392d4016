"""The tracker's app factory: routes, shared state, the sweeper task, the error middleware.

The HTTP API (JSON unless said; errors are ``{"error": ...}`` with a 4xx; a bad digest is the
OCI ``DIGEST_INVALID`` error JSON):

====== ================================ ==========================================================
GET    /announce                        BitTorrent announce (BEP 3/23/7): bencoded, compact peers
GET    /scrape                          BitTorrent scrape (BEP 48): complete/incomplete/downloaded
PUT    /v1/metainfo/{digest}?node=ID    body: .torrent named by the digest -> 201 new, 200 same,
                                        409 another torrent won; ``{digest, info_hash, publisher}``
GET    /v1/metainfo/{digest}?wait=S     the .torrent (``X-Info-Hash``); 404 ``{holder}`` when
                                        unknown; ``wait`` long-polls until published or released
POST   /v1/holdings                     ``{node, digests}`` -> ``{unknown}``: re-publish those
POST   /v1/alive                        ``{node, port, ip?, info_hashes, downloading?}`` ->
                                        ``{interval, unknown}``: the node's peers in those swarms
                                        are alive; with ``downloading``, it seeds the others and
                                        joins their swarms; announce the unknown ones again
POST   /v1/left                         the same body and ``stopping?`` (default true): its
                                        peers leave those swarms -> ``{removed}``; the node
                                        stops, or (false) evicted those blobs and goes on
POST   /v1/claims/{digest}              ``{node, role: node|seeder, registry?, repository?}`` ->
                                        ``{fetch, holder, lease_seconds}`` or ``{published}``
POST   /v1/claims/{digest}/renew        ``{node}`` -> 200 lease extended, 409 not the holder
DELETE /v1/claims/{digest}?node=ID      the holder gives up -> 204 (waiters are woken)
POST   /v1/seeders                      ``{node}`` heartbeat -> ``{ttl_seconds}``
GET    /v1/seeders/work?node=ID&wait=S  -> ``{work: [{digest, registry, repository}]}``
GET    /healthz, /metrics               liveness; Prometheus text
POST   /v1/jobs, GET /v1/jobs[/{id}]    prewarm jobs (see ``jobs``); nodes poll /v1/nodes/jobs
                                        and report to POST /v1/jobs/{id}/progress
POST   /v1/pulls, GET /v1/hot           pull reports and the hot-layer list (see ``hot``)
====== ================================ ==========================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CollectorRegistry

from imgaccel.p2p.certs import Validity, log_validity
from imgaccel.tracker import announce, claims, hot, jobs, metainfo, metrics, seeders
from imgaccel.tracker.api import error_middleware
from imgaccel.tracker.config import TrackerSettings
from imgaccel.tracker.state import STATE, Clock, TrackerState
from imgaccel.tracker.store import Store
from imgaccel.tracker.swarm import Swarms

log = logging.getLogger(__name__)


def make_app(settings: TrackerSettings, *, clock: Clock = time.time) -> web.Application:
    """The tracker as an aiohttp app; its SQLite state is opened now and closed at cleanup."""
    app = web.Application(
        middlewares=[error_middleware], client_max_size=metainfo.MAX_TORRENT_BYTES
    )
    app[STATE] = _make_state(settings, clock)
    for module in (announce, metainfo, claims, seeders, metrics, jobs, hot):
        module.add_routes(app)
    app.cleanup_ctx.append(_lifecycle)
    app.on_shutdown.append(_wake_long_polls)
    return app


def _make_state(settings: TrackerSettings, clock: Clock) -> TrackerState:
    store = Store.open(settings.data_dir)
    swarms = Swarms(settings.peer_ttl)
    for info_hash, peer in store.load_peers():
        swarms.update(info_hash, peer)
    for info_hash, downloaded in store.load_downloaded():
        swarms.completed(info_hash, downloaded)
    registry = CollectorRegistry()
    state = TrackerState(
        settings,
        clock,
        store,
        swarms,
        registry,
        metrics.announce_counter(registry),
        cluster_ca_der=cluster_ca_der(settings),
    )
    registry.register(metrics.StateCollector(state))
    metrics.certificate_expiry(registry, _certificates(settings))
    return state


def _certificates(settings: TrackerSettings) -> dict[str, Validity]:
    """The TLS tracker's certificate and CA, logged (see :func:`log_validity`)."""
    found: dict[str, Validity] = {}
    for cert, path in (("tracker", settings.cert), ("ca", settings.ca_cert)):
        validity = None if path is None else log_validity(cert, path, path.read_bytes())
        if validity is not None:
            found[cert] = validity
    return found


def cluster_ca_der(settings: TrackerSettings) -> bytes | None:
    """The cluster CA certificate (DER) of a TLS tracker; None when insecure."""
    if settings.ca_cert is None:
        return None
    return ssl.PEM_cert_to_DER_cert(settings.ca_cert.read_text())


def sweep(state: TrackerState) -> None:
    """Expire silent peers and lapsed claims (the sweeper runs this; tests call it directly)."""
    gone = state.swarms.expire(state.now())
    state.store.delete_peers(gone)
    lapsed = claims.expire_claims(state)
    if gone or lapsed:
        log.debug("swept %d peers, %d claims", len(gone), lapsed)


async def _sweep_forever(state: TrackerState) -> None:
    settings = state.settings
    period = min(max(min(settings.peer_ttl, settings.claim_lease_seconds) / 4, 0.5), 10.0)
    while True:
        await asyncio.sleep(period)
        try:
            sweep(state)
        except Exception:  # one bad sweep must not end sweeping
            log.exception("sweep failed")


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    task = asyncio.create_task(_sweep_forever(state), name="tracker-sweeper")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        state.store.close()


async def _wake_long_polls(app: web.Application) -> None:
    app[STATE].notifier.notify_all()
