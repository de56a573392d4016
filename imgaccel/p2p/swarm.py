"""A node's libtorrent session, configured for one cluster.

Every torrent is an SSL torrent carrying the cluster CA (see :mod:`imgaccel.p2p.metainfo`), and
the session listens only on an SSL port: a host without a certificate from the cluster CA can
neither download from nor upload to this node. No DHT, local peer discovery, UPnP or NAT-PMP:
peers come from the tracker (the metainfo's announce URL) or from :meth:`Swarm.add_peer`.
uTP is off: inside a cluster its congestion control only slows TCP-friendly transfers down.

Tuning: ``send_buffer_watermark`` raised and ``tick_interval=100`` (reported ~310-510 MB/s on
loopback for one downloader). Measured with this module, seeder and downloader in one process on
2 cores, TLS on: ~80-135 MB/s to torrent completion for a 384-512 MB blob (about 15 % less
when the pieces were read back through ``read_piece``, as before ``Download.land``); idle CPU
~0. Torrents are never queued (``active_*`` = -1).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import libtorrent as lt

from imgaccel.address import split_listen
from imgaccel.p2p.alerts import ALERT_MASK, AlertPump
from imgaccel.p2p.calls import BlockingCalls
from imgaccel.p2p.certs import FFDHE2048_PEM, NodeIdentity
from imgaccel.p2p.download import Download
from imgaccel.p2p.errors import MetainfoInvalid, P2PError, TorrentFailed
from imgaccel.p2p.metainfo import MIB, Metainfo
from imgaccel.p2p.shares import Shares

log = logging.getLogger(__name__)

LISTEN_TIMEOUT = 10.0
#: How often downloads re-split their piece shares among the peers they see.
SHARE_TICK_SECONDS = 0.2
#: The longest wait for the alert that answers a request for torrent updates.
ALERT_ANSWER_SECONDS = 30.0
#: The longest a closing swarm waits for announces already sent to be answered (libtorrent's
#: tracker_receive_timeout): destroying the session with one in flight crashes the process.
QUIET_SECONDS = 10.0
#: How long alerts of announces sent just before the trackers were removed take to arrive.
QUIET_GRACE_SECONDS = 0.3
#: How long a closing swarm gives the announces a torrent had in flight when it was removed
#: (a download's "completed", sent as it finishes and it is removed): libtorrent reports no
#: answer of a removed torrent, so they cannot be counted, but a tracker answers in
#: milliseconds.
REMOVED_IN_FLIGHT_SECONDS = 2.0
#: How long a close waits for libtorrent to drop its torrents and peers before the session goes.
LET_GO_SECONDS = 5.0
#: The alerts that tell which announces are in flight.
_ANNOUNCE_ALERTS = (
    lt.tracker_announce_alert,
    lt.tracker_reply_alert,
    lt.tracker_error_alert,
    lt.torrent_removed_alert,
)
_COUNTERS = (
    "net.sent_payload_bytes",
    "net.recv_payload_bytes",
    "peer.num_peers_connected",
    "disk.disk_hash_time",
)


def session_settings(listen: str) -> dict[str, Any]:
    """The settings pack of a cluster session listening (TLS only) on ``HOST:PORT``."""
    host, port = split_listen(listen)
    specific = host not in ("0.0.0.0", "::")
    return {
        # The "s" suffix: an SSL listen socket (the only kind a cluster session has).
        "listen_interfaces": f"[{host}]:{port}s" if ":" in host else f"{host}:{port}s",
        # Connect from the address we listen on: peers tell nodes apart by IP (piece shares).
        "outgoing_interfaces": host if specific else "",
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "listen_system_port_fallback": False,
        "max_retry_port_bind": 0,
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        "allow_multiple_connections_per_ip": True,
        "send_buffer_watermark": 8 * MIB,
        "send_buffer_low_watermark": 1 * MIB,
        "tick_interval": 100,
        "unchoke_slots_limit": -1,
        # A downloader waiting for another's piece share has nothing to ask of the seeds just
        # then; closing those connections would hide which pieces the others have (with them
        # closed, 7 downloaders took 1.92 x S/B_link in scripts/bench-swarm instead of 1.54 x).
        # The cost: connections between two seeds stay open, idle. They are bounded by
        # connections_limit, and libtorrent closes one to admit a new peer at the limit (tried:
        # a seed at its limit with only idle seed connections still served a new downloader).
        "close_redundant_connections": False,
        # Torrents are not queued: every blob seeds and downloads at once.
        "active_downloads": -1,
        "active_seeds": -1,
        "active_limit": -1,
        # A peer that went away (restart, stall) may come back soon inside a cluster.
        "min_reconnect_time": 1,
        "stop_tracker_timeout": 1,
        "alert_mask": ALERT_MASK,
        "alert_queue_size": 100_000,
        "user_agent": "imgaccel",
    }


@dataclass(frozen=True)
class SwarmStats:
    """Counters for metrics; totals are payload bytes since the session started."""

    upload_rate: float
    download_rate: float
    total_uploaded: int
    total_downloaded: int
    peers: int
    share_releases: int = 0
    hash_microseconds: int = 0  # libtorrent's time hashing pieces: downloaded, not seeded


class Swarm:
    """Owns one ``lt.session``; an async context manager."""

    def __init__(
        self,
        identity: NodeIdentity,
        *,
        listen: str = "0.0.0.0:6881",
        stall_seconds: float = 5.0,
        no_peers_grace: float = 2.0,
        upload_rate_limit: int = 0,
        disk_threads: int = 2,
        share_pieces: bool = True,
        share_window: int = 0,
        announce: str | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        self.identity = identity
        # The tracker every torrent announces to, whatever its metainfo names: a torrent keeps
        # the announce URL of the node that made it (in the cache's meta.db, and as published),
        # which is not this cluster's tracker any more once the tracker moved (None: the
        # metainfo's own).
        self._announce = announce
        self._listen = listen
        self._settings = session_settings(listen)
        # Bytes/s this node uploads to peers (0: no limit), so serving the swarm cannot starve
        # the node's own pulls or its workloads.
        self._settings["upload_rate_limit"] = upload_rate_limit
        self._settings["aio_threads"] = disk_threads
        # Any other libtorrent setting, by name (scripts/bench-swarm tries variants with it).
        self._settings.update(overrides or {})
        self._stall_seconds = stall_seconds
        self._no_peers_grace = no_peers_grace
        # Downloaders ask the seeds only for their share of the pieces (imgaccel.p2p.shares).
        self._share_pieces = share_pieces
        # Pieces of its share a downloader asks for first, front to back (0: all at once).
        self._share_window = share_window
        self._sharing: asyncio.Task[None] | None = None
        self._calls = BlockingCalls()  # libtorrent calls in worker threads, drained on close
        self._share_releases = 0
        self._session: Any = None
        self._pump: AlertPump | None = None
        self._torrents: dict[str, Download] = {}
        self._seeding: set[str] = set()  # infohashes of torrents added as seeds
        self._unannounced: dict[str, str] = {}  # infohash -> its tracker, not given it yet
        self._port = 0
        self._stats_waiters: list[asyncio.Future[dict[str, int]]] = []
        self._update_waiters: list[asyncio.Future[dict[str, int]]] = []
        self._uploaded: dict[str, int] = {}  # infohash -> payload sent, at the last look
        self._last_stats: tuple[float, int, int] = (time.monotonic(), 0, 0)
        self._announcing: dict[Any, int] = {}  # torrent handle -> announces in flight
        self._all_answered = asyncio.Event()  # set while no announce is in flight
        self._all_answered.set()
        self._quiet = False  # no announce any more: closing
        #: Until when announces of removed torrents may still be in flight (monotonic).
        self._orphans_until = 0.0

    async def __aenter__(self) -> Swarm:
        # The binding takes a plain dict; its stubs only list settings_pack.
        self._session = lt.session(self._settings)  # type: ignore[call-overload]
        _one_peer_class(self._session)
        self._pump = AlertPump(self._session)
        listening = asyncio.get_running_loop().create_future()
        stop = self._pump.subscribe(None, lambda a: self._on_session_alert(a, listening))
        self._pump.start()
        try:
            async with asyncio.timeout(LISTEN_TIMEOUT):
                self._port = await listening
        except BaseException:
            await self._close()
            raise
        finally:
            stop()
        self._pump.subscribe(None, self._on_alert)
        if self._share_pieces:
            self._sharing = asyncio.create_task(self._share_forever(), name="swarm-shares")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._close()

    async def _close(self) -> None:
        if self._sharing is not None:
            self._sharing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sharing
            self._sharing = None
        await self.quiet()
        for download in self._torrents.values():
            download.fail("swarm closed")
        await self._let_go()
        self._torrents.clear()
        # A share update or a landing's poll may still be in a thread, its caller cancelled:
        # libtorrent must not see its session destroyed under it.
        await self._calls.drain()
        pump, self._pump = self._pump, None
        assert pump is not None
        pump.stop()
        # Destroying a session with announces to an HTTPS tracker in flight crashes the
        # libtorrent 2.1 wheel ("engine: null ssl ctx", or a segfault; tests/p2p/test_shutdown.py);
        # quiet() let those end, and no torrent names a tracker any more to say "stopped" to.
        self._session.apply_settings({"stop_tracker_timeout": 0})
        # Destroying a session joins its threads: off the loop.
        holder = [self._session, pump.detach()]
        self._session = None
        await asyncio.to_thread(holder.clear)

    async def _let_go(self) -> None:
        """Before the session is destroyed: pause it (its peers disconnected, none accepted),
        remove every torrent, and wait until libtorrent has let go of them and of every peer
        connection, at most ``LET_GO_SECONDS``. The destructor would otherwise tear all that
        down under work in flight (TLS shutdowns, disk jobs): the 2.1 wheel has crashed there,
        in the close of nodes that had just traded blobs with each other."""
        self._session.pause()
        handles = self._session.get_torrents()  # every torrent the session still has
        for handle in handles:
            with contextlib.suppress(RuntimeError):  # libtorrent: removed meanwhile
                self._session.remove_torrent(handle)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(LET_GO_SECONDS):
                # libtorrent's own state, polled: no alert says "no peer left".
                while any(handle.is_valid() for handle in handles):  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
                while (await self.stats()).peers:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
                return
        log.warning("closing with torrents or peer connections libtorrent still holds")

    async def quiet(self) -> None:
        """Stop talking to the tracker, for good: no torrent names one any more (so nothing
        announces, not even "stopped": the node says it leaves in one call, see
        :meth:`imgaccel.tracker.client.TrackerClient.left`), and the announces already sent
        have been answered, or ``QUIET_SECONDS`` passed. Called when the swarm closes."""
        if self._quiet:
            return
        self._quiet = True
        for infohash in self.infohashes():
            with contextlib.suppress(RuntimeError):  # libtorrent: removed meanwhile
                self._torrents[infohash].handle.replace_trackers([])
        await asyncio.sleep(max(QUIET_GRACE_SECONDS, self._orphans_until - time.monotonic()))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(QUIET_SECONDS):
                await self._all_answered.wait()
        if self._announcing:
            log.warning("closing with %d announces unanswered", self.announces_in_flight)

    def _count_announces(self, alert: Any) -> None:
        """Keep count of the announces in flight, by torrent: a removed torrent's are not
        answered to us (libtorrent posts no alert of a torrent it no longer has)."""
        handle = alert.handle
        if isinstance(alert, lt.torrent_removed_alert):
            self._announcing.pop(handle, None)
        elif isinstance(alert, lt.tracker_announce_alert):
            if handle.is_valid():  # else removed since: nothing will be said of it
                self._announcing[handle] = self._announcing.get(handle, 0) + 1
        elif (left := self._announcing.get(handle, 0) - 1) > 0:  # a reply or an error
            self._announcing[handle] = left
        else:
            self._announcing.pop(handle, None)
        if self._announcing:
            self._all_answered.clear()
        else:
            self._all_answered.set()

    async def _share_forever(self) -> None:
        while True:
            await asyncio.sleep(SHARE_TICK_SECONDS)
            # One torrent after another: their calls queue for libtorrent's one network thread
            # anyway, and a Shares is never updated by two threads at once.
            for download in list(self._torrents.values()):
                current = self._torrents.get(download.infohash) is download  # not removed since
                if current and download.shares is not None:
                    await self._share(download, download.shares)

    async def _share(self, download: Download, shares: Shares) -> None:
        """Update ``download``'s piece shares in a worker thread (:mod:`imgaccel.p2p.calls`)."""
        released = shares.released
        try:
            await self._calls.run(shares.update, download.handle)
        except RuntimeError:  # libtorrent: the torrent was removed meanwhile
            return
        except Exception:  # a bug here must not stop every torrent's sharing
            log.exception("%s: piece shares failed; libtorrent picks", download.infohash)
            download.shares = None
            with contextlib.suppress(Exception):
                shares.release(download.handle)  # only posts the priorities: on the loop
            return
        if shares.released and not released:
            self._share_releases += 1
            log.info(
                "%s: nothing to fetch for %.0fs while incomplete; piece shares dropped",
                download.infohash,
                shares.release_seconds,
            )

    @property
    def port(self) -> int:
        """The bound TLS port (the real one when the listen port was 0)."""
        return self._port

    def _on_session_alert(self, alert: Any, listening: asyncio.Future[int]) -> None:
        if listening.done():
            return
        if isinstance(alert, lt.listen_succeeded_alert):
            if alert.socket_type == lt.socket_type_t.tcp_ssl:
                listening.set_result(alert.port)
        elif isinstance(alert, lt.listen_failed_alert):
            listening.set_exception(P2PError(f"cannot listen: {alert.message()}"))

    def _on_alert(self, alert: Any) -> None:
        if isinstance(alert, _ANNOUNCE_ALERTS):
            self._count_announces(alert)
        elif isinstance(alert, lt.torrent_need_cert_alert):
            # The torrent may have been removed since libtorrent posted the alert.
            with contextlib.suppress(RuntimeError):  # libtorrent: invalid torrent handle
                self._set_certificate(alert.handle)
        elif isinstance(alert, lt.session_stats_alert):
            values = alert.values
            for waiter in self._stats_waiters:
                if not waiter.done():
                    waiter.set_result({name: int(values.get(name, 0)) for name in _COUNTERS})
            self._stats_waiters.clear()
        elif isinstance(alert, lt.state_update_alert):
            totals = {
                str(status.info_hashes.v1): int(status.total_payload_upload)
                for status in alert.status
            }
            for update in self._update_waiters:
                if not update.done():
                    update.set_result(totals)
            self._update_waiters.clear()

    def _set_certificate(self, handle: Any) -> None:
        node = self.identity.node
        handle.set_ssl_certificate_buffer(
            node.cert_pem.decode(), node.key_pem.decode(), FFDHE2048_PEM.decode()
        )

    def seed(self, metainfo: Metainfo, path: Path, *, announce: bool = True) -> Download:
        """Seed ``path``, already verified against the blob digest, without re-hashing it.
        ``announce=False``: say nothing to the tracker until :meth:`reannounce` (the node joins
        the swarm by its ``/v1/alive`` call instead: one for a whole cache, where libtorrent
        would announce each torrent, a TLS handshake for the tracker each).

        Like every way of adding a torrent, raises a :class:`P2PError` (``MetainfoInvalid``,
        ``TorrentFailed``) when the torrent is not for this cluster or libtorrent refuses it."""
        return self._add(metainfo, path, seed=True, announce=announce)

    def download(self, metainfo: Metainfo, staging_dir: Path) -> Download:
        """Start fetching into ``staging_dir/<name>``; the torrent's Download if already added."""
        return self._add(metainfo, staging_dir / metainfo.name, seed=False)

    def download_to(self, metainfo: Metainfo, path: Path) -> Download:
        """Start fetching into the file ``path`` (it may exist, empty: a cache fill's temp
        file, which readers take from as pieces land; see :meth:`Download.land`)."""
        return self._add(metainfo, path, seed=False)

    def _add(
        self, metainfo: Metainfo, path: Path, *, seed: bool, announce: bool = True
    ) -> Download:
        if metainfo.ssl_cert != self.identity.ca_cert_pem:
            raise MetainfoInvalid(f"{metainfo.name}: torrent is not for this cluster's CA")
        existing = self._torrents.get(metainfo.infohash)
        if existing is not None:
            return existing
        tracker = self._announce or metainfo.announce
        # The same infohash either way: the tracker's URL is outside the info dict.
        metainfo = metainfo.with_announce(tracker if announce else None)
        # Added paused: the certificate must be in place before the first announce, or the
        # HTTPS tracker refuses it and libtorrent waits a whole retry interval to try again.
        params = _params(metainfo, path, seed=seed)  # MetainfoInvalid if libtorrent refuses it
        try:
            handle = self._session.add_torrent(params)
        except RuntimeError as exc:  # libtorrent: the session would not take it
            raise TorrentFailed(f"{metainfo.name}: libtorrent cannot add it: {exc}") from exc
        self._set_certificate(handle)
        handle.resume()
        download = Download(
            handle,
            metainfo,
            path,
            stall_seconds=self._stall_seconds,
            no_peers_grace=self._no_peers_grace,
            calls=self._calls,
        )
        if self._share_pieces and not seed:
            download.shares = Shares(
                metainfo.infohash, metainfo.num_pieces, window=self._share_window
            )
        assert self._pump is not None
        download.unsubscribe = self._pump.subscribe(metainfo.infohash, download.on_alert)
        self._torrents[metainfo.infohash] = download
        if seed:
            self._seeding.add(metainfo.infohash)
        if tracker is not None and not announce:
            self._unannounced[metainfo.infohash] = tracker
        return download

    def get(self, infohash: str) -> Download | None:
        return self._torrents.get(infohash)

    def __len__(self) -> int:
        """Torrents in the session: seeded and downloading."""
        return len(self._torrents)

    @property
    def announces_in_flight(self) -> int:
        """Announces sent to the tracker and not answered yet."""
        return sum(self._announcing.values())

    def infohashes(self) -> list[str]:
        """The torrents in the session that announce to a tracker, or would (hex)."""
        return [
            h
            for h, d in self._torrents.items()
            if self._announce or d.metainfo.announce or h in self._unannounced
        ]

    def downloading(self) -> list[str]:
        """The torrents of :meth:`infohashes` that are not seeds (hex)."""
        return [h for h in self.infohashes() if h not in self._seeding]

    @property
    def announced_ip(self) -> str | None:
        """The address peers reach this node at, when it listens on one (the announces go out
        from it); None when it listens on all (the tracker takes the address they come from)."""
        host, _ = split_listen(self._listen)
        return None if host in ("0.0.0.0", "::") else host

    def remove(self, infohash: str, *, delete_files: bool = False) -> None:
        """Stop seeding/downloading; streams of it raise ``TorrentFailed``.

        Says nothing to the tracker: libtorrent would announce "stopped", and of a removed
        torrent it reports no answer, so a close could not wait for it (destroying the session
        with it in flight crashes the wheel). The node's peer is replaced when the blob is
        seeded next (a download that ends), or is said to have left by
        :meth:`imgaccel.proxy.peers.PeerNetwork.forget` (an eviction)."""
        download = self._torrents.pop(infohash, None)
        if download is None:
            return
        self._seeding.discard(infohash)
        self._unannounced.pop(infohash, None)
        download.fail("torrent removed")
        download.unsubscribe()
        with contextlib.suppress(RuntimeError):  # libtorrent: invalid handle
            download.handle.replace_trackers([])  # before the removal, in libtorrent's queue
        if self._announcing.get(download.handle):
            self._orphans_until = time.monotonic() + REMOVED_IN_FLIGHT_SECONDS
        flags = lt.session.delete_files if delete_files else 0
        self._session.remove_torrent(download.handle, flags)

    def reopen(self, infohash: str) -> None:
        """Have libtorrent close the torrent's file (a flush does), so that it opens the file
        at its path again when next read: another inode is there now, the old one's disk space
        is given back once closed (see :mod:`imgaccel.cache.containerd`)."""
        download = self._torrents.get(infohash)
        if download is not None:
            with contextlib.suppress(RuntimeError):  # libtorrent: removed meanwhile
                download.handle.flush_cache()

    def reannounce(self, infohash: str) -> None:
        """Announce the torrent to its tracker now: one that restarted does not know this peer
        until the next periodic announce (minutes, or longer after failed announces). A seed
        added with ``announce=False`` is given its tracker first, and announces from then on."""
        download = self._torrents.get(infohash)
        if download is not None:
            with contextlib.suppress(RuntimeError):  # libtorrent: removed meanwhile
                if (tracker := self._unannounced.pop(infohash, None)) is not None:
                    download.handle.add_tracker({"url": tracker, "tier": 0})
                # The tracker's min interval is for a tracker that remembers this peer.
                download.handle.force_reannounce(0, -1, lt.reannounce_flags_t.ignore_min_interval)

    def add_peer(self, infohash: str, host: str, port: int) -> None:
        """Connect to a peer's TLS port directly (besides whatever the tracker returns)."""
        download = self._torrents.get(infohash)
        if download is None:
            raise KeyError(infohash)
        download.handle.connect_peer((host, port))

    async def uploaded(self) -> list[str]:
        """The names of this swarm's torrents that sent peers data since the previous call.
        libtorrent reports only the torrents whose status changed, so a node seeding thousands
        of blobs pays for the few that peers are fetching."""
        update: asyncio.Future[dict[str, int]] = asyncio.get_running_loop().create_future()
        self._update_waiters.append(update)
        self._session.post_torrent_updates(0)  # no piece bitfields: payload counters suffice
        try:
            # libtorrent always answers, if only with an empty list; an alert lost to a full
            # queue must not stop the caller's loop for good.
            async with asyncio.timeout(ALERT_ANSWER_SECONDS):
                totals = await update
        except TimeoutError:
            log.warning("libtorrent did not answer a torrent-updates request")
            return []
        # A torrent added again (a download that became a seed) counts from 0 again.
        grown = [
            torrent.metainfo.name
            for infohash, sent in totals.items()
            if sent and sent != self._uploaded.get(infohash)
            if (torrent := self._torrents.get(infohash)) is not None
        ]
        self._uploaded.update(totals)
        # Forget removed torrents (evicted blobs): a long-running node adds and removes many.
        self._uploaded = {h: n for h, n in self._uploaded.items() if h in self._torrents}
        return grown

    async def stats(self) -> SwarmStats:
        """Payload totals and rates (averaged since the previous call) and connected peers."""
        waiter: asyncio.Future[dict[str, int]] = asyncio.get_running_loop().create_future()
        self._stats_waiters.append(waiter)
        self._session.post_session_stats()
        counters = await waiter
        sent, received = counters[_COUNTERS[0]], counters[_COUNTERS[1]]
        now = time.monotonic()
        then, sent_before, received_before = self._last_stats
        self._last_stats = (now, sent, received)
        elapsed = max(now - then, 1e-6)
        return SwarmStats(
            upload_rate=(sent - sent_before) / elapsed,
            download_rate=(received - received_before) / elapsed,
            total_uploaded=sent,
            total_downloaded=received,
            peers=counters[_COUNTERS[2]],
            hash_microseconds=counters[_COUNTERS[3]],
            share_releases=self._share_releases,
        )


def _params(metainfo: Metainfo, path: Path, *, seed: bool) -> Any:
    params = lt.add_torrent_params()
    params.ti = metainfo.torrent_info()
    params.save_path = str(path.parent)
    if path.name != metainfo.name:
        params.renamed_files = {0: path.name}
    flags = (params.flags & ~lt.torrent_flags.auto_managed) | lt.torrent_flags.paused
    if seed:
        flags |= lt.torrent_flags.seed_mode
        # Every piece is verified already: the blob's sha256 was checked, and the piece hashes
        # were computed from the same bytes. Without this, seed mode hashes each piece again on
        # its first upload (one more SHA-1 pass over every blob a node shares), and a peer
        # checks every piece it receives anyway.
        params.verified_pieces = [True] * metainfo.num_pieces
    params.flags = flags
    return params


def _one_peer_class(session: Any) -> None:
    """Put every peer in the global peer class. libtorrent exempts LAN peers from rate limits
    by default, and inside a cluster every peer is on the LAN: the upload limit would be void."""
    everyone = lt.ip_filter()
    only_global = 1 << lt.session.global_peer_class_id
    everyone.add_rule("0.0.0.0", "255.255.255.255", only_global)
    everyone.add_rule("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", only_global)
    session.set_peer_class_filter(everyone)
