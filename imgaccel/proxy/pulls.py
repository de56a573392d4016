"""Pulls by workloads, as the node sees them: for the tracker's hot list, and to tell foreground
traffic from the prefetch worker's.

A client's ``GET`` of an image manifest opens a pull (the manifest names its config and layers);
another ``GET`` of the same manifest adds to that pull, and its ``GET``\\s of those blobs add to
it. A blob ``GET`` is in flight from the moment it starts (a multi-GB layer streams for minutes
inside its handler): the pull is not taken while one is, so its big layers are not lost. The
prefetch worker sends the pulls to the tracker in batches (``{image, registry, repository,
digests, sizes}``). ``sizes`` maps the digests whose size the node knows to it: the
``Content-Length`` of the blob's 200 answer, else the size the manifest's descriptor gives (so
other nodes can tell whether a hot layer fits before fetching it; a tracker from before sizes
ignores them). Requests marked ``X-Imgaccel-Prewarm`` (``imgaccel prewarm``) are not workload
pulls and are not recorded.

:attr:`PullRecorder.active` counts client ``/v2/`` requests in progress: the prefetch worker
waits while it is not zero, so prefetching never competes with a pull someone waits for.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from imgaccel.errors import ImgaccelError
from imgaccel.oci.media import INDEX_TYPES
from imgaccel.prewarm.node import PREWARM_HEADER
from imgaccel.prewarm.plan import blobs_of
from imgaccel.proxy.state import NODE
from imgaccel.proxy.target import Target, target_of

log = logging.getLogger(__name__)

#: The largest size a report may carry (the tracker keeps sizes as SQLite's signed 64 bits).
MAX_SIZE = 2**63 - 1

_MAX_OPEN = 1000
#: A pull is taken this long after it opened even with a blob request still in flight: a stuck
#: request must not hold it (and its memory) forever.
_MAX_AGE = 3600.0


@dataclass
class Pull:
    image: str
    registry: str
    repository: str
    wanted: set[str]
    opened: float
    fetched: set[str] = field(default_factory=set)
    #: When a manifest or blob request for it last started or ended.
    seen: float = 0.0
    #: Blob requests for it in progress.
    in_flight: int = 0
    #: Bytes of the blobs whose size is known: from a served blob's length, else its descriptor.
    sizes: dict[str, int] = field(default_factory=dict)

    def as_report(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "registry": self.registry,
            "repository": self.repository,
            "digests": sorted(self.fetched),
            "sizes": {d: self.sizes[d] for d in sorted(self.fetched) if d in self.sizes},
        }


class PullRecorder:
    """Open pulls by (registry, repository, reference), and the client requests in flight."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.active = 0
        self._clock = clock
        self._open: dict[tuple[str, str, str], Pull] = {}

    def manifest_served(self, registry: str, repo: str, reference: str, body: bytes) -> None:
        try:
            document = json.loads(body)
        except ValueError:
            return
        if not isinstance(document, dict) or "manifests" in document:
            return  # an index: the platform's manifest GET that follows opens the pull
        try:
            wanted = {b.digest for b in blobs_of(document)}
        except (ValueError, TypeError):  # a descriptor's size is not a number: not an image
            return
        sizes = _descriptor_sizes(document)
        now = self._clock()
        if (pull := self._open.get((registry, repo, reference))) is not None:
            pull.wanted |= wanted  # the same pull asked again (a retry): keep what it fetched
            pull.sizes = {**sizes, **pull.sizes}  # a served blob's own length stays
            pull.seen = now
        elif wanted and len(self._open) < _MAX_OPEN:
            image = (
                f"{registry}/{repo}:{reference}"
                if ":" not in reference
                else (f"{registry}/{repo}@{reference}")
            )
            self._open[(registry, repo, reference)] = Pull(
                image, registry, repo, wanted, opened=now, seen=now, sizes=sizes
            )

    def blob_started(self, registry: str, repo: str, digest: str) -> list[Pull]:
        """The open pulls that want ``digest``, each holding it in flight until
        :meth:`blob_ended` is called with them."""
        now = self._clock()
        pulls = [
            pull
            for (reg, name, _), pull in self._open.items()
            if reg == registry and name == repo and digest in pull.wanted
        ]
        for pull in pulls:
            pull.in_flight += 1
            pull.seen = now
        return pulls

    def blob_ended(
        self, pulls: list[Pull], digest: str, *, served: bool, size: int | None = None
    ) -> None:
        """The blob request :meth:`blob_started` returned ``pulls`` for is over; ``served``:
        it succeeded, and the blob counts as fetched by them, with ``size`` bytes if known."""
        now = self._clock()
        for pull in pulls:
            pull.in_flight -= 1
            pull.seen = now
            if served:
                pull.fetched.add(digest)
                if size is not None and 0 <= size <= MAX_SIZE:
                    pull.sizes[digest] = size

    def take(self, older_than: float) -> list[dict[str, Any]]:
        """The pulls with no blob request in flight and none started or ended for ``older_than``
        seconds, and any opened more than an hour ago (they leave the recorder)."""
        now = self._clock()
        done = [
            key
            for key, p in self._open.items()
            if now - p.opened >= _MAX_AGE or (p.in_flight == 0 and now - p.seen >= older_than)
        ]
        pulls = [self._open.pop(k) for k in done]
        return [p.as_report() for p in pulls if p.fetched]


def _descriptor_sizes(manifest: dict[str, Any]) -> dict[str, int]:
    """The sizes an image manifest's config and layer descriptors give, where they are sizes."""
    descriptors = [manifest.get("config"), *(manifest.get("layers") or [])]
    return {
        d["digest"]: d["size"]
        for d in descriptors
        if isinstance(d, dict)
        and isinstance(d.get("digest"), str)
        and type(d.get("size")) is int
        and 0 <= d["size"] <= MAX_SIZE
    }


RECORDER = web.AppKey("pull_recorder", PullRecorder)


@web.middleware
async def record_pulls(request: web.Request, handler: Any) -> web.StreamResponse:
    """Count client requests in flight and record successful manifest and blob GETs (a blob
    from when its request starts: see the module's docstring)."""
    recorder = request.app.get(RECORDER)
    if recorder is None or not request.path.startswith("/v2/") or PREWARM_HEADER in request.headers:
        return await handler(request)  # type: ignore[no-any-return]
    target = _target(request) if request.method == "GET" else None
    digest = request.match_info.get("digest")
    pulls = recorder.blob_started(target.registry, target.repo, digest) if target and digest else []
    recorder.active += 1
    ok, size = False, None
    try:
        response: web.StreamResponse = await handler(request)
        ok, size = response.status == 200, response.content_length
    finally:
        recorder.active -= 1
        if digest is not None:
            recorder.blob_ended(pulls, digest, served=ok, size=size)
    if ok and target is not None and "reference" in request.match_info:
        _record_manifest(request, recorder, target, response)
    return response


def _target(request: web.Request) -> Target | None:
    try:
        return target_of(request, request.app[NODE].settings)
    except (ImgaccelError, KeyError):
        return None


def _record_manifest(
    request: web.Request, recorder: PullRecorder, target: Target, response: web.StreamResponse
) -> None:
    if not isinstance(response, web.Response) or response.content_type in INDEX_TYPES:
        return
    if isinstance(response.body, bytes):
        reference = request.match_info["reference"]
        recorder.manifest_served(target.registry, target.repo, reference, response.body)
