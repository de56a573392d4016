"""Take cold-blob work from the tracker and fetch each blob into the cache (and so the swarm).

The long poll for work is also the seeder's heartbeat: while it runs, the tracker elects this
seeder for cold blobs. Fetches run concurrently up to a limit; each goes through the node's own
fetcher, so it is single-flight with local clients, verified, committed, seeded and published.

Work the seeder's cache could not keep (see :mod:`imgaccel.seeder.capacity`) is given back before
any of it is fetched: the claim is released at once, which wakes the nodes waiting for the blob,
and the tracker elects no seeder for it for a lease, so one of them fetches it for the cluster.
Work from a registry the ``registries`` setting does not allow is given back the same way, before
it waits for a fetch slot: the seeder never contacts that origin (nodes may, if theirs allow it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from imgaccel.cache.fill import FillFailed
from imgaccel.errors import ImgaccelError
from imgaccel.oci.digest import Digest
from imgaccel.proxy.fetcher import BlobFetcher
from imgaccel.proxy.target import RegistryAllowlist
from imgaccel.seeder.capacity import Decline, decline, origin_size
from imgaccel.seeder.metrics import SeederMetrics
from imgaccel.tracker.client import TrackerClient, TrackerError, Work
from imgaccel.upstream.blobs import BlobLocation

log = logging.getLogger(__name__)

POLL_SECONDS = 20.0
RETRY_SECONDS = 2.0
#: How often a work item waiting for a fetch slot renews the claim the tracker made for this
#: seeder when it queued the item (well within the shortest lease a tracker would set).
QUEUED_RENEW_SECONDS = 5.0


class SeederWorker:
    """Runs until cancelled; every fetch task is kept and cancelled with it."""

    def __init__(
        self,
        tracker: TrackerClient,
        fetcher: BlobFetcher,
        concurrency: int = 4,
        metrics: SeederMetrics | None = None,
        registries: RegistryAllowlist | None = None,
    ) -> None:
        self.tracker = tracker
        self.fetcher = fetcher
        self.registries = registries  # None: every registry
        self.metrics = metrics if metrics is not None else SeederMetrics()
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self.fetched = 0

    async def run(self) -> None:
        try:
            while True:
                try:
                    work = await self.tracker.work(wait=POLL_SECONDS)
                except TrackerError as exc:
                    log.warning("seeder: tracker unreachable (%s); retrying", exc)
                    await asyncio.sleep(RETRY_SECONDS)
                    continue
                for item in work:
                    task = asyncio.create_task(self._fetch(item), name=f"seed-{item.digest}")
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _fetch(self, item: Work) -> None:
        if self.registries is not None and self.registries.refuses(
            item.registry, "the tracker's seeder work"
        ):
            log.debug("seeder: not fetching %s: %s is not allowed", item.digest, item.registry)
            with contextlib.suppress(TrackerError):  # else its lease lapses on its own
                await self.tracker.release(item.digest)
            return
        await self._wait_for_slot(item)
        try:
            await self._fetch_in_slot(item)
        finally:
            self._slots.release()

    async def _wait_for_slot(self, item: Work) -> None:
        """Wait for a fetch slot, keeping the claim the tracker made when it queued the item
        alive meanwhile (the nodes waiting for this blob would otherwise idle out its lease,
        then fetch it from the origin themselves); a seeder stopping releases it."""

        async def renew() -> None:
            while True:
                await asyncio.sleep(QUEUED_RENEW_SECONDS)
                with contextlib.suppress(TrackerError):
                    await self.tracker.renew(item.digest)

        renewing = asyncio.create_task(renew(), name=f"renew-{item.digest}")
        try:
            await self._slots.acquire()
        except asyncio.CancelledError:
            with contextlib.suppress(TrackerError):
                await self.tracker.release(item.digest)
            raise
        finally:
            renewing.cancel()

    async def _fetch_in_slot(self, item: Work) -> None:
        try:
            location = BlobLocation(item.registry, item.repository, Digest.parse(item.digest))
            if (cannot := await self._cannot_keep(location)) is not None:
                await self._decline(item, cannot)
                return
            fill = await self.fetcher.fill(location)
            if fill is None:
                await self._republish(location.digest)
                return
            await fill.done
        except (ImgaccelError, FillFailed, ValueError) as exc:
            log.warning(
                "seeder: could not fetch %s from %s/%s: %s",
                item.digest,
                item.registry,
                item.repository,
                exc,
            )
            return
        self.fetched += 1
        log.info("seeder: %s is in the cache and the swarm", item.digest)

    async def _cannot_keep(self, location: BlobLocation) -> Decline | None:
        """Why the cache could not keep the blob, or None (also for a blob held or being filled
        already: the fetcher republishes or joins it). The quota and the disk's floor both
        decide, with or without a quota; the origin is asked for the size only when neither
        decides it alone, and not at all when there is neither a quota nor a disk to ask."""
        store, digest = self.fetcher.store, location.digest
        if digest in store or digest in self.fetcher.fills:
            return None
        if (full := decline(store, None)) is not None:
            return full
        if not store.quota_bytes and store.disk_usage() is None:
            return None
        return decline(store, await origin_size(self.fetcher.client, location))

    async def _decline(self, item: Work, cannot: Decline) -> None:
        self.metrics.declined.labels(cannot.reason).inc()
        log.warning(
            "seeder: not fetching %s from %s/%s: %s; claim released, a node fetches it",
            item.digest,
            item.registry,
            item.repository,
            cannot.why,
        )
        try:
            await self.tracker.release(item.digest)
        except TrackerError as exc:  # the lease lapses on its own
            log.warning("seeder: could not release the claim on %s: %s", item.digest, exc)

    async def _republish(self, digest: Digest) -> None:
        """The tracker elected this seeder for a blob it holds (the tracker lost its torrent,
        or a publish failed): publish it again, or release the claim, so the nodes waiting for
        it do not wait out the lease."""
        peers = self.fetcher.peers
        if peers is not None and await peers.republish(digest):
            log.info("seeder: %s is in the cache already; published it again", digest)
        else:
            log.info("seeder: %s is in the cache already, with no torrent; claim released", digest)
