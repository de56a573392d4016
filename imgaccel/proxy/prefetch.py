"""The node's background prefetch: cluster prewarm jobs, hot layers, and pull reports.

With a tracker, the node runs three owned tasks:

- **jobs**: long-polls the tracker for prewarm jobs meant for this node (by name, labels or
  percentage), resolves each image with the node's own manifest cache (the same platform choice
  as ``imgaccel prewarm``), fetches the blobs it lacks through the fetcher (peers first: the
  tracker's claims let one node fetch each cold blob from the origin), pins them for
  ``prefetch.pin_seconds`` and reports progress. A job cancelled on the tracker stops after the
  blob in flight (the reply to the progress report says so); what it fetched stays pinned.
- **hot**: reads the tracker's hot list every ``prefetch.hot_interval_seconds`` and fetches
  hot layers it lacks, within the bandwidth budget (a token bucket), a share of the cache quota
  (counted on the blobs its hot pins hold now: the share frees as they end) and the room pins
  leave in it, and pins them. A layer the list gives a size for that would
  not fit in what is left of that share, or of that room, is skipped before any of it is
  fetched (a list or reports without sizes: fetched, as before). A layer that fails (a
  repository this node may not read, a blob the origin lacks) is skipped for some passes; the
  others go on.
- **reports**: sends the pulls workloads made (:mod:`imgaccel.proxy.pulls`) in batches.

Jobs and hot layers come from other nodes' pulls and the tracker: an image or layer of a registry
the ``registries`` setting does not allow is skipped (logged; the rest goes on), as the node
would refuse its clients that registry anyway.

Background fetches always yield to foreground pulls: before each blob the worker waits while a
client request is in flight or a fill it did not start is running.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

import aiohttp

from imgaccel.cache import pins
from imgaccel.errors import CacheFull, ImgaccelError
from imgaccel.oci.digest import Digest
from imgaccel.oci.reference import ImageRef
from imgaccel.prewarm.errors import JobCancelled
from imgaccel.prewarm.jobs import JobsClient
from imgaccel.prewarm.plan import ImagePlan, resolve
from imgaccel.prewarm.platform import Platform
from imgaccel.proxy.bandwidth import TokenBucket
from imgaccel.proxy.manifests import lookup
from imgaccel.proxy.pulls import PullRecorder
from imgaccel.proxy.state import Node
from imgaccel.proxy.target import RegistryAllowlist, Target
from imgaccel.settings import P2PSettings
from imgaccel.tracker.auth import client_context
from imgaccel.upstream.blobs import BlobLocation

log = logging.getLogger(__name__)

#: The pin reason of prefetched hot layers.
HOT_PIN = "hot"

_PARALLEL = 4
_YIELD_POLL_SECONDS = 0.1
_RETRY_SECONDS = 2.0
_LAST_REPORTS_SECONDS = 3.0
_HOT_BACKOFF_PASSES = 10  # a hot layer that failed is skipped for this many intervals
_ERRORS = (ImgaccelError, aiohttp.ClientError, ValueError, KeyError, TypeError)


class NodeManifests:
    """The node's manifest cache as a :class:`~imgaccel.prewarm.plan.ManifestSource`."""

    def __init__(self, node: Node) -> None:
        self._node = node

    async def manifest(self, ref: ImageRef, reference: str) -> tuple[str, bytes, str]:
        found = await lookup(self._node, Target(ref.registry, ref.name), reference)
        return found.media_type, found.body, str(found.digest)


class Prefetcher:
    """The background worker of one node (an async context manager owning its tasks)."""

    def __init__(
        self, node: Node, recorder: PullRecorder, registries: RegistryAllowlist | None = None
    ) -> None:
        self.node = node
        self.registries = registries or RegistryAllowlist(node.settings)
        self.settings = node.settings.prefetch
        self.recorder = recorder
        self.node_id = node.settings.p2p.node_id or _hostname()
        self.bucket = TokenBucket(self.settings.bandwidth_bytes_per_second)
        self._hot_failed: dict[Digest, float] = {}  # hot layers that failed: skipped until
        self._hot_unfit: set[Digest] = set()  # hot layers skipped as too big (logged once)
        self._hot_stopped: str | None = None  # why the last pass stopped early (logged once)
        self._own: set[Digest] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._http: aiohttp.ClientSession | None = None
        self.tracker: JobsClient | None = None

    async def __aenter__(self) -> Prefetcher:
        p2p = self.node.settings.p2p
        assert p2p.tracker_url is not None
        self._http = aiohttp.ClientSession()
        self.tracker = JobsClient(p2p.tracker_url, self._http, _tracker_ssl(p2p))
        for name, loop in (
            ("prefetch-jobs", self._jobs_forever),
            ("prefetch-hot", self._hot_forever),
            ("prefetch-reports", self._reports_forever),
        ):
            task = asyncio.create_task(_forever(name, loop), name=name)
            self._tasks.add(task)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            # The last reports, briefly: a silent tracker must not eat the pod's grace period.
            async with asyncio.timeout(_LAST_REPORTS_SECONDS):
                await self._send_reports(0.0)
        except (ImgaccelError, aiohttp.ClientError, TimeoutError) as exc:
            log.info("the last pull reports were not sent: %s", exc)
        finally:
            if self._http is not None:
                await self._http.close()

    # -- foreground first -----------------------------------------------------------------------

    def foreground_busy(self) -> bool:
        """A client request is in flight, or a fill this worker did not start is running."""
        fills = self.node.fetcher.fills
        return self.recorder.active > 0 or any(d not in self._own for d in fills)

    async def yield_to_foreground(self) -> None:
        # Polled: "busy" spans the request counter and the fetcher's fills, which signal nothing.
        while self.foreground_busy():  # noqa: ASYNC110
            await asyncio.sleep(_YIELD_POLL_SECONDS)

    async def fetch(
        self, registry: str, repo: str, digest: Digest, pacer: TokenBucket | None = None
    ) -> int:
        """Bring one blob into the cache (a no-op when it is there); the bytes fetched. With a
        ``pacer`` the fetch keeps to its budget while no client reads the blob. A blob fetched
        but not kept raises :class:`CacheFull` for the quota, :class:`DiskLow` for the disk's
        ``cache.min_free_percent`` floor (a job's failure says which)."""
        store = self.node.store
        if digest in store:
            return 0
        await self.yield_to_foreground()
        self._own.add(digest)
        try:
            location = BlobLocation(registry, repo, digest, None)
            fill = await self.node.fetcher.fill(location, pacer)
            if fill is None:  # a foreground pull stored it meanwhile
                return 0
            await asyncio.shield(fill.done)
        finally:
            self._own.discard(digest)
        if digest not in store:
            why = fill.not_kept  # the quota's or the disk floor's refusal, as the fill met it
            if why is None:  # its commit failed, or another fill kept it and it was evicted
                raise CacheFull(f"the cache could not keep {digest} (see the node's log)")
            raise type(why)(f"the cache could not keep {digest}: {why}")
        return fill.size

    # -- prewarm jobs -------------------------------------------------------------------------

    async def _jobs_forever(self) -> None:
        assert self.tracker is not None
        jobs = await self.tracker.poll(
            self.node_id, self.settings.labels, wait=self.settings.job_poll_seconds
        )
        for job in jobs:
            await self.run_job(job)

    async def run_job(self, job: dict[str, Any]) -> None:
        """Warm every image of ``job``, reporting progress; a failure is reported, not raised."""
        assert self.tracker is not None
        progress = _Progress(self.tracker, str(job["id"]), self.node_id)
        reason = job_pin_reason(str(job["id"]))
        try:
            images, skipped = self._allowed_images(job)
            if skipped and not images:  # nothing to warm here: the job's status says why
                await progress.send("failed", skipped)
                return
            plans = [await self._plan(image, job) for image in images]
            progress.total = sum(p.total_bytes for p in plans)
            await progress.add(0)
            for plan in plans:
                await self._warm(plan, progress.add, reason)
            await progress.send("done", skipped)
            log.info("prewarm job %s done: %d bytes", job["id"], progress.total)
        except JobCancelled:
            # What the job fetched stays cached, but only pinned if something else pins it.
            unpinned = pins.unpin_reason(self.node.store, self.node.meta, reason)
            log.info(
                "prewarm job %s was cancelled: stopped after %d of %d bytes; %d blobs unpinned",
                job["id"],
                progress.done,
                progress.total,
                len(unpinned),
            )
        except (ImgaccelError, aiohttp.ClientError, ValueError) as exc:
            log.warning("prewarm job %s failed: %s", job["id"], exc)
            await progress.send("failed", str(exc))

    def _allowed_images(self, job: dict[str, Any]) -> tuple[list[str], str | None]:
        """The job's images whose registry this node may contact, and what was skipped (also
        logged: an operator asked for the job, so each image skipped says so)."""
        images: list[str] = []
        refused: list[str] = []
        for image in job["images"]:
            registry = ImageRef.parse(image).registry
            if not self.registries.allows(registry):
                log.warning(
                    "prewarm job %s: skipping %s: its registry %s is not in this node's "
                    "`registries` setting",
                    job["id"],
                    image,
                    registry,
                )
                refused.append(image)
            else:
                images.append(image)
        if not refused:
            return images, None
        return images, f"skipped (registry not allowed on this node): {', '.join(refused)}"

    async def _plan(self, image: str, job: dict[str, Any]) -> ImagePlan:
        platform = Platform.parse(job["platform"]) if job.get("platform") else None
        return await resolve(
            NodeManifests(self.node),
            ImageRef.parse(image),
            platform,
            bool(job.get("all_platforms")),
        )

    async def _warm(
        self, plan: ImagePlan, progress: Callable[[int], Awaitable[None]], reason: str
    ) -> None:
        limit = asyncio.Semaphore(_PARALLEL)

        async def one(digest: Digest, size: int) -> None:
            async with limit:
                await self.fetch(plan.ref.registry, plan.ref.name, digest)
            pins.pin(self.node.store, self.node.meta, digest, self.settings.pin_seconds, reason)
            await progress(size)

        await _all([one(Digest.parse(b.digest), b.size) for b in plan.blobs])

    # -- hot layers -----------------------------------------------------------------------------

    async def _hot_forever(self) -> None:
        # The interval follows every pass, failed or not: the hot list is the tracker's costliest
        # answer, and a layer that fails is retried on its own schedule (see hot_pass).
        interval = self.settings.hot_interval_seconds
        try:
            await self.hot_pass()
        except _ERRORS as exc:
            log.warning("hot-layer prefetch: %s; next pass in %.0fs", exc, interval)
        await asyncio.sleep(interval)

    async def hot_pass(self) -> None:
        """Fetch and pin the hot layers this node lacks, hottest first. A layer that fails is
        logged and skipped for ``_HOT_BACKOFF_PASSES`` intervals while the pass goes on."""
        assert self.tracker is not None
        hot = await self.tracker.hot(self.settings.hot_min_score)
        layers = [(Digest.parse(layer["digest"]), layer) for layer in hot]
        listed = {digest for digest, _ in layers}
        self._hot_failed = {d: t for d, t in self._hot_failed.items() if d in listed}
        self._hot_unfit &= listed
        for digest, layer in layers:
            if digest in self.node.store or self._hot_failed.get(digest, 0.0) > time.monotonic():
                continue
            if self.registries.refuses(str(layer["registry"]), "the tracker's hot-layer list"):
                continue
            if not await self._hot_layer(digest, layer):
                return
        self._hot_stopped = None

    async def _hot_layer(self, digest: Digest, layer: dict[str, Any]) -> bool:
        """Fetch and pin one hot layer; False when the pass should stop."""
        if (full := self._hot_full()) is not None:
            if full != self._hot_stopped:
                log.info("hot-layer prefetch stopped: %s", full)
            self._hot_stopped = full
            return False
        if (unfit := self._hot_unfit_why(layer)) is not None:
            again = digest in self._hot_unfit
            self._hot_unfit.add(digest)
            log.log(
                logging.DEBUG if again else logging.INFO, "hot layer %s skipped: %s", digest, unfit
            )
            return True  # a smaller one after it may fit
        try:
            await self.fetch(layer["registry"], layer["repository"], digest, self.bucket)
        except ImgaccelError as exc:
            self._hot_failure(digest, layer, exc)
            return not isinstance(exc, CacheFull)  # the layers after it would not fit either
        pins.pin(self.node.store, self.node.meta, digest, self.settings.pin_seconds, HOT_PIN)
        return True

    @property
    def hot_bytes(self) -> int:
        """Bytes of the cached blobs pinned as hot layers now: the share prefetch has used. As
        hot pins end (``prefetch.pin_seconds``) and their blobs are evicted, it frees again."""
        store, now = self.node.store, time.time()
        hot = {d for d, until, reason in self.node.meta.pins() if reason == HOT_PIN and until > now}
        return sum(entry.size for digest, entry in store.entries() if digest in hot)

    def _hot_full(self) -> str | None:
        """Why no hot layer may be fetched now, or None. A cache whose quota pins fill would
        drop the blob after the whole download."""
        store = self.node.store
        quota = store.quota_bytes
        if not quota:
            return None
        if self.hot_bytes >= self.settings.cache_share * quota:
            return "its share of the cache quota is used"
        if store.pinned_bytes() >= quota:
            return "the cache quota is full of pinned blobs"
        return None

    def _hot_unfit_why(self, layer: dict[str, Any]) -> str | None:
        """Why a hot layer of the size the list gives cannot be kept within prefetch's share of
        the quota, or the room pins leave in it; None when it can, or its size is not known (a
        tracker or reports from before sizes): such a layer is fetched, as always."""
        size, store = layer.get("size"), self.node.store
        quota = store.quota_bytes
        if not quota or type(size) is not int or size < 0:
            return None
        share = int(self.settings.cache_share * quota) - self.hot_bytes
        if size > share:
            return f"its {size} bytes exceed the {share} bytes left of prefetch's cache share"
        room = quota - store.pinned_bytes()
        if size > room:
            return f"its {size} bytes exceed the {room} bytes pins leave of the cache quota"
        return None

    def _hot_failure(self, digest: Digest, layer: dict[str, Any], exc: ImgaccelError) -> None:
        backoff = _HOT_BACKOFF_PASSES * self.settings.hot_interval_seconds
        again = digest in self._hot_failed  # still listed since it last failed: say it once
        self._hot_failed[digest] = time.monotonic() + backoff
        log.log(
            logging.DEBUG if again else logging.WARNING,
            "hot layer %s of %s/%s not prefetched: %s; skipping it for %.0fs",
            digest,
            layer["registry"],
            layer["repository"],
            exc,
            backoff,
        )

    # -- pull reports ---------------------------------------------------------------------------

    async def _reports_forever(self) -> None:
        await asyncio.sleep(self.settings.report_interval_seconds)
        await self._send_reports(self.settings.report_interval_seconds)

    async def _send_reports(self, older_than: float) -> None:
        pulls = self.recorder.take(older_than)
        if pulls and self.tracker is not None:
            await self.tracker.report_pulls(self.node_id, pulls)


def job_pin_reason(job_id: str) -> str:
    """What a cluster prewarm job's pins are made for (``imgaccel cache ls`` shows it)."""
    return f"prewarm job {job_id}"


class _Progress:
    """A job's bytes on this node, reported to the tracker after each blob."""

    def __init__(self, tracker: JobsClient, job: str, node: str) -> None:
        self.tracker, self.job, self.node = tracker, job, node
        self.done = self.total = 0

    async def add(self, nbytes: int) -> None:
        """Count a blob's bytes and report them; :class:`JobCancelled` if the tracker replies
        that the job was cancelled."""
        self.done += nbytes
        if not await self.send("running"):
            raise JobCancelled(f"prewarm job {self.job} was cancelled")

    async def send(self, state: str, error: str | None = None) -> bool:
        """Report; False once the job was cancelled on the tracker."""
        return await self.tracker.progress(self.job, self.node, state, self.done, self.total, error)


async def _all(jobs: list[Awaitable[None]]) -> None:
    tasks = [asyncio.ensure_future(job) for job in jobs]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _forever(name: str, step: Callable[[], Awaitable[None]]) -> None:
    """Run ``step`` again and again; an error is logged and retried after a pause."""
    while True:
        try:
            await step()
        except _ERRORS as exc:
            log.warning("%s: %s; retrying in %.0fs", name, exc, _RETRY_SECONDS)
            await asyncio.sleep(_RETRY_SECONDS)


def _tracker_ssl(p2p: P2PSettings) -> ssl.SSLContext | None:
    certs = p2p.certs_dir
    if certs is None or not (p2p.tracker_url or "").startswith("https://"):
        return None
    return client_context(certs / "ca.crt", certs / "node.crt", certs / "node.key")


def _hostname() -> str:
    return socket.gethostname()
