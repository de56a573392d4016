"""The state one tracker app shares between its handlers, under one typed app key."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from imgaccel.tracker.config import TrackerSettings
from imgaccel.tracker.notify import Notifier
from imgaccel.tracker.store import Store
from imgaccel.tracker.swarm import Swarms

#: Wall-clock seconds. Not monotonic: lease and heartbeat times are stored and must mean the
#: same after a restart. Tests pass a fake one to move time without sleeping.
Clock = Callable[[], float]


@dataclass
class TrackerState:
    """Everything the handlers of one tracker app share."""

    settings: TrackerSettings
    clock: Clock
    store: Store
    swarms: Swarms
    registry: CollectorRegistry
    announces: Counter
    #: The cluster CA (DER) when serving TLS: published torrents must carry it as ``ssl-cert``.
    cluster_ca_der: bytes | None = None
    notifier: Notifier = field(default_factory=Notifier)
    #: digest -> until when no seeder is elected for it (a seeder gave up or let its lease lapse).
    seeder_declined: dict[str, float] = field(default_factory=dict)

    def now(self) -> float:
        return self.clock()


STATE = web.AppKey("state", TrackerState)
