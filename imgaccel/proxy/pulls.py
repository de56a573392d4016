"""Pulls by workloads, as the node sees them: for the tracker's hot list, and to tell foreground
traffic from the prefetch worker's.

A client's ``GET`` of an image manifest opens a pull (the manifest names its config and layers);
its ``GET``\\s of those blobs add to it. The prefetch worker sends the pulls to the tracker in
batches (``{image, registry, repository, digests}``). Requests marked ``X-Imgaccel-Prewarm``
(``imgaccel prewarm``) are not workload pulls and are not recorded.

:attr:`PullRecorder.active` counts client ``/v2/`` requests in progress: the prefetch worker
waits while it is not zero, so prefetching never competes with a pull someone waits for.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from imgaccel.errors import ImgaccelError
from imgaccel.oci.media import INDEX_TYPES
from imgaccel.prewarm.node import PREWARM_HEADER
from imgaccel.prewarm.plan import blobs_of
from imgaccel.proxy.state import NODE
from imgaccel.proxy.target import target_of

log = logging.getLogger(__name__)

_MAX_OPEN = 1000


@dataclass
class Pull:
    image: str
    registry: str
    repository: str
    wanted: set[str]
    fetched: set[str] = field(default_factory=set)
    opened: float = field(default_factory=time.monotonic)

    def as_report(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "registry": self.registry,
            "repository": self.repository,
            "digests": sorted(self.fetched),
        }


class PullRecorder:
    """Open pulls by (registry, repository), and the client requests in flight."""

    def __init__(self) -> None:
        self.active = 0
        self._open: dict[tuple[str, str, str], Pull] = {}

    def manifest_served(self, registry: str, repo: str, reference: str, body: bytes) -> None:
        try:
            document = json.loads(body)
        except ValueError:
            return
        if not isinstance(document, dict) or "manifests" in document:
            return  # an index: the platform's manifest GET that follows opens the pull
        wanted = {b.digest for b in blobs_of(document)}
        if wanted and len(self._open) < _MAX_OPEN:
            image = (
                f"{registry}/{repo}:{reference}"
                if ":" not in reference
                else (f"{registry}/{repo}@{reference}")
            )
            self._open[(registry, repo, reference)] = Pull(image, registry, repo, wanted)

    def blob_served(self, registry: str, repo: str, digest: str) -> None:
        for (reg, name, _), pull in self._open.items():
            if reg == registry and name == repo and digest in pull.wanted:
                pull.fetched.add(digest)

    def take(self, older_than: float) -> list[dict[str, Any]]:
        """The pulls opened more than ``older_than`` seconds ago (they leave the recorder)."""
        now = time.monotonic()
        done = [k for k, p in self._open.items() if now - p.opened >= older_than]
        pulls = [self._open.pop(k) for k in done]
        return [p.as_report() for p in pulls if p.fetched]


RECORDER = web.AppKey("pull_recorder", PullRecorder)


@web.middleware
async def record_pulls(request: web.Request, handler: Any) -> web.StreamResponse:
    """Count client requests in flight and record successful manifest and blob GETs."""
    recorder = request.app.get(RECORDER)
    if recorder is None or not request.path.startswith("/v2/") or PREWARM_HEADER in request.headers:
        return await handler(request)  # type: ignore[no-any-return]
    recorder.active += 1
    try:
        response: web.StreamResponse = await handler(request)
    finally:
        recorder.active -= 1
    if request.method == "GET" and response.status == 200:
        _record(request, recorder, response)
    return response


def _record(request: web.Request, recorder: PullRecorder, response: web.StreamResponse) -> None:
    try:
        target = target_of(request, request.app[NODE].settings.default_registry)
    except (ImgaccelError, KeyError):
        return
    info = request.match_info
    if "reference" in info and isinstance(response, web.Response):
        if response.content_type not in INDEX_TYPES and isinstance(response.body, bytes):
            recorder.manifest_served(target.registry, target.repo, info["reference"], response.body)
    elif "digest" in info:
        recorder.blob_served(target.registry, target.repo, info["digest"])
