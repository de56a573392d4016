"""A peer-to-peer node's cache of many small blobs with their torrents, and an ``imgaccel
tracker`` process over mTLS on loopback, for the benchmarks of a node seeding a big cache
(``scripts/bench-start``, ``scripts/bench-tracker``)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from imgaccel.cache.meta import MetaStore
from imgaccel.oci.digest import Digest
from imgaccel.p2p.certs import CA_CERT, NODE_CERT, NODE_KEY, KeyPair, issue, make_ca
from imgaccel.p2p.metainfo import PieceHasher
from imgaccel.proxy.peers import torrent_bytes, torrent_name
from imgaccel.testing.procs import terminate


def write_certs(root: Path) -> KeyPair:
    """A cluster CA and one certificate (``*``) for the tracker and the node, in ``root/certs``
    as ``imgaccel certs`` writes them; the CA."""
    ca = make_ca("bench")
    certs = root / "certs"
    certs.mkdir()
    ca.write(certs, CA_CERT, "ca.key")
    issue(ca, "*").write(certs, NODE_CERT, NODE_KEY)
    return ca


def make_cache(root: Path, blobs: int, ca_pem: bytes, announce: str) -> None:
    """``blobs`` blobs of 16 KiB in ``root/cache``, each with its torrent announcing to
    ``announce``, as the node makes them."""
    directory = root / "cache" / "blobs" / "sha256"
    directory.mkdir(parents=True)
    meta = MetaStore(root / "cache" / "meta.db")
    try:
        for _ in range(blobs):
            data = os.urandom(16384)
            digest = Digest.parse(f"sha256:{hashlib.sha256(data).hexdigest()}")
            (directory / digest.hex).write_bytes(data)
            hasher = PieceHasher(len(data))
            hasher.update(data)
            metainfo = hasher.finish(torrent_name(digest), ssl_cert=ca_pem, announce=announce)
            meta.put_torrent(digest, torrent_bytes(metainfo, frozenset({"registry.bench"})))
    finally:
        meta.close()


@contextlib.asynccontextmanager
async def tracker_process(root: Path) -> AsyncIterator[tuple[str, int]]:
    """``imgaccel tracker`` on a free loopback port with the certificates of ``root/certs``,
    its data in ``root/tracker`` and its log in ``root/tracker.log`` (a pipe nobody reads would
    stop it once full); yields its URL and PID."""
    certs = root / "certs"
    log = root / "tracker.log"
    with log.open("wb") as sink:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "imgaccel", "tracker", "--listen", "127.0.0.1:0",
            "--data-dir", str(root / "tracker"), "--ca-cert", str(certs / CA_CERT),
            "--cert", str(certs / NODE_CERT), "--key", str(certs / NODE_KEY),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=sink,
        )  # fmt: skip
    try:
        for _ in range(200):
            if match := re.search(r"listening on (\S+)", log.read_text()):
                break
            await asyncio.sleep(0.1)
        else:
            raise SystemExit(f"the tracker did not start: {log.read_text()[-2000:]}")
        yield match.group(1), proc.pid
    finally:
        await terminate(proc)
