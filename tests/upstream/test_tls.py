"""An upstream's TLS files: one context per setting, built at start, where a file that cannot
be used stops the node with an error naming the upstream and the file (not a traceback, not a
failure at the first pull). Pulls over TLS from a real registry: test_tls_origin.py."""

from __future__ import annotations

import json
import logging
import ssl
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization

from imgaccel.cli import main
from imgaccel.cli.options import settings_from
from imgaccel.errors import ConfigError
from imgaccel.proxy.app import make_app
from imgaccel.settings import Settings, load_settings
from imgaccel.testing.registry import RegistryTLS
from imgaccel.upstream.config import UpstreamSettings
from imgaccel.upstream.tls import OriginTLS

HOST = "harbor.corp.example"


@pytest.fixture
def tls(tmp_path: Path) -> RegistryTLS:
    return RegistryTLS.make(tmp_path / "tls")


# -- start-up errors -------------------------------------------------------------------------


def _settings(tmp_path: Path, **upstream: Any) -> Settings:
    table = {
        "url": f"https://{HOST}",
        **{k: str(v) if isinstance(v, Path) else v for k, v in upstream.items()},
    }
    return load_settings(None, upstreams={HOST: table}, cache={"dir": str(tmp_path / "cache")})


def _encrypted(key: Path, out: Path) -> Path:
    loaded = serialization.load_pem_private_key(key.read_bytes(), password=None)
    encryption = serialization.BestAvailableEncryption(b"secret")
    pkcs8 = serialization.PrivateFormat.PKCS8
    out.write_bytes(loaded.private_bytes(serialization.Encoding.PEM, pkcs8, encryption))
    return out


def _bad_files(tls: RegistryTLS, tmp_path: Path) -> dict[str, tuple[dict[str, Path], str]]:
    """Case -> (upstream settings, how the error begins after the upstream's name)."""
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    missing = tmp_path / "missing.pem"
    pair = {"client_cert": tls.client_cert, "client_key": tls.client_key}
    encrypted = _encrypted(tls.client_key, tmp_path / "encrypted.key")
    return {
        "missing CA": ({"ca_file": missing}, f"cannot read ca_file {missing}"),
        "a directory as CA": ({"ca_file": tmp_path}, f"cannot read ca_file {tmp_path}"),
        "not PEM CA": ({"ca_file": garbage}, f"ca_file {garbage} holds no PEM certificate"),
        "key as CA": ({"ca_file": tls.client_key}, f"ca_file {tls.client_key} holds no PEM"),
        "missing cert": (
            {**pair, "client_cert": missing},
            f"cannot read client_cert {missing}",
        ),
        "not PEM cert": (
            {**pair, "client_cert": garbage},
            f"client_cert {garbage} holds no PEM certificate",
        ),
        "not PEM key": (
            {**pair, "client_key": garbage},
            f"client_key {garbage} holds no PEM private key",
        ),
        "encrypted key": (
            {**pair, "client_key": encrypted},
            f"client_key {encrypted} is encrypted; give it unencrypted",
        ),
        "someone else's key": (
            {**pair, "client_key": tls.key},  # the registry's key, not the client's
            f"client_key {tls.key} is not the key of client_cert {tls.client_cert}",
        ),
    }


CASES = [
    "missing CA",
    "a directory as CA",
    "not PEM CA",
    "key as CA",
    "missing cert",
    "not PEM cert",
    "not PEM key",
    "encrypted key",
    "someone else's key",
]


@pytest.mark.parametrize("case", CASES)
def test_a_file_that_cannot_be_used_stops_the_node_at_start_naming_upstream_and_file(
    tls: RegistryTLS, tmp_path: Path, case: str
) -> None:
    upstream, says = _bad_files(tls, tmp_path)[case]
    settings = _settings(tmp_path, **upstream)

    with pytest.raises(ConfigError) as raised:
        make_app(settings)

    assert str(raised.value).startswith(f'upstreams."{HOST}": {says}'), str(raised.value)


def test_imgaccel_node_says_so_in_one_line(tls: RegistryTLS, tmp_path: Path) -> None:
    config = tmp_path / "imgaccel.toml"
    missing = tmp_path / "corp-ca.pem"
    config.write_text(f'[upstreams."{HOST}"]\nurl = "https://{HOST}"\nca_file = "{missing}"\n')

    result = CliRunner().invoke(
        main, ["node", "--config", str(config), "--cache-dir", str(tmp_path / "cache")]
    )

    assert result.exit_code == 2, result.output
    assert f'upstreams."{HOST}": cannot read ca_file {missing}' in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("given", ["client_cert", "client_key"])
def test_a_client_certificate_needs_its_key_and_the_error_shows_no_password(
    tls: RegistryTLS, tmp_path: Path, given: str
) -> None:
    table = {"url": f"https://{HOST}", "password": "hunter2", given: str(tls.client_cert)}

    with pytest.raises(ConfigError) as raised:
        load_settings(None, upstreams={HOST: table})

    assert "client_cert and client_key go together" in str(raised.value)
    assert HOST in str(raised.value)
    assert "hunter2" not in str(raised.value)


def test_a_ca_file_with_tls_verify_false_is_not_used_and_the_log_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _settings(tmp_path, tls_verify=False, ca_file=tmp_path / "missing.pem")

    with caplog.at_level(logging.WARNING):
        make_app(settings)  # the file is not read

    assert f'upstreams."{HOST}".ca_file is not used: tls_verify is false' in caplog.text


def test_client_cert_and_client_key_may_be_one_file(tls: RegistryTLS, tmp_path: Path) -> None:
    both = tmp_path / "client.pem"
    both.write_bytes(tls.client_cert.read_bytes() + tls.client_key.read_bytes())

    make_app(_settings(tmp_path, client_cert=both, client_key=both))


# -- the contexts, without sockets -------------------------------------------------------------


def test_one_context_per_tls_setting_built_once(tls: RegistryTLS) -> None:
    private = UpstreamSettings(url="https://a.corp", ca_file=tls.ca)
    same = UpstreamSettings(url="https://b.corp", ca_file=tls.ca)
    contexts = OriginTLS.load({"a.corp": private, "b.corp": same})
    unlisted = UpstreamSettings(url="https://quay.io")

    assert contexts.context(private) is contexts.context(same)
    assert contexts.context(unlisted) is contexts.context(UpstreamSettings(url="https://nvcr.io"))
    assert contexts.context(unlisted) is not contexts.context(private)


def test_ca_file_adds_to_the_system_trust_store(tls: RegistryTLS) -> None:
    system_only = OriginTLS().context(UpstreamSettings(url="https://quay.io"))
    private = OriginTLS().context(UpstreamSettings(url="https://h", ca_file=tls.ca))

    system = system_only.cert_store_stats()["x509_ca"]
    assert private.cert_store_stats()["x509_ca"] == system + 1
    assert private.verify_mode == ssl.CERT_REQUIRED and private.check_hostname


def test_tls_verify_false_verifies_nothing(tls: RegistryTLS) -> None:
    upstream = UpstreamSettings(
        url="https://h", tls_verify=False, client_cert=tls.client_cert, client_key=tls.client_key
    )

    context = OriginTLS.load({"h": upstream}).context(upstream)

    assert context.verify_mode == ssl.CERT_NONE and not context.check_hostname


# -- where the settings come from ------------------------------------------------------------


def test_a_json_variable_adds_a_ca_file_to_the_table_of_the_file(
    tls: RegistryTLS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "imgaccel.toml"
    config.write_text(f'[upstreams."{HOST}"]\nurl = "https://{HOST}"\nusername = "puller"\n')
    monkeypatch.setenv("IMGACCEL_UPSTREAMS", json.dumps({HOST: {"ca_file": str(tls.ca)}}))

    upstream = load_settings(config).upstream_for(HOST)

    assert (upstream.url, upstream.username, upstream.ca_file) == (
        f"https://{HOST}",
        "puller",
        tls.ca,
    )


def test_the_upstream_flag_keeps_the_tls_settings_of_the_file(
    tls: RegistryTLS, tmp_path: Path
) -> None:
    config = tmp_path / "imgaccel.toml"
    config.write_text(f'[upstreams."{HOST}"]\nurl = "https://{HOST}"\nca_file = "{tls.ca}"\n')

    settings = settings_from({"config": config, "upstreams": (f"{HOST}=https://10.0.0.5:8443",)})

    upstream = settings.upstream_for(HOST)
    assert (upstream.url, upstream.ca_file) == ("https://10.0.0.5:8443", tls.ca)
