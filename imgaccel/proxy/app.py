"""``make_app(settings)``: the node's registry mirror as an aiohttp application."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from imgaccel import __version__
from imgaccel.cache.containerd import ContainerdSharing
from imgaccel.cache.meta import MetaStore
from imgaccel.cache.pins import load_pins
from imgaccel.cache.store import BlobStore
from imgaccel.errors import Unauthorized
from imgaccel.proxy import admin
from imgaccel.proxy.access import AccessGuard
from imgaccel.proxy.blobs import blob
from imgaccel.proxy.errors import registry_errors
from imgaccel.proxy.fetcher import BlobFetcher
from imgaccel.proxy.manifests import manifest
from imgaccel.proxy.metrics import NodeMetrics
from imgaccel.proxy.monitoring import metrics_listener
from imgaccel.proxy.origins import OriginHealth
from imgaccel.proxy.peers import PeerNetwork
from imgaccel.proxy.prefetch import Prefetcher
from imgaccel.proxy.pulls import RECORDER, PullRecorder, record_pulls
from imgaccel.proxy.state import NODE, Node
from imgaccel.proxy.status import status
from imgaccel.proxy.tags import tags_list
from imgaccel.proxy.target import ALLOWLIST, RegistryAllowlist, client_auth, default_registry
from imgaccel.settings import Settings
from imgaccel.upstream.client import UpstreamClient
from imgaccel.upstream.proxy import Environment, Proxies
from imgaccel.upstream.tls import OriginTLS

log = logging.getLogger(__name__)

_NAME = r"{name:[^?#]+}"


async def api_version(request: web.Request) -> web.Response:
    """The version check, with the default registry's challenge for a client without credentials
    (on a ``registry_listen`` listener, that listener's registry).

    Clients such as skopeo and dockerd decide here whether to authenticate at all: a bare 200
    means they never send credentials, and private images cannot be read through the mirror.
    A default registry that ``registries`` does not allow is not asked: a bare 200.
    """
    headers = {"Docker-Distribution-API-Version": "registry/2.0"}
    node = request.app[NODE]
    default = default_registry(request, node.settings)
    if client_auth(request) is None and request.app[ALLOWLIST].allows(default):
        challenge = await node.client.challenge(default)
        if challenge is not None:
            raise Unauthorized("authentication required", headers={"WWW-Authenticate": challenge})
    return web.json_response({}, headers=headers)


async def healthz(request: web.Request) -> web.Response:
    node = request.app[NODE]
    return web.json_response(
        {
            "status": "ok",
            "version": __version__,
            "cache_bytes": node.store.used_bytes,
            "cache_blobs": len(node.store),
        }
    )


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[NODE].metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def make_app(settings: Settings) -> web.Application:
    """The node app; its store, metadata, HTTP client and fetcher live in ``cleanup_ctx``.
    Raises ConfigError for an upstream's TLS file that cannot be read or used."""
    app = web.Application(middlewares=[registry_errors, record_pulls], client_max_size=1024)
    app[ALLOWLIST] = RegistryAllowlist(settings)
    app[ALLOWLIST].warn_unused_settings()
    tls = OriginTLS.load(settings.upstreams)  # now, so that a bad file stops the start
    proxies = _proxies(settings)
    if settings.p2p.tracker_url and settings.prefetch.enabled:
        app[RECORDER] = PullRecorder()
    app.cleanup_ctx.append(_node_context(settings, tls, proxies))
    app.router.add_get("/v2/", api_version)
    app.router.add_get(f"/v2/{_NAME}/manifests/{{reference}}", manifest)
    app.router.add_get(f"/v2/{_NAME}/blobs/{{digest}}", blob)
    app.router.add_get(f"/v2/{_NAME}/tags/list", tags_list)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/_imgaccel/status", status)
    admin.add_routes(app)
    if settings.metrics_listen:
        routes = {"/healthz": healthz, "/metrics": metrics}
        app.cleanup_ctx.append(metrics_listener(settings.metrics_listen, routes))
    return app


def _proxies(settings: Settings) -> Proxies:
    """Which proxy each origin request goes through, said once in the log. Raises ConfigError
    for a proxy in the environment that cannot be used (only http:// ones can)."""
    environment = None
    if settings.upstream_client.proxy_from_environment:
        environment = Environment.read()
        if (line := environment.describe()) is not None:
            log.info("origins without a proxy setting go through the environment's: %s", line)
    proxies = Proxies(environment)
    for host, upstream in settings.upstreams.items():
        if upstream.proxy is not None:
            shown = proxies.named(upstream) or "none (direct)"
            log.info("origin %s: proxy %s, by its proxy setting", host, shown)
    return proxies


def _node_context(
    settings: Settings, tls: OriginTLS, proxies: Proxies
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            app[NODE] = await _open_node(settings, app[ALLOWLIST], tls, proxies, stack)
            if RECORDER in app:  # prewarm jobs, hot layers, pull reports (needs the tracker)
                prefetcher = Prefetcher(app[NODE], app[RECORDER], app[ALLOWLIST])
                await stack.enter_async_context(prefetcher)
            yield

    return context


async def _open_node(
    settings: Settings,
    allowlist: RegistryAllowlist,
    tls: OriginTLS,
    proxies: Proxies,
    stack: contextlib.AsyncExitStack,
) -> Node:
    """Every part of the node, each closed by ``stack`` in reverse order. The upstream client
    finds origins through ``allowlist``: no path reaches a registry it refuses."""
    root = settings.cache.dir
    root.mkdir(parents=True, exist_ok=True)
    store = BlobStore(
        root, settings.cache.quota_bytes, min_free_percent=settings.cache.min_free_percent
    )
    store.open()
    meta = MetaStore(root / "meta.db")
    stack.callback(meta.close)
    load_pins(store, meta)
    node_metrics = NodeMetrics()
    node_metrics.track_cache(lambda: store.used_bytes, lambda: len(store))
    store.on_evict.append(lambda digest: node_metrics.cache_evictions.inc())
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=256, limit_per_host=64),
        auto_decompress=False,
        # The bytes as stored, which the digests are of: aiohttp would ask for gzip, and some
        # origins and CDNs then compress manifests and blobs, which are not decoded here.
        headers={"User-Agent": f"imgaccel/{__version__}", "Accept-Encoding": "identity"},
    )
    stack.push_async_callback(session.close)
    origins = OriginHealth(node_metrics, settings.upstreams)
    client = UpstreamClient(
        session,
        allowlist.upstream_for,
        settings.upstream_client,
        node_metrics.observe_upstream,
        tls,
        proxies,
        origins.report,
    )
    guard = AccessGuard(meta, client, settings.cache.auth_ttl_seconds)
    fetcher = BlobFetcher(store, guard, client, settings.upstream_client, node_metrics)
    stack.push_async_callback(fetcher.close)
    floor = asyncio.create_task(
        _keep_disk_floor(store, settings.cache.disk_check_seconds), name="disk-floor"
    )
    stack.callback(floor.cancel)
    if settings.p2p.tracker_url:
        peers = await stack.enter_async_context(PeerNetwork(settings.p2p, store, meta))
        node_metrics.track_certificates(peers.identity.validity())
        node_metrics.track_tracker(peers)
        fetcher.peers = peers
        store.on_evict.append(peers.forget)
        task = asyncio.create_task(_p2p_metrics(peers, node_metrics), name="p2p-metrics")
        stack.callback(task.cancel)
    if (content := settings.cache.containerd_content_dir) is not None:
        reopen = fetcher.peers.reopen if fetcher.peers is not None else None
        sharing = ContainerdSharing(store, content, reopen)
        node_metrics.cache_shared_bytes.set_function(lambda: float(sharing.shared_bytes))
        task = asyncio.create_task(
            _share_with_containerd(sharing, settings.cache.containerd_share_seconds),
            name="containerd-sharing",
        )
        stack.push_async_callback(_stop_sharing, task, sharing)
    return Node(settings, store, meta, client, guard, fetcher, node_metrics, origins)


async def _keep_disk_floor(store: BlobStore, every: float) -> None:
    """Give the disk back when something else took it below ``cache.min_free_percent`` between
    fills (a fill checks the floor itself when it starts): see :meth:`BlobStore.keep_floor`."""
    while True:
        await asyncio.sleep(every)
        try:
            count, freed = store.keep_floor()
        except Exception:  # the next look may do better; the node must not stop looking
            log.exception("checking the cache's disk space failed")
            continue
        if count:
            log.warning(
                "the cache's disk had less than cache.min_free_percent (%g%%) free: evicted %d "
                "blobs (%d bytes)",
                store.min_free_percent,
                count,
                freed,
            )


async def _share_with_containerd(sharing: ContainerdSharing, every: float) -> None:
    """Keep once on disk the blobs containerd holds too: see :mod:`imgaccel.cache.containerd`."""
    content = sharing.content_dir
    if not content.is_dir():
        log.info("no containerd content store at %s: nothing shared with it", content)
        return
    if not os.access(content, os.R_OK | os.X_OK):  # containerd's is root's alone
        log.info("cannot read containerd's content store at %s: nothing shared", content)
        return
    log.info("sharing blobs with containerd's content store at %s", content)
    while sharing.off is None:
        try:
            found = await sharing.sweep()
        except Exception:  # the next look may do better; the node must not stop looking
            log.exception("sharing blobs with containerd failed")
        else:
            if found.shared:
                log.info(
                    "%d blobs kept once on disk with containerd's copies (%d bytes shared in all)",
                    found.shared,
                    found.shared_bytes,
                )
        await asyncio.sleep(every)


async def _stop_sharing(task: asyncio.Task[None], sharing: ContainerdSharing) -> None:
    sharing.close()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _p2p_metrics(peers: PeerNetwork, metrics: NodeMetrics, every: float = 5.0) -> None:
    """Copy libtorrent's counters into the node's metrics."""
    sent = received = releases = 0
    while True:
        try:
            if peers.swarm is not None:
                stats = await peers.swarm.stats()
                metrics.p2p_upload.inc(max(0, stats.total_uploaded - sent))
                metrics.p2p_download.inc(max(0, stats.total_downloaded - received))
                metrics.p2p_share_releases.inc(max(0, stats.share_releases - releases))
                sent, received = stats.total_uploaded, stats.total_downloaded
                releases = stats.share_releases
                metrics.p2p_peers.set(stats.peers)
        except Exception:  # the gauges would freeze (and their alerts never fire) if this ended
            log.exception("reading libtorrent's counters failed")
        await asyncio.sleep(every)
