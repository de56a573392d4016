"""What a cluster certificate that is not valid now (expired, or not yet valid) does: libtorrent
peers and the tracker refuse it at the TLS handshake, in both directions, so a node holding one
gets nothing from the cluster and goes to the origin. Nothing renews certificates: hence the
expiry gauge, the doctor checks and the start-up warning (tests/ops/test_certificate_expiry.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from imgaccel.p2p.certs import CA_CERT, NODE_CERT, NODE_KEY, KeyPair, NodeIdentity, issue
from imgaccel.p2p.errors import P2PError
from imgaccel.tracker import TrackerSettings, running
from imgaccel.tracker.auth import client_context

from .dated_certs import dated_pair, days_from_now
from .helpers import Blob, SwarmFactory, collect, land_checked

#: Validity windows that do not hold now: one ended yesterday, one starts tomorrow.
NOT_NOW = {
    "expired": (-30, -1),
    "not yet valid": (1, 30),
}


def _dated(ca: KeyPair, window: tuple[int, int]) -> KeyPair:
    return dated_pair(ca, days_from_now(window[0]), days_from_now(window[1]))


async def test_a_dated_certificate_valid_now_gets_the_blob(
    make_swarm: SwarmFactory, blob: Blob, ca: KeyPair, tmp_path: Path
) -> None:
    # The control for the refusals below: the same kind of certificate, valid now, works.
    identity = NodeIdentity(ca.cert_pem, _dated(ca, (-1, 30)))
    async with make_swarm() as seeder, make_swarm(identity) as leecher:
        seeder.seed(blob.metainfo, blob.path)
        download = leecher.download(blob.metainfo, tmp_path / "dl")
        leecher.add_peer(blob.metainfo.infohash, "127.0.0.1", seeder.port)
        assert await collect(download) == blob.data


@pytest.mark.parametrize("window", NOT_NOW.values(), ids=NOT_NOW.keys())
@pytest.mark.parametrize("holder", ["leecher", "seeder"])
async def test_libtorrent_refuses_a_peer_whose_certificate_is_not_valid_now(
    make_swarm: SwarmFactory,
    blob: Blob,
    ca: KeyPair,
    tmp_path: Path,
    holder: str,
    window: tuple[int, int],
) -> None:
    dated = NodeIdentity(ca.cert_pem, _dated(ca, window))
    async with (
        make_swarm(dated if holder == "seeder" else None) as seeder,
        make_swarm(dated if holder == "leecher" else None, stall_seconds=2.0) as leecher,
    ):
        seeder.seed(blob.metainfo, blob.path)
        download = leecher.download(blob.metainfo, tmp_path / "dl")
        leecher.add_peer(blob.metainfo.infohash, "127.0.0.1", seeder.port)
        landed: list[int] = []
        with pytest.raises(P2PError):  # NoPeers: the handshake never completes
            await land_checked(download, blob.data, landed)
        assert landed == []
        assert (await seeder.stats()).total_uploaded == 0


def _certs(root: Path, ca: KeyPair, pair: KeyPair) -> Path:
    root.mkdir(parents=True)
    (root / CA_CERT).write_bytes(ca.cert_pem)
    pair.write(root, NODE_CERT, NODE_KEY)
    return root


@contextlib.asynccontextmanager
async def _tracker(root: Path, certs: Path) -> AsyncIterator[str]:
    settings = TrackerSettings(
        listen="127.0.0.1:0",
        data_dir=root / "tracker",
        ca_cert=certs / CA_CERT,
        cert=certs / NODE_CERT,
        key=certs / NODE_KEY,
    )
    async with running(settings) as served:
        yield served.url


async def _healthz(url: str, certs: Path) -> int:
    context = client_context(certs / CA_CERT, certs / NODE_CERT, certs / NODE_KEY)
    async with aiohttp.ClientSession() as http, http.get(f"{url}/healthz", ssl=context) as r:
        return r.status


@pytest.mark.parametrize("window", NOT_NOW.values(), ids=NOT_NOW.keys())
async def test_the_tracker_refuses_a_node_whose_certificate_is_not_valid_now(
    ca: KeyPair, tmp_path: Path, window: tuple[int, int]
) -> None:
    good = _certs(tmp_path / "good", ca, issue(ca))
    dated = _certs(tmp_path / "dated", ca, _dated(ca, window))
    async with _tracker(tmp_path, good) as url:
        assert await _healthz(url, good) == 200
        # The tracker ends the handshake: the node sees the connection close, not a reason.
        with pytest.raises(aiohttp.ClientError) as refused:
            await _healthz(url, dated)
    assert not isinstance(refused.value, aiohttp.ClientConnectorCertificateError)


@pytest.mark.parametrize(
    ("window", "reason"),
    [(NOT_NOW["expired"], "certificate has expired"), (NOT_NOW["not yet valid"], "not yet valid")],
    ids=NOT_NOW.keys(),
)
async def test_a_node_refuses_a_tracker_whose_certificate_is_not_valid_now(
    ca: KeyPair, tmp_path: Path, window: tuple[int, int], reason: str
) -> None:
    node = _certs(tmp_path / "node", ca, issue(ca))
    async with _tracker(tmp_path, _certs(tmp_path / "dated", ca, _dated(ca, window))) as url:
        with pytest.raises(aiohttp.ClientConnectorCertificateError) as refused:
            await _healthz(url, node)
    assert reason in str(refused.value.certificate_error)
