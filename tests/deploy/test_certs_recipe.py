"""The certificate recipe of docs/deploy.md: ``certs init`` then ``certs issue``."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from cryptography import x509

from imgaccel.cli.certs import certs


def test_init_then_issue_gives_a_chain_the_ca_verifies(tmp_path: Path) -> None:
    runner = CliRunner()
    ca_dir, out = tmp_path / "ca", tmp_path / "tracker"
    assert runner.invoke(certs, ["init", "--dir", str(ca_dir)]).exit_code == 0
    dns = "imgaccel-tracker.imgaccel.svc"
    result = runner.invoke(
        certs, ["issue", "--ca-dir", str(ca_dir), "--out", str(out), "--dns", dns]
    )
    assert result.exit_code == 0, result.output
    ca = x509.load_pem_x509_certificate((out / "ca.crt").read_bytes())
    cert = x509.load_pem_x509_certificate((out / "node.crt").read_bytes())
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"*", "localhost", dns} <= set(names.get_values_for_type(x509.DNSName))
    assert (out / "node.key").stat().st_mode & 0o777 == 0o600
    assert not (out / "ca.key").exists()  # the CA key never leaves the operator's directory


def test_init_refuses_to_replace_a_ca(tmp_path: Path) -> None:
    runner = CliRunner()
    runner.invoke(certs, ["init", "--dir", str(tmp_path)])
    key = (tmp_path / "ca.key").read_bytes()
    result = runner.invoke(certs, ["init", "--dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "--force" in result.output
    assert (tmp_path / "ca.key").read_bytes() == key
