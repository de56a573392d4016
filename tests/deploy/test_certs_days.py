"""``imgaccel certs init|issue --days``: how long the CA and the certificates last, and what
the commands say about it (nothing renews them; docs/deploy.md, 'Renewing certificates')."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from click.testing import CliRunner, Result
from cryptography import x509

from imgaccel.cli.certs import certs


def _run(*args: str) -> Result:
    return CliRunner().invoke(certs, list(args))


def _lasts(pem_file: Path) -> dt.timedelta:
    cert = x509.load_pem_x509_certificate(pem_file.read_bytes())
    return cert.not_valid_after_utc - dt.datetime.now(dt.UTC)


def _about(days: int) -> tuple[dt.timedelta, dt.timedelta]:
    return dt.timedelta(days=days, minutes=-5), dt.timedelta(days=days)


def test_issue_days_sets_how_long_the_certificate_lasts(tmp_path: Path) -> None:
    assert _run("init", "--dir", str(tmp_path / "ca")).exit_code == 0
    result = _run(
        "issue", "--ca-dir", str(tmp_path / "ca"), "--out", str(tmp_path / "n"), "--days", "30"
    )

    assert result.exit_code == 0, result.output
    low, high = _about(30)
    assert low < _lasts(tmp_path / "n" / "node.crt") <= high
    assert "node.crt is valid until " in result.output


def test_the_defaults_are_ten_years_for_the_ca_and_one_for_certificates(tmp_path: Path) -> None:
    _run("init", "--dir", str(tmp_path / "ca"))
    _run("issue", "--ca-dir", str(tmp_path / "ca"), "--out", str(tmp_path / "n"))

    low, high = _about(3650)
    assert low < _lasts(tmp_path / "ca" / "ca.crt") <= high
    low, high = _about(365)
    assert low < _lasts(tmp_path / "n" / "node.crt") <= high


def test_init_days_sets_how_long_the_ca_lasts(tmp_path: Path) -> None:
    result = _run("init", "--dir", str(tmp_path), "--days", "400")

    assert result.exit_code == 0, result.output
    low, high = _about(400)
    assert low < _lasts(tmp_path / "ca.crt") <= high


def test_issue_warns_of_a_certificate_that_outlives_its_ca(tmp_path: Path) -> None:
    _run("init", "--dir", str(tmp_path / "ca"), "--days", "100")
    result = _run("issue", "--ca-dir", str(tmp_path / "ca"), "--out", str(tmp_path / "n"))

    assert result.exit_code == 0
    assert "warning: the CA ends first" in result.output


def test_days_must_be_positive(tmp_path: Path) -> None:
    _run("init", "--dir", str(tmp_path / "ca"))
    result = _run(
        "issue", "--ca-dir", str(tmp_path / "ca"), "--out", str(tmp_path / "n"), "--days", "0"
    )

    assert result.exit_code == 2
    assert not (tmp_path / "n").exists()
