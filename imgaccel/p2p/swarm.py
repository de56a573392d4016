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
from imgaccel.p2p.certs import FFDHE2048_PEM, NodeIdentity
from imgaccel.p2p.download import Download
from imgaccel.p2p.errors import MetainfoInvalid, P2PError
from imgaccel.p2p.exchange import Exchange
from imgaccel.p2p.metainfo import MIB, Metainfo
from imgaccel.p2p.shares import SKIP, Shares, trading

log = logging.getLogger(__name__)

LISTEN_TIMEOUT = 10.0
#: How often downloads re-split their piece shares among the peers they see.
SHARE_TICK_SECONDS = 0.2
#: How long a node that finished a download stays in its trading torrent, so the others still
#: get its share of the pieces from it.
LINGER_SECONDS = 60.0
_COUNTERS = ("net.sent_payload_bytes", "net.recv_payload_bytes", "peer.num_peers_connected")


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
        share_pieces: bool = True,
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        self.identity = identity
        self._settings = session_settings(listen)
        # Bytes/s this node uploads to peers (0: no limit), so serving the swarm cannot starve
        # the node's own pulls or its workloads.
        self._settings["upload_rate_limit"] = upload_rate_limit
        # Any other libtorrent setting, by name (scripts/bench-swarm tries variants with it).
        self._settings.update(overrides or {})
        self._stall_seconds = stall_seconds
        self._no_peers_grace = no_peers_grace
        # Downloaders ask the holders only for their share of the pieces, and trade the rest
        # in a torrent of their own (imgaccel.p2p.shares).
        self._share_pieces = share_pieces
        self._sharing: asyncio.Task[None] | None = None
        self._share_releases = 0
        self._session: Any = None
        self._pump: AlertPump | None = None
        self._torrents: dict[str, Download] = {}
        self._exchanges: dict[str, Exchange] = {}  # by the holders' (published) infohash
        self._lingering: dict[str, Download] = {}  # trading torrents of finished downloads
        self._port = 0
        self._stats_waiters: list[asyncio.Future[dict[str, int]]] = []
        self._last_stats: tuple[float, int, int] = (time.monotonic(), 0, 0)

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
        for exchange in self._exchanges.values():
            exchange.fail("swarm closed")
        for download in self._torrents.values():
            download.fail("swarm closed")
        self._torrents.clear()
        self._exchanges.clear()
        self._lingering.clear()
        pump, self._pump = self._pump, None
        assert pump is not None
        pump.stop()
        # Destroying a session joins its threads: off the loop.
        holder = [self._session, pump.detach()]
        self._session = None
        await asyncio.to_thread(holder.clear)

    async def _share_forever(self) -> None:
        while True:
            await asyncio.sleep(SHARE_TICK_SECONDS)
            for exchange in list(self._exchanges.values()):
                if exchange.shares is None:
                    continue
                released = exchange.shares.released
                holders = exchange.holders.handle
                try:
                    exchange.shares.update(holders, exchange.traders.handle)
                except RuntimeError:  # libtorrent: the torrent was removed meanwhile
                    continue
                except Exception:  # a bug here must not stop every torrent's sharing
                    log.exception("%s: piece shares failed; libtorrent picks", exchange.infohash)
                    shares, exchange.shares = exchange.shares, None
                    with contextlib.suppress(Exception):
                        shares.release(holders)
                    continue
                if exchange.shares.released and not released:
                    self._share_releases += 1
                    log.info(
                        "%s: nothing came in for %.0fs while incomplete; asking the holders "
                        "for every missing piece",
                        exchange.infohash,
                        exchange.shares.release_seconds,
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
        if isinstance(alert, lt.torrent_need_cert_alert):
            # The torrent may have been removed since libtorrent posted the alert.
            with contextlib.suppress(RuntimeError):  # libtorrent: invalid torrent handle
                self._set_certificate(alert.handle)
        elif isinstance(alert, lt.session_stats_alert):
            values = alert.values
            for waiter in self._stats_waiters:
                if not waiter.done():
                    waiter.set_result({name: int(values.get(name, 0)) for name in _COUNTERS})
            self._stats_waiters.clear()

    def _set_certificate(self, handle: Any) -> None:
        node = self.identity.node
        handle.set_ssl_certificate_buffer(
            node.cert_pem.decode(), node.key_pem.decode(), FFDHE2048_PEM.decode()
        )

    def seed(self, metainfo: Metainfo, path: Path) -> Download:
        """Seed ``path``, already verified against the blob digest, without re-hashing it."""
        return self._add(metainfo, path, seed=True)

    def download(self, metainfo: Metainfo, staging_dir: Path) -> Download | Exchange:
        """Start fetching into ``staging_dir/<name>``; the download if already started."""
        return self.download_to(metainfo, staging_dir / metainfo.name)

    def download_to(self, metainfo: Metainfo, path: Path) -> Download | Exchange:
        """Start fetching into the file ``path`` (it may exist, empty: a cache fill's temp
        file, which readers take from as pieces land; see :meth:`Download.land`). With piece
        shares, an :class:`Exchange` of the holders' and the trading torrent; the download of
        ``metainfo`` if already started."""
        if not self._share_pieces:
            return self._add(metainfo, path, seed=False)
        existing = self._exchanges.get(metainfo.infohash)
        if existing is not None:
            return existing
        trade = trading(metainfo)
        self._end_linger(metainfo.infohash)
        # Nothing is asked of the holders before the shares have looked at the traders.
        holders = self._add(_seeds_only(metainfo), path, seed=False, priority=SKIP)
        traders = self._add(trade, path, seed=False)
        exchange = Exchange(holders, traders, Shares(metainfo.infohash, metainfo.num_pieces))
        self._exchanges[metainfo.infohash] = exchange
        return exchange

    def linger(self, metainfo: Metainfo, path: Path, seconds: float = LINGER_SECONDS) -> None:
        """Seed the trading torrent of the just downloaded blob ``metainfo`` from ``path`` for
        ``seconds``: the other downloaders may still lack this node's share of the pieces."""
        if not self._share_pieces:
            return
        self._end_linger(metainfo.infohash)
        seeding = self.seed(trading(metainfo), path)
        self._lingering[metainfo.infohash] = seeding
        asyncio.get_running_loop().call_later(seconds, self._end_linger, metainfo.infohash, seeding)

    def _end_linger(self, infohash: str, only: Download | None = None) -> None:
        seeding = self._lingering.get(infohash)
        if seeding is None or (only is not None and seeding is not only):
            return
        del self._lingering[infohash]
        self._remove(seeding.infohash)

    def _add(
        self, metainfo: Metainfo, path: Path, *, seed: bool, priority: int | None = None
    ) -> Download:
        if metainfo.ssl_cert != self.identity.ca_cert_pem:
            raise MetainfoInvalid(f"{metainfo.name}: torrent is not for this cluster's CA")
        existing = self._torrents.get(metainfo.infohash)
        if existing is not None:
            return existing
        # Added paused: the certificate must be in place before the first announce, or the
        # HTTPS tracker refuses it and libtorrent waits a whole retry interval to try again.
        handle = self._session.add_torrent(_params(metainfo, path, seed=seed, priority=priority))
        self._set_certificate(handle)
        handle.resume()
        download = Download(
            handle,
            metainfo,
            path,
            stall_seconds=self._stall_seconds,
            no_peers_grace=self._no_peers_grace,
        )
        assert self._pump is not None
        download.unsubscribe = self._pump.subscribe(metainfo.infohash, download.on_alert)
        self._torrents[metainfo.infohash] = download
        return download

    def get(self, infohash: str) -> Download | Exchange | None:
        return self._exchanges.get(infohash) or self._torrents.get(infohash)

    def remove(self, infohash: str, *, delete_files: bool = False) -> None:
        """Stop seeding/downloading ``infohash`` (with its trading torrent); streams of it
        raise ``TorrentFailed``."""
        exchange = self._exchanges.pop(infohash, None)
        if exchange is not None:
            exchange.fail("torrent removed")
            self._remove(exchange.traders.infohash, delete_files=delete_files)
        self._end_linger(infohash)
        self._remove(infohash, delete_files=delete_files)

    def _remove(self, infohash: str, *, delete_files: bool = False) -> None:
        download = self._torrents.pop(infohash, None)
        if download is None:
            return
        download.fail("torrent removed")
        download.unsubscribe()
        flags = lt.session.delete_files if delete_files else 0
        self._session.remove_torrent(download.handle, flags)

    def add_peer(self, infohash: str, host: str, port: int) -> None:
        """Connect to a peer's TLS port directly (besides whatever the tracker returns); for a
        download with piece shares, in both its torrents."""
        exchange = self._exchanges.get(infohash)
        if exchange is not None:
            exchange.traders.handle.connect_peer((host, port))
        download = self._torrents.get(infohash)
        if download is None:
            raise KeyError(infohash)
        download.handle.connect_peer((host, port))

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
            share_releases=self._share_releases,
        )


def _seeds_only(metainfo: Metainfo) -> Metainfo:
    """``metainfo`` announcing for holders only (the tracker's ``seeds_only``; a tracker
    that does not know the key ignores it): a downloader has nothing to ask of another in the
    holders' torrent."""
    if metainfo.announce is None:
        return metainfo
    joiner = "&" if "?" in metainfo.announce else "?"
    return metainfo.with_announce(f"{metainfo.announce}{joiner}seeds_only=1")


def _params(metainfo: Metainfo, path: Path, *, seed: bool, priority: int | None) -> Any:
    params = lt.add_torrent_params()
    params.ti = metainfo.torrent_info()
    if priority is not None:
        params.piece_priorities = [priority] * metainfo.num_pieces
    params.save_path = str(path.parent)
    if path.name != metainfo.name:
        params.renamed_files = {0: path.name}
    flags = (params.flags & ~lt.torrent_flags.auto_managed) | lt.torrent_flags.paused
    if seed:
        flags |= lt.torrent_flags.seed_mode
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
