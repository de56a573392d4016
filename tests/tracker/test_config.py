"""The tracker's settings refuse what would run insecurely by accident or expire every peer."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from imgaccel.tracker import TrackerSettings


def test_peer_ttl_follows_the_announce_interval_unless_set() -> None:
    assert TrackerSettings(insecure=True).peer_ttl == 180
    assert TrackerSettings(insecure=True, announce_interval=100).peer_ttl == 300
    assert TrackerSettings(insecure=True, announce_interval=100, peer_ttl=150).peer_ttl == 150
    with pytest.raises(ValidationError, match="longer than announce_interval"):
        TrackerSettings(insecure=True, announce_interval=100, peer_ttl=50)


def test_tls_files_or_insecure_but_not_neither_or_both(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="or set insecure"):
        TrackerSettings()
    with pytest.raises(ValidationError, match="or set insecure"):
        TrackerSettings(ca_cert=tmp_path / "ca.crt")
    with pytest.raises(ValidationError, match="insecure excludes"):
        TrackerSettings(insecure=True, ca_cert=tmp_path / "ca.crt")
    files = {name: tmp_path / name for name in ("ca_cert", "cert", "key")}
    assert TrackerSettings(**files).tls  # type: ignore[arg-type]


def test_every_field_is_described() -> None:
    assert all(field.description for field in TrackerSettings.model_fields.values())


@pytest.mark.parametrize("listen", ["6970", "host:", "host:99999", ":x"])
def test_listen_must_be_host_port(listen: str) -> None:
    with pytest.raises(ValidationError, match="HOST:PORT"):
        TrackerSettings(insecure=True, listen=listen)
