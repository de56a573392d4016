"""A node stopped while libtorrent still talks to the tracker exits cleanly.

Found with a node whose tracker had forgotten its 100 cached blobs: it re-published and
re-announced them all at start, and when it was stopped right after, destroying the libtorrent
session (which announces "stopped" for every torrent and waits for the answers) crashed the
process, every time: a segfault or ``engine: null ssl ctx``. Run in a subprocess, since what is
tested is that the process survives.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from imgaccel.cache.meta import MetaStore
from imgaccel.oci.digest import Digest
from imgaccel.p2p.certs import CA_CERT, NODE_CERT, NODE_KEY, KeyPair
from imgaccel.p2p.metainfo import PieceHasher
from imgaccel.proxy.peers import torrent_bytes, torrent_name
from tests.p2p_fixtures import certs_dir

pytestmark = pytest.mark.system

BLOBS = 100

#: Starts a tracker that knows nothing (a fresh data dir) and a P2P node on the cache, waits
#: until the node has seeded, re-published and re-announced every blob, then stops both.
STOP_AFTER_START = textwrap.dedent(
    """
    import asyncio, logging, sys
    from pathlib import Path
    from aiohttp import web
    from imgaccel.p2p.certs import CA_CERT, NODE_CERT, NODE_KEY, KeyPair
    from imgaccel.proxy.app import make_app
    from imgaccel.proxy.state import NODE
    from imgaccel.settings import load_settings
    from imgaccel.tracker import TrackerSettings, running

    root = Path(sys.argv[1])
    certs = root / "certs"
    logging.basicConfig(level=logging.INFO)

    async def main() -> None:
        tracker_settings = TrackerSettings(
            listen="127.0.0.1:0", data_dir=root / "tracker", ca_cert=certs / CA_CERT,
            cert=certs / NODE_CERT, key=certs / NODE_KEY,
        )
        async with running(tracker_settings) as tracker:
            p2p = {"tracker_url": tracker.url, "certs_dir": str(certs),
                   "listen": "127.0.0.1:0", "node_id": "n1"}
            settings = load_settings(
                None, listen="127.0.0.1:0", cache={"dir": str(root / "cache")}, p2p=p2p
            )
            app = make_app(settings)
            runner = web.AppRunner(app)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            await asyncio.wait_for(app[NODE].fetcher.peers.reseeded.wait(), 60)
            await runner.cleanup()
        print("stopped", flush=True)

    asyncio.run(main())
    """
)


def _cache_with_torrents(root: Path, count: int, ca_pem: bytes) -> None:
    """``count`` small blobs in the cache, each with its torrent in meta.db."""
    blobs = root / "cache" / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    meta = MetaStore(root / "cache" / "meta.db")
    try:
        for _ in range(count):
            data = os.urandom(4096)
            digest = Digest.parse(f"sha256:{hashlib.sha256(data).hexdigest()}")
            (blobs / digest.hex).write_bytes(data)
            hasher = PieceHasher(len(data))
            hasher.update(data)
            metainfo = hasher.finish(torrent_name(digest), ssl_cert=ca_pem)
            meta.put_torrent(digest, torrent_bytes(metainfo, frozenset({"registry.test"})))
    finally:
        meta.close()


def test_a_node_stopped_right_after_re_publishing_its_cache_exits_cleanly(
    tmp_path: Path, cluster_ca: KeyPair
) -> None:
    certs = certs_dir(tmp_path / "certs", cluster_ca)
    assert {CA_CERT, NODE_CERT, NODE_KEY} <= {p.name for p in certs.iterdir()}
    _cache_with_torrents(tmp_path, BLOBS, (certs / CA_CERT).read_bytes())

    done = subprocess.run(
        [sys.executable, "-c", STOP_AFTER_START, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout == "stopped\n"
    assert f"seeding {BLOBS} cached blobs ({BLOBS} published again)" in done.stderr
