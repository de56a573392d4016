"""The node's parts, held by the app under one typed key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from imgaccel.cache.meta import Manifest, MetaStore
from imgaccel.cache.store import BlobStore
from imgaccel.proxy.access import AccessGuard
from imgaccel.proxy.fetcher import BlobFetcher
from imgaccel.proxy.metrics import NodeMetrics
from imgaccel.proxy.origins import OriginHealth
from imgaccel.proxy.recent import RecentServes
from imgaccel.proxy.singleflight import SingleFlight
from imgaccel.settings import Settings
from imgaccel.upstream.client import UpstreamClient


@dataclass
class Node:
    settings: Settings
    store: BlobStore
    meta: MetaStore
    client: UpstreamClient
    guard: AccessGuard
    fetcher: BlobFetcher
    metrics: NodeMetrics
    #: How each origin answered lately (for ``GET /_imgaccel/status``).
    origins: OriginHealth
    #: Manifest fetches in progress, shared by concurrent askers with the same identity.
    manifest_flights: SingleFlight[Any, Manifest] = field(default_factory=SingleFlight)
    #: (registry, repository, tag) -> until when the origin's "not found" is believed.
    not_found: dict[tuple[str, str, str], float] = field(default_factory=dict)
    #: The last blobs served (for ``GET /_imgaccel/status``).
    recent: RecentServes = field(default_factory=RecentServes)


NODE = web.AppKey("node", Node)
METRICS = web.AppKey("metrics", NodeMetrics)
