"""Single-flight blob fetching: one upstream fetch per digest however many clients ask.

The first request for a missing blob starts a fill task (owned by the fetcher, so a client that
hangs up does not cancel the fetch others wait for); every later request for the same digest joins
the fill and streams from it. A fill is verified before it is committed to the store; if the quota
cannot hold it, or keeping it would leave the disk less than ``cache.min_free_percent`` free, it is
still streamed (and verified) but not kept.

Before any client gets a byte, the fill's file takes the disk blocks of the whole blob (evicting
least recently used blobs if the disk is full): a disk that cannot take it refuses the fill with a
503 for every client waiting, who then pull from the origin. A 503 before the body is the one
answer containerd falls back on; a body cut off halfway fails the pull.

With peer-to-peer on, the fill's bytes come from the swarm when the cluster has the blob, and
from the origin otherwise (or from the byte where the swarm stalled). What this node commits is
seeded and published to the tracker.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import time
from collections.abc import AsyncIterator, Awaitable

from imgaccel.cache import space
from imgaccel.cache.fill import Fill, Pacer
from imgaccel.cache.store import BlobStore
from imgaccel.errors import (
    CacheFull,
    DigestMismatch,
    DiskFull,
    ImgaccelError,
    RegistryError,
    UpstreamUnavailable,
    not_kept_reason,
)
from imgaccel.oci.digest import Digest
from imgaccel.p2p.errors import P2PError
from imgaccel.p2p.metainfo import Metainfo
from imgaccel.proxy.access import AccessGuard, refusal
from imgaccel.proxy.metrics import NodeMetrics
from imgaccel.proxy.peers import PeerNetwork, Plan
from imgaccel.upstream.blobs import BlobLocation, OriginFetch, parse_content_length
from imgaccel.upstream.client import Answer, UpstreamClient
from imgaccel.upstream.config import UpstreamClientSettings

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def open_blob(client: UpstreamClient, location: BlobLocation) -> AsyncIterator[Answer]:
    """The origin's 200 answer to a GET of the blob; any other answer is raised as the refusal
    the client gets."""
    async with client.open(
        "GET",
        location.registry,
        location.repo,
        location.path,
        client_auth=location.client_auth,
        kind="blob",
    ) as answer:
        if answer.status != 200:
            raise refusal(answer.status, "blobs", answer.challenge)
        yield answer


class BlobFetcher:
    """Owns the fills in progress and the tasks that run them."""

    def __init__(
        self,
        store: BlobStore,
        guard: AccessGuard,
        client: UpstreamClient,
        settings: UpstreamClientSettings,
        metrics: NodeMetrics,
    ) -> None:
        self.store = store
        self.guard = guard
        self.client = client
        self.settings = settings
        self.metrics = metrics
        self.fills: dict[Digest, Fill] = {}
        self.peers: PeerNetwork | None = None
        self._starting: dict[Digest, asyncio.Future[Fill]] = {}
        self._pacers: dict[Digest, Pacer] = {}  # for the fills being started
        self._tasks: set[asyncio.Task[None]] = set()
        self._background: set[Digest] = set()  # fill_in_background's starts not yet started
        metrics.track_disk(store.disk_usage, store.min_free_percent)  # the disk fills land on

    async def fill(self, location: BlobLocation, pacer: Pacer | None = None) -> Fill | None:
        """The fill for ``location.digest``: an existing one, or a new one from the origin;
        None when the blob is in the store (a fill committed it since the caller looked, or
        another process did: a snapshot import, see :meth:`_stored`).

        A fill this call starts with a ``pacer`` (a background fetch) keeps to its bandwidth
        budget while no client reads it; joining an existing fill leaves it as it is. Such a
        fill is not started when the cache would not keep it (:class:`CacheFull`): nobody asked
        for its bytes.

        Raises :class:`DiskFull` (503) when the disk cannot take the blob, before any byte.

        Raises the client-facing error when the origin refuses (the refusal is this client's:
        another waiter with other credentials tries on its own). A client joining a fill that
        another client started must pass the access guard with its own credentials first.

        Never starts a fill for a stored blob: besides fetching it twice, a swarm download of a
        blob this node seeds would share the seeding torrent, and dropping the download after
        the fill would take the cache file with it.
        """
        digest = location.digest
        for _ in range(3):
            if (existing := self.fills.get(digest)) is not None:
                return await self._join(location, existing)
            starting = self._starting.get(digest)
            if starting is None:
                return None if self._stored(digest) else await self._start(location, pacer)
            try:
                started = await asyncio.shield(starting)
            except DiskFull:
                raise  # the disk has no more room for this client: it goes to the origin too
            except (RegistryError, CacheFull):
                continue  # the starter was refused, or a prefetch not kept: try for ourselves
            return await self._join(location, started)
        return None if self._stored(digest) else await self._start(location, pacer)

    def fill_in_background(self, location: BlobLocation) -> None:
        """Start the fill of ``location`` without waiting for it, unless the blob is stored or
        its fill is in flight or starting: for a client served another way meanwhile (a range
        the origin answered, see :mod:`imgaccel.proxy.ranges_ahead`), so that the cache still
        gets the blob once. A start that fails is logged, nothing more; :meth:`close` cancels
        one still waiting."""
        digest = location.digest
        if digest in self.fills or digest in self._starting or digest in self._background:
            return
        if digest in self.store:
            return
        self._background.add(digest)
        task = asyncio.create_task(self._fill_quietly(location), name=f"fill-bg-{digest}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _: self._background.discard(digest))

    async def _fill_quietly(self, location: BlobLocation) -> None:
        try:
            await self.fill(location)
        except ImgaccelError as exc:
            log.warning("the fill of %s did not start: %s", location.digest, exc)
        except Exception:
            log.exception("the fill of %s did not start", location.digest)

    def _stored(self, digest: Digest) -> bool:
        """In the store's index, or its file committed to the cache by another process and
        indexed now (a stat; never a file of a fill of ours, which its commit indexes), and
        then offered to peers (see :meth:`PeerNetwork.share`)."""
        if digest in self.store:
            return True
        if digest in self.fills or not self.store.adopt(digest):
            return False
        if self.peers is not None:
            self.peers.share([digest])
        return True

    async def _join(self, location: BlobLocation, fill: Fill) -> Fill:
        await self.guard.check(
            location.registry,
            location.repo,
            location.digest,
            location.client_auth,
            "blobs",
            joining_fill=True,
        )
        return fill

    async def _start(self, location: BlobLocation, pacer: Pacer | None) -> Fill:
        ready: asyncio.Future[Fill] = asyncio.get_running_loop().create_future()
        self._starting[location.digest] = ready
        if pacer is not None:
            self._pacers[location.digest] = pacer
        task = asyncio.create_task(self._run(location, ready), name=f"fill-{location.digest}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            return await asyncio.shield(ready)
        finally:
            if self._starting.get(location.digest) is ready:
                del self._starting[location.digest]
            self._pacers.pop(location.digest, None)

    async def _run(self, location: BlobLocation, ready: asyncio.Future[Fill]) -> None:
        try:
            await self._fetch(location, ready)
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(
                    exc
                    if isinstance(exc, RegistryError | Exception)
                    else UpstreamUnavailable("fetch cancelled")
                )
                ready.exception()  # the starter re-raises it; never "never retrieved"
            if not isinstance(exc, Exception):
                raise

    async def _fetch(self, location: BlobLocation, ready: asyncio.Future[Fill]) -> None:
        """Peers when the cluster has the blob; else the origin (for the cluster, if elected)."""
        plan = await self.peers.plan(location) if self.peers is not None else Plan()
        if plan.metainfo is not None and plan.metainfo.length < self._p2p_min_bytes:
            # A swarm costs a torrent, an announce and TLS handshakes: for a config blob or a
            # tiny layer the origin answers sooner, for a negligible share of its egress.
            await self._from_origin(location, ready)
        elif plan.metainfo is not None:
            await self._from_peers(location, plan, plan.metainfo, ready)
        elif plan.elected and self.peers is not None:
            async with self.peers.holding(location.digest, plan.lease_seconds):
                await self._from_origin(location, ready)
        else:
            await self._from_origin(location, ready)

    async def _from_origin(self, location: BlobLocation, ready: asyncio.Future[Fill]) -> None:
        started = time.monotonic()
        async with open_blob(self.client, location) as answer:
            size = parse_content_length(answer.headers.get("Content-Length"))
            if size is None:
                raise UpstreamUnavailable("origin sent a blob without Content-Length")
            self.guard.record_answer(
                location.registry,
                location.repo,
                location.digest,
                answer,
                location.client_auth,
                filling=ready,  # the registry vouches for the digest once its bytes verify
            )
            response = answer.response
            async with self._registered(location.digest, size, ready) as (fill, keep):
                hasher = self.peers.hasher(size) if self.peers is not None else None
                if hasher is not None:
                    fill.observers.append(hasher.update)
                fetch = OriginFetch(self.client, location, fill, self.settings)
                await self._complete(fill, keep, fetch.run(response, answer.ranges_ok))
                if fill.committed and self.peers is not None and hasher is not None:
                    metainfo = self.peers.metainfo_of(hasher, fill.digest)
                    origins = self.guard.origins_of(fill.digest) | {location.registry}
                    await self.peers.publish(
                        fill.digest, metainfo, self._public_in(location), origins
                    )
        log.info(
            "fetched %s (%d bytes) from %s in %.2fs",
            location.digest,
            size,
            location.registry,
            time.monotonic() - started,
        )

    async def _from_peers(
        self, location: BlobLocation, plan: Plan, metainfo: Metainfo, ready: asyncio.Future[Fill]
    ) -> None:
        assert self.peers is not None
        peers = self.peers
        await self._check_peer_access(location, plan)
        started = time.monotonic()

        async def download() -> None:
            try:
                await peers.download_into(fill, metainfo)
            except P2PError as exc:
                here = fill.size - sum(end - start for start, end in fill.missing())
                log.info(
                    "%s: peers stopped (%s) with %d of %d bytes here (%d past the in-order "
                    "prefix); continuing from the origin",
                    location.digest,
                    exc,
                    here,
                    fill.size,
                    here - fill.contiguous,
                )
                await self._rest_from_origin(location, fill)

        again: asyncio.Future[Fill] | None = None
        async with self._registered(location.digest, metainfo.length, ready) as (fill, keep):
            try:
                await self._complete(fill, keep, download())
            except DigestMismatch:
                # libtorrent checked every piece against the torrent: the torrent is not of
                # this blob. Its readers abort (none got the last byte; nothing was cached);
                # whoever asks next waits for the origin fill of this same fetch.
                peers.distrust(location.digest)
                again = asyncio.get_running_loop().create_future()
                self._starting[location.digest] = again
            if fill.committed:
                origins = plan.origins | self.guard.origins_of(fill.digest)
                await peers.publish(fill.digest, metainfo, plan.public_in, origins)
        if again is not None:
            log.warning(
                "%s: the swarm's torrent is not of this blob; fetching it from the origin",
                location.digest,
            )
            await self._origin_instead(location, again)
            return
        log.info(
            "fetched %s (%d bytes, %d from peers) in %.2fs",
            location.digest,
            metainfo.length,
            fill.bytes_from.get("peer", 0),
            time.monotonic() - started,
        )

    async def _rest_from_origin(self, location: BlobLocation, fill: Fill) -> None:
        """The bytes peers did not deliver, from the origin: the gaps with Range requests or,
        when nothing landed, the whole blob with a plain GET (an origin may ignore Range)."""
        fetch = OriginFetch(self.client, location, fill, self.settings)
        if fill.missing() != [(0, fill.size)]:
            await fetch.run(None, True)
            return
        async with open_blob(self.client, location) as answer:
            await fetch.run(answer.response, answer.ranges_ok)

    async def _origin_instead(self, location: BlobLocation, ready: asyncio.Future[Fill]) -> None:
        """Fetch from the origin for the requests waiting on ``ready`` (in ``_starting``)."""
        try:
            await self._from_origin(location, ready)
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(
                    exc if isinstance(exc, Exception) else UpstreamUnavailable("fetch cancelled")
                )
                ready.exception()  # retrieved: nobody may be waiting
            raise
        finally:
            if self._starting.get(location.digest) is ready:
                del self._starting[location.digest]

    async def _check_peer_access(self, location: BlobLocation, plan: Plan) -> None:
        """A blob the cluster saw public in this repository needs no origin round trip: the
        publisher verified it as served there with no credentials, so that registry holds it
        and anyone may read it. Anything else is checked with the origin like a cached blob
        (for a registry not known to hold the blob, by fetching it from there: see access.py).
        A registry the publisher verified the blob from is known to hold it: for that one the
        check is a ``HEAD`` with the client's credentials, not a second download.
        """
        if location.registry in plan.origins:
            self.guard.vouched_by_cluster(location.registry, location.digest)
        if f"{location.registry}/{location.repo}" in plan.public_in:
            self.guard.record(
                location.registry,
                location.repo,
                location.digest,
                anonymous=True,
                used_client_auth=False,
                client_auth=None,
                verified=True,
            )
            return
        await self.guard.check(
            location.registry, location.repo, location.digest, location.client_auth, "blobs"
        )

    @property
    def _p2p_min_bytes(self) -> int:
        return self.peers.settings.min_blob_bytes if self.peers is not None else 0

    def _public_in(self, location: BlobLocation) -> frozenset[str]:
        if self.guard.is_public(location.registry, location.repo):
            return frozenset({f"{location.registry}/{location.repo}"})
        return frozenset()

    @contextlib.asynccontextmanager
    async def _registered(
        self, digest: Digest, size: int, ready: asyncio.Future[Fill]
    ) -> AsyncIterator[tuple[Fill, bool]]:
        """A new fill, visible to other requests while the body runs, once its file holds the
        disk blocks of the whole blob (:meth:`_open`): until then no client has a byte of it,
        so a full disk is a 503 for every one waiting (:class:`DiskFull` through ``ready``)."""
        pacer = self._pacers.pop(digest, None)
        not_kept = self._reserve(size, background=pacer is not None)
        keep = not_kept is None
        try:
            fill = await self._open(digest, size)
        except BaseException:
            if keep:
                self.store.unreserve(size)
            raise
        if not_kept is not None:  # said once the fill runs: a refused one says why instead
            self.metrics.fills_not_kept.labels(not_kept_reason(not_kept)).inc()
            log.warning("not caching %s: %s", digest, not_kept)
        fill.pacer, fill.not_kept = pacer, not_kept
        self.fills[digest] = fill
        ready.set_result(fill)
        self.metrics.fills_active.inc()
        try:
            yield fill, keep
        finally:
            self.metrics.fills_active.dec()
            del self.fills[digest]
            if keep and not fill.committed:  # a committed fill's reservation is its entry
                self.store.unreserve(size)

    def _reserve(self, size: int, *, background: bool) -> CacheFull | None:
        """Reserve room in the store to keep the fill; why it cannot be kept, if it cannot. A
        ``background`` fill the cache would not keep raises that instead of starting."""
        try:
            self.store.reserve(size, unwritten=self._unwritten())
        except CacheFull as exc:
            if background:
                raise
            return exc
        return None

    def _unwritten(self) -> int:
        """Bytes the fills in progress will still add to the disk: none for a preallocated one.
        A fill still taking its blocks is not counted: the filesystem's free space shows what
        it took so far, and counting all of it besides would not keep blobs the disk has room
        for (while a blob too big for the disk is being refused, say). Where the filesystem
        cannot preallocate, a fill is checked and registered with no await in between, so its
        check counts every other fill the disk has to hold."""
        return sum(fill.unallocated_bytes for fill in self.fills.values())

    async def _open(self, digest: Digest, size: int) -> Fill:
        """A new fill whose file took the disk blocks of the whole blob (:meth:`_take_disk`);
        :class:`DiskFull` when the disk cannot take it, :class:`UpstreamUnavailable` when the
        cache cannot be written at all (clients pull from the origin either way)."""
        try:
            fill = Fill(digest, self.store.temp_path(), size)
        except OSError as exc:
            raise self._unwritable(digest, size, exc) from exc
        try:
            await self._take_disk(fill)
        except BaseException as exc:
            await fill.finish(exc)  # closes and deletes its file: no reader has it
            raise
        return fill

    async def _take_disk(self, fill: Fill) -> None:
        """Preallocate the blob; when the disk is full, evict least recently used blobs nobody
        reads or pinned and try once more. Where the filesystem cannot preallocate, its free
        space must hold the blob on top of what the fills in progress have yet to write."""
        try:
            if await fill.preallocate():
                return
        except OSError as exc:
            if exc.errno not in space.NO_SPACE:
                raise self._unwritable(fill.digest, fill.size, exc) from exc
            if self.store.make_disk_room(fill.size, unwritten=self._unwritten(), keep_floor=False):
                with contextlib.suppress(OSError):
                    if await fill.preallocate():
                        return
            raise self._unwritable(fill.digest, fill.size, exc) from exc
        if not self.store.make_disk_room(fill.size, unwritten=self._unwritten(), keep_floor=False):
            raise self._unwritable(fill.digest, fill.size, OSError(errno.ENOSPC, "no room"))

    def _unwritable(self, digest: Digest, size: int, exc: OSError) -> UpstreamUnavailable:
        """Log why the cache cannot take ``digest`` (one line) and give the error its clients
        get: :class:`DiskFull` when the disk is full, with the numbers."""
        if exc.errno not in space.NO_SPACE:
            log.warning(
                "cannot write %s into the cache (%s): refusing it with 503; clients will pull it "
                "from the origin",
                digest,
                exc,
            )
            return UpstreamUnavailable(f"the mirror cannot write blob {digest}: {exc.strerror}")
        self.metrics.fills_disk_full.labels("start").inc()
        found = self.store.disk_usage()
        log.warning(
            "disk full: the cache's filesystem (%s) cannot take %s (%d bytes; %s bytes free, "
            "nothing more to evict): refusing it with 503; clients will pull it from the origin",
            self.store.root,
            digest,
            size,
            "?" if found is None else found.free,
        )
        return DiskFull(f"the mirror's cache disk has no room for blob {digest} ({size} bytes)")

    async def _complete(self, fill: Fill, keep: bool, writing: Awaitable[None]) -> None:
        """Run the writers, verify, commit (when ``keep``), and end the fill either way."""
        hashing = asyncio.create_task(fill.hash_while_filling(), name=f"hash-{fill.digest}")
        try:
            await writing
            await fill.verify()
            self.guard.fill_verified(fill)  # before the store has the blob: see there
            if keep:
                await self._commit(fill)
        except BaseException as exc:
            if isinstance(exc, DigestMismatch):
                self.metrics.verify_failures.labels(fill.source).inc()
                log.error("%s", exc)
            elif (full := space.no_space(exc)) is not None:
                self.metrics.fills_disk_full.labels("midway").inc()
                log.error(
                    "disk full while filling %s (%s) after %d of %d bytes: aborting its %d "
                    "clients' bodies; nothing of it is kept and its temp file is deleted",
                    fill.digest,
                    full.strerror,
                    fill.contiguous,
                    fill.size,
                    fill.readers,
                )
            else:
                log.warning("fetching %s failed: %s", fill.digest, exc)
            await fill.finish(exc)
            raise
        finally:
            hashing.cancel()
        await fill.finish()

    async def _commit(self, fill: Fill) -> None:
        """Rename the verified fill into the store and index it. When the disk will not (an
        fsync failing: no room for what the filesystem still had to write, an I/O error), the
        blob is served all the same, and not kept."""
        started = time.monotonic()
        try:
            await asyncio.to_thread(self.store.commit, fill.temp, fill.digest, fill.size)
        except OSError as exc:
            log.warning("not caching %s: committing it failed: %s", fill.digest, exc)
            return
        fill.committed = True
        log.debug("committed %s in %.2fs", fill.digest, time.monotonic() - started)
        self.store.add(fill.digest, fill.size, reserved=True)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
