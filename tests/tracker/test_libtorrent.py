"""Real libtorrent against the tracker: two sessions find each other only through it.

The torrent is an SSL torrent carrying the cluster CA and the tracker is HTTPS with client
certificates required: this is also the proof that libtorrent 2.1 presents a torrent's
certificate to its tracker, which the tracker's authentication design rests on.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import libtorrent as lt
import pytest

from imgaccel import bencode
from imgaccel.p2p.certs import KeyPair, issue, make_ca
from imgaccel.tracker import TrackerSettings, running
from imgaccel.tracker.state import STATE

PIECE = 16384
SETTINGS = {
    "listen_interfaces": "127.0.0.1:0s",
    "enable_dht": False,
    "enable_lsd": False,
    "enable_upnp": False,
    "enable_natpmp": False,
    "enable_outgoing_utp": False,
    "enable_incoming_utp": False,
    "allow_multiple_connections_per_ip": True,
    "alert_mask": lt.alert_category.error | lt.alert_category.tracker,
    "stop_tracker_timeout": 1,
}


def _torrent(data: bytes, ca: KeyPair, announce: str) -> bytes:
    """A v1 single-file SSL torrent named by the blob digest, as the engine makes them."""
    pieces = b"".join(
        hashlib.sha1(data[i : i + PIECE]).digest() for i in range(0, len(data), PIECE)
    )
    name = "sha256-" + hashlib.sha256(data).hexdigest()
    info = {
        "length": len(data),
        "name": name,
        "piece length": PIECE,
        "pieces": pieces,
        "ssl-cert": ca.cert_pem,
    }
    return bencode.encode({"announce": announce, "info": info})


@pytest.fixture
def certs(tmp_path: Path) -> Iterator[tuple[KeyPair, Path]]:
    ca = make_ca()
    directory = tmp_path / "certs"
    ca.write(directory, "ca.crt", "ca.key")
    issue(ca).write(directory, "tracker.crt", "tracker.key")
    issue(ca).write(directory, "node.crt", "node.key")
    yield ca, directory


@pytest.fixture
async def tracker(tmp_path: Path, certs: tuple[KeyPair, Path]) -> AsyncIterator[tuple[str, Any]]:
    directory = certs[1]
    settings = TrackerSettings(
        listen="127.0.0.1:0",
        data_dir=tmp_path / "state",
        ca_cert=directory / "ca.crt",
        cert=directory / "tracker.crt",
        key=directory / "tracker.key",
    )
    async with running(settings) as served:
        yield served.url, served.app


def _add(session: Any, torrent: bytes, save_path: Path, certs: Path, *, seed: bool) -> Any:
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(torrent)
    params.save_path = str(save_path)
    params.flags = (params.flags | lt.torrent_flags.paused) & ~lt.torrent_flags.auto_managed
    if seed:
        params.flags |= lt.torrent_flags.seed_mode
    handle = session.add_torrent(params)
    # The certificate must be in place before the first announce: set it, then resume.
    handle.set_ssl_certificate(str(certs / "node.crt"), str(certs / "node.key"), "")
    handle.resume()
    return handle


async def _until(predicate: Any, sessions: list[Any], seconds: float, what: str) -> None:
    log: list[str] = []
    try:
        async with asyncio.timeout(seconds):
            while True:
                if predicate():
                    return
                for session in sessions:
                    log += [a.message() for a in session.pop_alerts()]
                await asyncio.sleep(0.1)
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}; alerts:\n" + "\n".join(log[-30:]))


async def test_two_sessions_find_each_other_through_the_tracker(
    tmp_path: Path, certs: tuple[KeyPair, Path], tracker: tuple[str, Any]
) -> None:
    (ca, cert_dir), (url, app) = certs, tracker
    state = app[STATE]
    data = os.urandom(10 * PIECE + 123)
    torrent = _torrent(data, ca, f"{url}/announce")
    name = bencode.decode(bencode.raw_value(torrent, b"info"))[b"name"]  # type: ignore[index]
    seed_dir, leech_dir = tmp_path / "seed", tmp_path / "leech"
    seed_dir.mkdir()
    (seed_dir / name.decode()).write_bytes(data)
    seeder, leecher = lt.session(SETTINGS), lt.session(SETTINGS)
    sessions = [seeder, leecher]

    _add(seeder, torrent, seed_dir, cert_dir, seed=True)
    await _until(lambda: state.swarms.peer_count() == 1, sessions, 15, "the seeder's announce")
    handle = _add(leecher, torrent, leech_dir, cert_dir, seed=False)
    await _until(lambda: handle.status().is_seeding, sessions, 20, "the download")

    assert (leech_dir / name.decode()).read_bytes() == data
    await _until(lambda: state.swarms.peer_count() == 2, sessions, 5, "both peers announced")
    # Shut the sessions down while the tracker still answers their "stopped" announces.
    # (a session's destructor blocks until then, so it runs off the event loop).
    del seeder, leecher
    await asyncio.to_thread(sessions.clear)
