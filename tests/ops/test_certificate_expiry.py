"""Cluster certificates end, and nothing renews them: the expiry gauge on the node's, the
seeder's and the tracker's ``/metrics``, the start-up log line, and doctor's verdict on
``node.crt`` and ``ca.crt``. (What an expired certificate does to peers and the tracker:
tests/p2p/test_certificate_expiry.py; doctor against a live node and tracker: test_doctor.py.)
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families

from imgaccel.ops import certificates
from imgaccel.ops.check import Status
from imgaccel.p2p.certs import CA_CERT, NODE_CERT, NODE_KEY, KeyPair, issue, make_ca
from imgaccel.seeder import make_app as make_seeder_app
from imgaccel.settings import load_settings
from imgaccel.tracker import Served, TrackerSettings, running
from tests.p2p.dated_certs import dated_ca, dated_pair, days_from_now

from .conftest import get

GAUGE = "imgaccel_certificate_expiry_timestamp_seconds"


def write(root: Path, ca: KeyPair, pair: KeyPair) -> Path:
    """``root`` with ``ca.crt``, ``node.crt`` and ``node.key``, as ``certs issue`` writes them."""
    root.mkdir(parents=True, exist_ok=True)
    (root / CA_CERT).write_bytes(ca.cert_pem)
    pair.write(root, NODE_CERT, NODE_KEY)
    return root


def not_after(pem: bytes) -> float:
    return x509.load_pem_x509_certificate(pem).not_valid_after_utc.timestamp()


async def expiry(url: str) -> dict[str, float]:
    """The gauge's samples at ``url``/metrics, by their ``cert`` label."""
    status, body = await get(f"{url}/metrics")
    assert status == 200
    return {
        sample.labels["cert"]: sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
        if sample.name == GAUGE
    }


def p2p(tracker: str, certs: Path, name: str = "n1") -> dict[str, Any]:
    return {"tracker_url": tracker, "listen": "127.0.0.1:0", "node_id": name, "certs_dir": certs}


# -- the metric ---------------------------------------------------------------------------------


async def test_a_node_exports_when_its_certificate_and_its_ca_end(
    node_factory: Callable[..., Any], plain_tracker: str, cluster_ca: KeyPair, tmp_path: Path
) -> None:
    pair = issue(cluster_ca, days=10)
    node = await node_factory(p2p=p2p(plain_tracker, write(tmp_path / "tls", cluster_ca, pair)))

    assert await expiry(node.url) == {
        "node": not_after(pair.cert_pem),
        "ca": not_after(cluster_ca.cert_pem),
    }


async def test_a_node_without_peer_to_peer_exports_no_certificate(
    node_factory: Callable[..., Any],
) -> None:
    node = await node_factory()

    assert await expiry(node.url) == {}


async def test_a_seeder_exports_when_its_certificate_and_its_ca_end(
    plain_tracker: str, cluster_ca: KeyPair, tmp_path: Path
) -> None:
    pair = issue(cluster_ca, days=20)
    certs = write(tmp_path / "tls", cluster_ca, pair)
    settings = load_settings(
        None, cache={"dir": str(tmp_path / "cache")}, p2p=p2p(plain_tracker, certs, "seeder-0")
    )
    seeder = TestServer(make_seeder_app(settings), host="127.0.0.1", port=0)
    await seeder.start_server()
    try:
        found = await expiry(str(seeder.make_url("")).rstrip("/"))
    finally:
        await seeder.close()

    assert found == {"node": not_after(pair.cert_pem), "ca": not_after(cluster_ca.cert_pem)}


async def test_the_tracker_exports_when_its_certificate_and_its_ca_end(
    tls_tracker: Served, cluster_ca: KeyPair, tmp_path: Path
) -> None:
    tracker_cert = (tmp_path / "tracker-tls" / NODE_CERT).read_bytes()  # the fixture's
    assert tls_tracker.metrics_url is not None

    assert await expiry(tls_tracker.metrics_url) == {
        "tracker": not_after(tracker_cert),
        "ca": not_after(cluster_ca.cert_pem),
    }


# -- the start-up log ---------------------------------------------------------------------------


def _records(caplog: pytest.LogCaptureFixture, cert: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "cert", None) == cert]


async def test_a_node_logs_its_certificates_at_start_and_warns_of_one_ending_soon(
    node_factory: Callable[..., Any],
    plain_tracker: str,
    cluster_ca: KeyPair,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="imgaccel")
    certs = write(tmp_path / "tls", cluster_ca, issue(cluster_ca, days=10))
    await node_factory(p2p=p2p(plain_tracker, certs))

    [node] = _records(caplog, "node")
    assert node.levelno == logging.WARNING
    message = node.getMessage()
    assert message.startswith(f"node certificate {certs / NODE_CERT}: CN=*, valid until ")
    assert "days left" in message and "imgaccel certs issue" in message
    [ca] = _records(caplog, "ca")
    assert ca.levelno == logging.INFO
    assert ca.getMessage().startswith(f"ca certificate {certs / CA_CERT}: CN=ops-test cluster CA")


async def test_the_tracker_warns_at_start_of_an_expired_certificate(
    cluster_ca: KeyPair, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="imgaccel")
    expired = dated_pair(cluster_ca, days_from_now(-60), days_from_now(-2))
    certs = write(tmp_path / "tls", cluster_ca, expired)
    settings = TrackerSettings(
        listen="127.0.0.1:0",
        data_dir=tmp_path / "tracker",
        ca_cert=certs / CA_CERT,
        cert=certs / NODE_CERT,
        key=certs / NODE_KEY,
    )
    async with running(settings):
        pass

    [tracker] = _records(caplog, "tracker")
    assert tracker.levelno == logging.WARNING
    assert f"tracker certificate {certs / NODE_CERT}: CN=*, expired " in tracker.getMessage()
    assert [r.levelno for r in _records(caplog, "ca")] == [logging.INFO]


# -- doctor's verdict ---------------------------------------------------------------------------


def _by_name(certs: Path) -> dict[str, Any]:
    return {check.name: check for check in certificates.node_certificates(certs)}


def test_doctor_warns_of_a_node_certificate_ending_within_30_days(
    cluster_ca: KeyPair, tmp_path: Path
) -> None:
    certs = write(tmp_path, cluster_ca, issue(cluster_ca, days=10))
    checks = _by_name(certs)

    node = checks["node certificate"]
    assert node.status is Status.WARN
    assert node.detail.startswith(f"{certs / NODE_CERT}: CN=*, valid until ")
    assert "imgaccel certs issue --ca-dir" in node.fix
    assert "secret generic imgaccel-node-tls" in node.fix
    assert "rollout restart ds/imgaccel-node" in node.fix
    assert checks["cluster CA"].status is Status.OK


@pytest.mark.parametrize(
    ("days", "says"), [((-60, -1), "expired "), ((1, 60), "not valid before ")]
)
def test_doctor_fails_a_node_certificate_not_valid_now(
    cluster_ca: KeyPair, tmp_path: Path, days: tuple[int, int], says: str
) -> None:
    pair = dated_pair(cluster_ca, days_from_now(days[0]), days_from_now(days[1]))
    node = _by_name(write(tmp_path, cluster_ca, pair))["node certificate"]

    assert node.status is Status.FAIL
    assert f"CN=*, {says}" in node.detail
    assert "imgaccel certs issue" in node.fix


def test_doctor_fails_an_expired_ca_and_warns_of_one_ending_soon(tmp_path: Path) -> None:
    expired = dated_ca(days_from_now(-400), days_from_now(-1))
    soon = make_ca("soon", days=10)
    old = _by_name(write(tmp_path / "old", expired, issue(expired)))["cluster CA"]
    ending = _by_name(write(tmp_path / "soon", soon, issue(soon)))["cluster CA"]

    assert old.status is Status.FAIL
    assert "CN=dated cluster CA, expired" in old.detail
    assert "imgaccel certs init" in old.fix
    assert ending.status is Status.WARN
    assert "CN=soon cluster CA, valid until" in ending.detail


def test_doctor_warns_from_30_days_before_the_end(cluster_ca: KeyPair, tmp_path: Path) -> None:
    certs = write(tmp_path, cluster_ca, issue(cluster_ca, days=365))
    end = x509.load_pem_x509_certificate((certs / NODE_CERT).read_bytes()).not_valid_after_utc

    def status(at: dt.datetime) -> Status:
        return {c.name: c for c in certificates.node_certificates(certs, at)}[
            "node certificate"
        ].status

    assert status(end - dt.timedelta(days=31)) is Status.OK
    assert status(end - dt.timedelta(days=29)) is Status.WARN
    assert status(end) is Status.FAIL
