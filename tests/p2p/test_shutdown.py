"""A node stopped while libtorrent still talks to the tracker exits cleanly.

Found with a node whose tracker had forgotten its 100 cached blobs: it re-published and
re-announced them all at start, and when it was stopped right after, destroying the libtorrent
session (which announces "stopped" for every torrent and waits for the answers) crashed the
process, every time: a segfault or ``engine: null ssl ctx``. Then, with the "stopped" announces
sent first and waited for (at most 2 s), again with 600 blobs and the tracker in a process of
its own, as in a cluster: most of them were still in flight after the 2 s (crashed in 2 of 2
runs of this test's script, and 3 of 3 of ``scripts/bench-tracker`` with 2000 blobs). Now no
torrent announces "stopped" (the node tells the tracker it leaves in one call) and the close
waits for the announces in flight. Run in a subprocess, since what is tested is that the
process survives.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from imgaccel.p2p.certs import CA_CERT, NODE_CERT, NODE_KEY, KeyPair
from tests.p2p_fixtures import certs_dir

pytestmark = pytest.mark.system

BLOBS = 600

#: Starts a tracker process that knows nothing (a fresh data dir) and a P2P node on a cache of
#: BLOBS blobs with torrents, waits until the node has seeded, re-published and re-announced
#: every blob, then stops both.
STOP_AFTER_START = textwrap.dedent(
    """
    import asyncio, logging, sys
    from pathlib import Path
    from aiohttp import web
    from imgaccel.p2p.certs import CA_CERT
    from imgaccel.proxy.app import make_app
    from imgaccel.proxy.state import NODE
    from imgaccel.settings import load_settings
    from imgaccel.testing.seeding import make_cache, tracker_process

    root, blobs = Path(sys.argv[1]), int(sys.argv[2])
    certs = root / "certs"
    logging.basicConfig(level=logging.INFO)

    async def main() -> None:
        async with tracker_process(root) as (url, _):
            make_cache(root, blobs, (certs / CA_CERT).read_bytes(), f"{url}/announce")
            p2p = {"tracker_url": url, "certs_dir": str(certs),
                   "listen": "127.0.0.1:0", "node_id": "n1"}
            settings = load_settings(
                None, listen="127.0.0.1:0", cache={"dir": str(root / "cache")}, p2p=p2p
            )
            app = make_app(settings)
            runner = web.AppRunner(app)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            await asyncio.wait_for(app[NODE].fetcher.peers.reseeded.wait(), 60)
            await asyncio.sleep(3)  # running a while
            await runner.cleanup()
        print("stopped", flush=True)

    asyncio.run(main())
    """
)


def test_a_node_stopped_right_after_re_publishing_its_cache_exits_cleanly(
    tmp_path: Path, cluster_ca: KeyPair
) -> None:
    certs = certs_dir(tmp_path / "certs", cluster_ca)
    assert {CA_CERT, NODE_CERT, NODE_KEY} <= {p.name for p in certs.iterdir()}

    done = subprocess.run(
        [sys.executable, "-c", STOP_AFTER_START, str(tmp_path), str(BLOBS)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout == "stopped\n"
    assert f"seeding {BLOBS} cached blobs ({BLOBS} published again)" in done.stderr
