"""``/metrics``: Prometheus text from a registry owned by one app (not the global one)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from imgaccel.p2p.certs import Validity
from imgaccel.tracker.state import STATE, TrackerState


def announce_counter(registry: CollectorRegistry) -> Counter:
    return Counter(
        "imgaccel_tracker_announces",
        "Announces received, by event; event=alive: a node's call that keeps all its peers.",
        ["event"],
        registry=registry,
    )


def certificate_expiry(registry: CollectorRegistry, validity: Mapping[str, Validity]) -> Gauge:
    """The end of each certificate the tracker loaded at start (the node's gauge of that name)."""
    gauge = Gauge(
        "imgaccel_certificate_expiry_timestamp_seconds",
        "When a cluster certificate loaded at start ends (notAfter, Unix time): cert=tracker "
        "is the one presented to nodes, cert=ca the CA their certificates must chain to.",
        ["cert"],
        registry=registry,
    )
    for cert, found in validity.items():
        gauge.labels(cert).set(found.not_after.timestamp())
    return gauge


class StateCollector(Collector):
    """Gauges read from the tracker's state at scrape time."""

    def __init__(self, state: TrackerState) -> None:
        self._state = state

    def collect(self) -> Iterator[Metric]:
        state, now = self._state, self._state.now()
        gauges = {
            "swarms": ("Swarms with at least one peer.", state.swarms.swarm_count()),
            "peers": ("Peers across all swarms.", state.swarms.peer_count()),
            "seeders": (
                "Seeders with a recent heartbeat.",
                len(state.store.alive_seeders(now - state.settings.seeder_ttl)),
            ),
            "metainfo": ("Blobs with published metainfo.", state.store.metainfo_count()),
        }
        for name, (doc, value) in gauges.items():
            yield GaugeMetricFamily(f"imgaccel_tracker_{name}", doc, value=value)


async def handle_metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[STATE].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def handle_healthz(request: web.Request) -> web.Response:
    request.app[STATE].store.metainfo_count()  # the database answers
    return web.json_response({"status": "ok"})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/metrics", handle_metrics)
    app.router.add_get("/healthz", handle_healthz)
