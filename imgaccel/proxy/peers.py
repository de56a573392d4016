"""The node's side of peer-to-peer: the libtorrent swarm plus the tracker, for the fetcher.

On a cache miss the fetcher asks :meth:`PeerNetwork.plan`: when a peer published the blob's
torrent, the blob comes from the swarm (and from the origin, from the byte the swarm reached, if
it stalls); otherwise the tracker's election says whether this node fetches from the origin
(and then publishes) or waits for the node or seeder that does. An unreachable tracker means
"go to the origin": peer-to-peer never fails a pull.

Every blob this node commits is seeded from the cache file itself (``seed_mode``: no re-hash);
its torrent is kept in the metadata store so a restarted node seeds everything again and
re-publishes what a restarted tracker forgot (in the background: the mirror listens at once).
Every torrent announces to this node's tracker, whichever one its metainfo names; the seeds of
a restart announce nothing at first, the node joins their swarms with one ``/v1/alive`` call.
The empty blob is never shared (libtorrent has no torrent of no bytes), and a torrent
libtorrent refuses is dropped, never a reason to fail.

A cached blob with no torrent (one another process committed: ``imgaccel snapshot import``) is
shared once the node indexes it (:meth:`PeerNetwork.share`: its rescan, its start, a miss that
finds the file): a background task reads each such file once, one at a time in a thread, for
its piece hashes and its digest, and publishes it only when the bytes are still the digest
(the import verified them; this node vouches for what it publishes, as for what it fetched).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import shutil
import socket
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import aiohttp

from imgaccel import bencode
from imgaccel.cache.fill import Fill
from imgaccel.cache.meta import MetaStore
from imgaccel.cache.store import BlobStore
from imgaccel.errors import ConfigError, DigestInvalid
from imgaccel.oci.digest import Digest
from imgaccel.p2p.certs import NodeIdentity
from imgaccel.p2p.download import Download
from imgaccel.p2p.errors import MetainfoInvalid, P2PError
from imgaccel.p2p.metainfo import Metainfo, PieceHasher
from imgaccel.p2p.swarm import Swarm
from imgaccel.settings import P2PSettings
from imgaccel.tracker.auth import client_context
from imgaccel.tracker.client import TrackerClient, TrackerError
from imgaccel.upstream.blobs import BlobLocation

log = logging.getLogger(__name__)

#: The fetch lease assumed when the tracker names none.
DEFAULT_LEASE_SECONDS = 60.0
#: How often a running node tells the tracker what it holds again: a tracker that lost its
#: state (a new volume) learns the torrents back within this time, not at the nodes' restarts.
RESYNC_SECONDS = 600.0
#: Longest time between two calls telling the tracker which torrents this node holds (the
#: tracker's interval when shorter): its default announce interval, a third of its peer ttl.
ALIVE_SECONDS = 60.0
#: The longest a stopping node waits for the tracker to take note (one that is down must not
#: hold a shutdown).
LEAVE_SECONDS = 2.0
#: How long evictions gather before the tracker is told, in one call, that the node left
#: those swarms (an eviction for room takes many blobs at once).
DEPARTURES_SECONDS = 1.0
#: How often blobs peers are fetching from this node count as used in the cache's LRU order.
UPLOADS_SECONDS = 10.0
#: Cached blobs seeded at start between two turns of the loop.
RESEED_BATCH = 64
#: Publishes to the tracker in flight at once when it forgot this node's blobs.
PUBLISH_AT_ONCE = 8

#: A top-level .torrent key (outside the info dict, so the infohash is unchanged): the
#: ``registry/repository`` names the publisher saw serve this blob with no credentials at all.
#: (Torrents of earlier versions carry ``imgaccel-public``, whose names may have been served to
#: the publisher's own credentials: that key is not read.)
PUBLIC_KEY = b"imgaccel-anonymous"
#: Another: the registries the blob was fetched from and verified against (its provenance,
#: see imgaccel.proxy.access). A node that gets the blob from peers checks a client's access
#: with one of these (a HEAD) instead of fetching the whole blob from it again.
ORIGINS_KEY = b"imgaccel-origins"


@dataclass(frozen=True)
class Plan:
    """Where a missing blob should come from."""

    metainfo: Metainfo | None = None  # from peers
    public_in: frozenset[str] = frozenset()  # repositories a peer saw it public in
    origins: frozenset[str] = frozenset()  # registries a peer verified it from
    elected: bool = False  # this node fetches from the origin for the cluster
    lease_seconds: float = DEFAULT_LEASE_SECONDS  # the tracker's lease on that claim


def torrent_name(digest: Digest) -> str:
    return f"{digest.algorithm}-{digest.hex}"


def torrent_digest(name: str) -> Digest:
    """The blob of a torrent named by :func:`torrent_name`; DigestInvalid for any other name."""
    return Digest.parse(name.replace("-", ":", 1))


def parse_torrent(data: bytes) -> tuple[Metainfo, frozenset[str], frozenset[str]]:
    """The metainfo, and the ``imgaccel-anonymous`` and ``imgaccel-origins`` names."""
    metainfo = Metainfo.from_bytes(data)
    torrent = bencode.decode(data)
    return metainfo, _names(torrent, PUBLIC_KEY), _names(torrent, ORIGINS_KEY)


def _names(torrent: object, key: bytes) -> frozenset[str]:
    names = torrent.get(key, []) if isinstance(torrent, dict) else []
    if not isinstance(names, list):
        return frozenset()
    return frozenset(n.decode(errors="replace") for n in names if isinstance(n, bytes))


def torrent_bytes(
    metainfo: Metainfo, public_in: frozenset[str], origins: frozenset[str] = frozenset()
) -> bytes:
    torrent = bencode.decode(metainfo.to_bytes())
    assert isinstance(torrent, dict)
    if public_in:
        torrent[PUBLIC_KEY] = [name.encode() for name in sorted(public_in)]
    if origins:
        torrent[ORIGINS_KEY] = [name.encode() for name in sorted(origins)]
    return bencode.encode(torrent)


class PeerNetwork:
    """The swarm and the tracker client of one node (an async context manager)."""

    def __init__(self, settings: P2PSettings, store: BlobStore, meta: MetaStore) -> None:
        if not settings.tracker_url:
            raise ConfigError("peer-to-peer needs p2p.tracker_url (--tracker)")
        if settings.certs_dir is None:
            raise ConfigError(
                "peer-to-peer needs the cluster certificates: set p2p.certs_dir to a directory "
                "with ca.crt, node.crt and node.key (`imgaccel certs init` / `certs issue`)"
            )
        self.settings = settings
        self.store = store
        self.meta = meta
        self.node_id = settings.node_id or socket.gethostname()
        self.tracker_url = settings.tracker_url.rstrip("/")
        self.identity = NodeIdentity.load(settings.certs_dir)
        self._old_staging = store.root / "p2p"  # downloads went there before they shared the fill
        self.swarm: Swarm | None = None
        self.tracker: TrackerClient | None = None
        self._http: aiohttp.ClientSession | None = None
        self._bad: dict[Digest, float] = {}  # torrents that failed verification, until
        self._claims: dict[Digest, bool] = {}  # claims held now: published yet?
        self.resync_seconds = RESYNC_SECONDS
        self._resync: asyncio.Task[None] | None = None
        self._to_share: asyncio.Queue[Digest] = asyncio.Queue()  # cached blobs with no torrent
        self._queued: set[Digest] = set()  # in _to_share, or being read
        self._sharer: asyncio.Task[None] | None = None
        self._uploads: asyncio.Task[None] | None = None
        self.uploads_seconds = UPLOADS_SECONDS
        self._alive: asyncio.Task[None] | None = None
        self.alive_seconds = ALIVE_SECONDS
        self._departed: set[str] = set()  # torrents of evicted blobs the tracker was not told of
        self._departing = asyncio.Event()
        self._departures: asyncio.Task[None] | None = None
        #: When the tracker last took this node's alive call (Unix time), and since when and
        #: why the calls fail (None: the last one went through), for ``imgaccel status``.
        self.tracker_answered: float | None = None
        self.tracker_failing: tuple[float, str] | None = None
        self._reseeding: asyncio.Task[None] | None = None
        #: Set once every cached blob with a torrent is seeded and the tracker told of it.
        self.reseeded = asyncio.Event()

    @property
    def announce_url(self) -> str:
        return f"{self.tracker_url}/announce"

    async def __aenter__(self) -> PeerNetwork:
        shutil.rmtree(self._old_staging, ignore_errors=True)
        certs = self.settings.certs_dir
        assert certs is not None
        ssl_context = (
            client_context(certs / "ca.crt", certs / "node.crt", certs / "node.key")
            if self.tracker_url.startswith("https://")
            else None
        )
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.settings.tracker_timeout_seconds)
        )
        self.tracker = TrackerClient(
            self.tracker_url, self._http, node=self.node_id, ssl_context=ssl_context
        )
        self.swarm = Swarm(
            self.identity,
            listen=self.settings.listen,
            stall_seconds=self.settings.stall_seconds,
            no_peers_grace=self.settings.no_peers_seconds,
            upload_rate_limit=self.settings.upload_rate_limit,
            disk_threads=self.settings.disk_threads,
            share_pieces=self.settings.share_pieces,
            share_window=self.settings.share_window_pieces,
            announce=self.announce_url,
        )
        await self.swarm.__aenter__()
        log.info(
            "peer-to-peer: node %s, libtorrent on port %d, tracker %s",
            self.node_id,
            self.swarm.port,
            self.tracker_url,
        )
        # Seeding the cache is the swarm's business, not the mirror's: the node listens at once
        # and seeds in the background. Adding a torrent costs libtorrent about a millisecond, and
        # publishing one again to a tracker that forgot it a round trip: 2000 cached blobs held
        # the mirror's start 20 s (measured with a tracker that had lost its data), longer than a
        # liveness probe waits for a seeder's cache of tens of thousands.
        self._reseeding = asyncio.create_task(self._reseed_in_background(), name="p2p-reseed")
        self._resync = asyncio.create_task(self._resync_forever(), name="p2p-resync")
        self._sharer = asyncio.create_task(self._share_forever(), name="p2p-share")
        self._uploads = asyncio.create_task(self._uploads_forever(), name="p2p-uploads")
        self._alive = asyncio.create_task(self._alive_forever(), name="p2p-alive")
        self._departures = asyncio.create_task(self._departures_forever(), name="p2p-departures")
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        tasks = (self._reseeding, self._resync, self._sharer, self._uploads, self._alive)
        for task in (*tasks, self._departures):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.swarm is not None:
            await self.swarm.quiet()  # nothing in flight that could put the node back
            await self._leave()
            await self.swarm.__aexit__(et, e, tb)
        if self._http is not None:
            await self._http.close()

    # -- seeding what the cache holds ----------------------------------------------------------

    async def _reseed_in_background(self) -> None:
        assert self.swarm is not None and self.tracker is not None
        try:
            # Say first that this node will keep its peers alive (nothing held yet): the
            # tracker then has its seeds announce rarely from their first announce on.
            with contextlib.suppress(TrackerError):
                await self.alive(held=False)
            await self.reseed()
            # The cache's seeds said nothing to the tracker: this call puts them in their
            # swarms (else the next one does, a minute later).
            with contextlib.suppress(TrackerError):
                await self.alive()
        except Exception:  # the blobs are still served from the cache; resync retries publishing
            log.exception("seeding the cached blobs failed")
        finally:
            self.reseeded.set()

    async def reseed(self) -> None:
        """Seed every cached blob that has a torrent; re-publish what the tracker forgot; queue
        the others to be shared (:meth:`share`). Lets the loop serve between every
        ``RESEED_BATCH`` blobs; a blob evicted meanwhile has no torrent left to seed."""
        assert self.swarm is not None and self.tracker is not None
        held: dict[str, bytes] = {}
        started = time.monotonic()
        for number, (digest, _entry) in enumerate(self.store.entries(), 1):
            if number % RESEED_BATCH == 0:
                await asyncio.sleep(0)
            data = self.meta.torrent(digest)
            if data is None:
                self.share([digest])
                continue
            try:
                metainfo = parse_torrent(data)[0]
                # Not an announce per blob: the alive call after the reseed joins them all.
                self.swarm.seed(metainfo, self.store.path(digest), announce=False)
            except P2PError as exc:  # malformed, or refused by libtorrent: serve, don't share
                log.warning("dropping the torrent of %s: %s", digest, exc)
                self.meta.delete_torrent(digest)
                continue
            held[str(digest)] = data
        if not held:
            return
        published = await self._republish_forgotten(held)
        log.info(
            "seeding %d cached blobs (%d published again) after %.1f s",
            len(held),
            published,
            time.monotonic() - started,
        )

    async def _republish_forgotten(self, held: dict[str, bytes]) -> int:
        """Publish the torrents (by digest) the tracker does not know, ``PUBLISH_AT_ONCE`` at a
        time; how many that was (0 when the tracker failed: the next resync tries again)."""
        assert self.tracker is not None and self.swarm is not None
        tracker = self.tracker
        at_once = asyncio.Semaphore(PUBLISH_AT_ONCE)

        async def publish(digest_text: str) -> None:
            async with at_once:
                await tracker.publish(digest_text, held[digest_text])

        failed: TrackerError | None = None
        unknown: list[str] = []
        try:
            unknown = await tracker.holdings(list(held))
            async with asyncio.TaskGroup() as group:
                for digest_text in unknown:
                    group.create_task(publish(digest_text))
        except* TrackerError as errors:
            failed = errors.exceptions[0]  # type: ignore[assignment]
        if failed is not None:
            log.warning("could not re-publish %d blobs to the tracker: %s", len(held), failed)
            return 0
        return len(unknown)

    async def resync(self) -> int:
        """Re-publish what the tracker forgot of the torrents this node seeds; how many."""
        held = {
            str(digest): data
            for digest, _entry in self.store.entries()
            if (data := self.meta.torrent(digest)) is not None
        }
        if not held:
            return 0
        count = await self._republish_forgotten(held)
        if count:
            log.warning("the tracker had forgotten %d blobs of this node; published again", count)
            with contextlib.suppress(TrackerError):  # the next call says it, a minute later
                await self.alive()  # in their swarms again (it forgot the peers too)
        return count

    async def _resync_forever(self) -> None:
        while True:
            await asyncio.sleep(self.resync_seconds)
            try:
                await self.resync()
            except Exception:  # the next round may work; this task must not end unseen
                log.exception("re-publishing to the tracker failed")

    async def alive(self, *, held: bool = True) -> float:
        """Tell the tracker which torrents this node still seeds or downloads (one call for
        all: libtorrent would announce each of them every 5 minutes, and the tracker forgets a
        peer after 3), and announce again the ones it has no peer of ours in; the seconds
        within which to tell it again. ``held=False``: name none (the call before seeding)."""
        assert self.swarm is not None and self.tracker is not None
        try:
            interval, unknown = await self.tracker.alive(
                self.swarm.port,
                self.swarm.infohashes() if held else [],
                self.swarm.announced_ip,
                downloading=self.swarm.downloading() if held else [],
            )
        except TrackerError as exc:
            if self.tracker_failing is None:
                self.tracker_failing = (time.time(), str(exc))
            raise
        self.tracker_answered, self.tracker_failing = time.time(), None
        for infohash in unknown:
            self.swarm.reannounce(infohash)
        if unknown:
            log.info("announcing %d torrents again: the tracker had no peer of ours", len(unknown))
        return interval

    async def _leave(self) -> None:
        """Tell the tracker this node stops, so that it hands it out to no one (else it would
        for its peer ttl, 3 minutes); at most ``LEAVE_SECONDS``, the tracker may be down."""
        assert self.swarm is not None and self.tracker is not None
        gone = [*self.swarm.infohashes(), *self._departed]
        try:
            async with asyncio.timeout(LEAVE_SECONDS):
                await self.tracker.left(self.swarm.port, gone, self.swarm.announced_ip)
        except (TrackerError, TimeoutError) as exc:
            log.warning("could not tell the tracker this node stops: %s", exc)

    async def _departures_forever(self) -> None:
        """Tell the tracker, in one call for what a second evicted, that this node left the
        swarms of evicted blobs: else it would hand the node out for them for its peer ttl,
        and peers asking in that time would find nobody there. (Not libtorrent's "stopped"
        announces: see :meth:`imgaccel.p2p.swarm.Swarm.remove`.)"""
        assert self.swarm is not None and self.tracker is not None
        while True:
            await self._departing.wait()
            await asyncio.sleep(DEPARTURES_SECONDS)
            self._departing.clear()
            # Not one that is back in the swarm: fetched and seeded again since its eviction.
            self._departed = {h for h in self._departed if self.swarm.get(h) is None}
            gone = sorted(self._departed)
            if not gone:
                continue
            try:
                removed = await self.tracker.left(
                    self.swarm.port, gone, self.swarm.announced_ip, stopping=False
                )
            except TrackerError as exc:  # the tracker forgets them after its peer ttl
                log.warning("could not tell the tracker of %d evicted blobs: %s", len(gone), exc)
            except Exception:  # the next round may work; this task must not end unseen
                log.exception("telling the tracker of evicted blobs failed")
            else:
                log.info("left the swarms of %d evicted blobs (%d peers)", len(gone), removed)
            self._departed.difference_update(gone)  # (a close meanwhile says them once more)

    async def _alive_forever(self) -> None:
        # The first call an interval after the reseed announced the cache: before those
        # announces landed, every torrent would be unknown and announced twice.
        await self.reseeded.wait()
        interval = self.alive_seconds
        while True:
            await asyncio.sleep(interval)
            try:
                interval = min(await self.alive(), self.alive_seconds)
            except TrackerError as exc:
                log.warning("could not tell the tracker which blobs this node holds: %s", exc)
            except Exception:  # the next round may work; this task must not end unseen
                log.exception("telling the tracker which blobs this node holds failed")

    async def _uploads_forever(self) -> None:
        """Mark the blobs peers are fetching from this node as used, so that eviction (quota,
        or a disk containerd fills) takes a blob nobody wants before one a scale-out is pulling
        through this node: evicting that sends every peer still downloading it to the origin."""
        assert self.swarm is not None
        while True:
            await asyncio.sleep(self.uploads_seconds)
            try:
                for name in await self.swarm.uploaded():
                    with contextlib.suppress(DigestInvalid):  # not a torrent of this node's
                        self.store.lookup(torrent_digest(name))
            except Exception:  # the next round may work; this task must not end unseen
                log.exception("reading which blobs peers fetch failed")

    # -- sharing cached blobs that have no torrent ---------------------------------------------

    def share(self, digests: Iterable[Digest]) -> int:
        """Queue cached blobs that have no torrent (imported by another process) to be seeded
        and published in the background, each read once, one blob at a time, in a thread; how
        many of ``digests`` were queued now (not the empty blob, one with a torrent, or one
        queued already)."""
        queued = 0
        for digest in digests:
            if digest in self._queued or not self.store.size_of(digest):
                continue
            if self.meta.torrent(digest) is not None:
                continue
            self._queued.add(digest)
            self._to_share.put_nowait(digest)
            queued += 1
        return queued

    async def _share_forever(self) -> None:
        while True:
            digest = await self._to_share.get()
            try:
                # Looked at again: evicted, or given a torrent by a republish, since queued.
                size = self.store.size_of(digest)
                if size and self.meta.torrent(digest) is None:
                    await self._publish_from_file(digest, size)
            except Exception:  # the next blob may do better; this task must not end unseen
                log.exception("sharing %s with peers failed", digest)
            finally:
                self._queued.discard(digest)

    def forget(self, digest: Digest) -> None:
        """The store evicted ``digest``: stop seeding it, and tell the tracker soon."""
        infohash = self._infohash_of(digest)
        if infohash is not None and self.swarm is not None and self.swarm.get(infohash) is not None:
            self.swarm.remove(infohash)
            self._departed.add(infohash)
            self._departing.set()
        self.meta.delete_torrent(digest)

    def reopen(self, digest: Digest) -> None:
        """The cache's file of ``digest`` is another inode now (the same bytes): libtorrent
        must stop reading the old one, whose disk space it would otherwise hold."""
        infohash = self._infohash_of(digest)
        if infohash is not None and self.swarm is not None:
            self.swarm.reopen(infohash)

    def _infohash_of(self, digest: Digest) -> str | None:
        """The infohash of the torrent this node keeps for ``digest``, if any."""
        data = self.meta.torrent(digest)
        if data is None:
            return None
        try:
            return parse_torrent(data)[0].infohash
        except MetainfoInvalid:
            return None

    # -- deciding where a missing blob comes from -------------------------------------------

    async def plan(self, location: BlobLocation) -> Plan:
        """Ask the tracker (see the module docstring); never raises for tracker trouble."""
        assert self.tracker is not None
        digest = location.digest
        if digest.hex == digest.hasher().hexdigest():
            return Plan()  # the empty blob: never shared (see the module docstring)
        if self._bad.get(digest, 0) > time.monotonic():
            return Plan()
        deadline = time.monotonic() + self.settings.wait_seconds
        try:
            while True:
                data = await self.tracker.get_metainfo(str(digest))
                if data is not None:
                    return self._plan_from(data)
                claim = await self.tracker.claim(
                    str(digest),
                    role=self.settings.role,
                    registry=location.registry,
                    repository=location.repo,
                )
                if claim.fetch:
                    return Plan(elected=True, lease_seconds=claim.lease_seconds)
                left = deadline - time.monotonic()
                if left <= 0:
                    log.warning(
                        "%s: waited %.0fs for %s; going to the origin",
                        digest,
                        self.settings.wait_seconds,
                        claim.holder,
                    )
                    return Plan()
                log.info(
                    "%s: %s fetches it for the cluster; waiting", digest, claim.holder or "a peer"
                )
                data = await self.tracker.get_metainfo(
                    str(digest), wait=min(left, max(claim.lease_seconds, 1.0))
                )
                if data is not None:
                    return self._plan_from(data)
        except (TrackerError, MetainfoInvalid) as exc:
            log.warning("tracker unavailable for %s (%s); going to the origin", digest, exc)
            return Plan()

    def _plan_from(self, data: bytes) -> Plan:
        metainfo, public, origins = parse_torrent(data)
        if metainfo.ssl_cert != self.identity.ca_cert_pem:
            raise MetainfoInvalid("the published torrent is not for this cluster's CA")
        return Plan(metainfo=metainfo, public_in=public, origins=origins)

    @contextlib.asynccontextmanager
    async def holding(
        self, digest: Digest, lease_seconds: float = DEFAULT_LEASE_SECONDS
    ) -> AsyncIterator[None]:
        """Renew this node's fetch claim, at a third of the tracker's lease, while the body
        runs; then release it unless the body published the blob (see :meth:`publish`). A
        claim left to lapse (a failed fetch, a blob not kept or not shared, a publish the
        tracker missed) would keep the nodes waiting for it idle for the rest of the lease."""
        assert self.tracker is not None
        tracker = self.tracker
        period = (lease_seconds if lease_seconds > 0 else DEFAULT_LEASE_SECONDS) / 3

        async def renew() -> None:
            while True:
                await asyncio.sleep(period)
                with contextlib.suppress(TrackerError):
                    await tracker.renew(str(digest))

        task = asyncio.create_task(renew(), name=f"renew-{digest}")
        self._claims[digest] = False
        try:
            yield
        finally:
            task.cancel()
            if not self._claims.pop(digest, False):
                await self._release(digest)

    async def _release(self, digest: Digest) -> None:
        assert self.tracker is not None
        try:
            await self.tracker.release(str(digest))
        except TrackerError as exc:  # the lease lapses on its own
            log.warning("could not release the claim on %s: %s", digest, exc)

    # -- moving bytes --------------------------------------------------------------------------

    def hasher(self, size: int) -> PieceHasher | None:
        """The piece hasher for a blob of ``size`` bytes; None for the empty blob (not shared)."""
        return PieceHasher(size) if size > 0 else None

    async def download_into(self, fill: Fill, metainfo: Metainfo) -> None:
        """Download the blob with libtorrent writing straight into ``fill``'s file (one write
        of every byte, no copy through Python); each verified piece lands in the fill once it
        is on disk. On a stall, raises :class:`~imgaccel.p2p.errors.P2PError` after every
        piece libtorrent verified has landed: the caller fetches only the gaps elsewhere.

        Whatever happens, the torrent is paused (its disk I/O over, its file closed) and removed
        before this returns, so no late block of libtorrent's lands in a gap another writer
        fills, and the fill may rename its file. The file itself is never deleted here.
        """
        assert self.swarm is not None
        if (stale := self.swarm.get(metainfo.infohash)) is not None and stale.path != fill.temp:
            self.swarm.remove(metainfo.infohash)  # a download left by an earlier fill
        download = self.swarm.download_to(metainfo, fill.temp)
        landed: set[int] = set()
        limit = _pace(download, fill, None)
        try:
            async for batch in download.land():
                await _land(fill, metainfo, batch, landed)
                limit = _pace(download, fill, limit)
        except P2PError:
            await download.stop_writing()  # after it, every verified piece is on disk
            await _land(fill, metainfo, download.pieces_had(), landed)
            raise
        finally:
            try:
                await download.stop_writing()
            finally:  # a disk thread too slow to confirm the pause must not leave the torrent
                self.swarm.remove(metainfo.infohash)

    def distrust(self, digest: Digest, seconds: float = 600.0) -> None:
        """The swarm's torrent for ``digest`` produced a blob that failed its digest."""
        self._bad[digest] = time.monotonic() + seconds

    async def publish(
        self,
        digest: Digest,
        metainfo: Metainfo,
        public_in: frozenset[str],
        origins: frozenset[str] = frozenset(),
    ) -> bool:
        """Seed the committed blob from the cache and tell the tracker this node has it;
        whether the tracker took it. A torrent libtorrent refuses is neither stored nor
        published: the blob is served from the cache all the same. ``public_in`` and
        ``origins`` travel in the torrent (see :data:`PUBLIC_KEY`, :data:`ORIGINS_KEY`)."""
        assert self.swarm is not None
        try:
            self.swarm.seed(metainfo, self.store.path(digest))
        except P2PError as exc:
            log.warning("not sharing %s: %s", digest, exc)
            return False
        data = torrent_bytes(metainfo, public_in, origins)
        self.meta.put_torrent(digest, data)
        return await self._tell_tracker(digest, data)

    async def republish(self, digest: Digest) -> bool:
        """Seed and publish the stored torrent of a cached blob (the tracker asked for a blob
        this node holds: it lost the torrent, or the publish failed); whether the tracker took
        it. A cached blob with no torrent (a snapshot import, or one whose torrent was dropped)
        gets one made from its file. Without a torrent to publish, release this node's claim:
        the nodes waiting for it then fetch at once instead of when the lease lapses."""
        assert self.swarm is not None
        data = self.meta.torrent(digest)
        entry = self.store.lookup(digest) if data is None else None  # the cluster wants it
        if entry is not None and await self._publish_from_file(digest, entry.size):
            return True
        if data is not None:
            try:
                metainfo = parse_torrent(data)[0]
                self.swarm.seed(metainfo, self.store.path(digest))
                self.swarm.reannounce(metainfo.infohash)  # a seeding torrent announces rarely
            except P2PError as exc:
                log.warning("dropping the torrent of %s: %s", digest, exc)
                self.meta.delete_torrent(digest)
                data = None
        if data is not None and await self._tell_tracker(digest, data):
            return True
        await self._release(digest)
        return False

    async def _publish_from_file(self, digest: Digest, size: int) -> bool:
        """Make the torrent of a cached blob of ``size`` bytes from its file (read once, in a
        thread, the blob held meanwhile; its digest checked in the same pass) and publish it;
        whether the tracker took it. A file that is no longer its digest (damaged on disk) is
        removed from the cache, never published. The torrent says which registries the blob
        was verified from, and no repository public: a node then asks the origin whether its
        client may read it (a HEAD), as for any private layer from peers."""
        if size == 0:
            return False
        hasher, check = PieceHasher(size), digest.hasher()
        self.store.acquire(digest)
        try:
            await asyncio.to_thread(_hash_file, self.store.path(digest), hasher, check)
            metainfo = self.metainfo_of(hasher, digest)  # MetainfoInvalid: not `size` bytes
        except (OSError, MetainfoInvalid) as exc:
            log.warning("could not make the torrent of %s: %s", digest, exc)
            return False
        finally:
            self.store.release(digest)
        if check.hexdigest() != digest.hex:
            log.error("cached blob %s does not match its digest: removed, not shared", digest)
            self.store.remove(digest)
            return False
        log.info("made the torrent of %s (%d bytes) from the cache", digest, size)
        return await self.publish(digest, metainfo, frozenset(), self.meta.origins_of(digest))

    async def _tell_tracker(self, digest: Digest, data: bytes) -> bool:
        assert self.tracker is not None
        try:
            await self.tracker.publish(str(digest), data)
        except TrackerError as exc:
            log.warning("could not publish %s to the tracker: %s", digest, exc)
            return False
        if digest in self._claims:
            self._claims[digest] = True  # the publish ended the claim
        return True

    def metainfo_of(self, hasher: PieceHasher, digest: Digest) -> Metainfo:
        return hasher.finish(
            torrent_name(digest), ssl_cert=self.identity.ca_cert_pem, announce=self.announce_url
        )


def _hash_file(path: Path, hasher: PieceHasher, check: hashlib._Hash, chunk: int = 4 << 20) -> None:
    """Feed the file at ``path`` to ``hasher`` and ``check`` (blocking: in a thread)."""
    with open(path, "rb", buffering=0) as f:
        buffer = bytearray(chunk)
        view = memoryview(buffer)
        while n := f.readinto(buffer):
            hasher.update(view[:n])
            check.update(view[:n])


async def _land(fill: Fill, metainfo: Metainfo, pieces: list[int], landed: set[int]) -> None:
    """Land ``pieces`` (verified and on disk) in ``fill``, each once."""
    for index in pieces:
        if index not in landed:
            landed.add(index)
            start = index * metainfo.piece_length
            await fill.land(start, start + metainfo.piece_size(index), source="peer")


def _pace(download: Download, fill: Fill, applied: int | None) -> int:
    """Keep the torrent's download limit at the fill's budget while nobody reads the fill (a
    background fetch), unlimited otherwise; returns the limit now applied (0: none)."""
    pacer = fill.pacer_now()
    limit = pacer.rate if pacer is not None else 0
    if limit != (applied or 0):  # a torrent starts unlimited: nothing to say until paced
        download.handle.set_download_limit(limit)
    return limit
