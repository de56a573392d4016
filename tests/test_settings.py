"""The ``registries`` setting: which entries are valid, and which registries each one allows."""

from __future__ import annotations

from pathlib import Path

import pytest

from imgaccel.errors import ConfigError
from imgaccel.settings import load_settings


@pytest.mark.parametrize(
    ("entries", "registry", "allowed"),
    [
        ([], "anything.example", True),  # empty: every registry, as before the setting
        (["nvcr.io"], "nvcr.io", True),
        (["nvcr.io"], "ghcr.io", False),
        (["nvcr.io"], "nvcr.io:443", False),  # a port is part of the name
        (["NVCR.io"], "nvcr.io", True),
        (["nvcr.io"], "NVCR.IO", True),
        (["registry.local:5000"], "registry.local:5000", True),
        (["registry.local:5000"], "registry.local:5001", False),
        (["registry.local:5000"], "registry.local", False),
        (["*.corp.example"], "registry.corp.example", True),
        (["*.corp.example"], "a.b.corp.example", True),
        (["*.corp.example"], "corp.example", False),  # subdomains only
        (["*.corp.example"], "evilcorp.example", False),
        (["*.corp.example"], "corp.example.evil", False),
        (["*.corp.example"], "registry.corp.example:5000", False),
        (["*.corp.example:5000"], "registry.corp.example:5000", True),
        (["*.corp.example:5000"], "registry.corp.example", False),
        (["10.0.0.5:5000"], "10.0.0.5:5000", True),
        (["[::1]:5000"], "[::1]:5000", True),
        (["[::1]"], "[::1]:5000", False),
        # Docker Hub's names are one registry, whichever the list or the client uses.
        (["docker.io"], "docker.io", True),
        (["docker.io"], "index.docker.io", True),
        (["docker.io"], "registry-1.docker.io", True),
        (["index.docker.io"], "docker.io", True),
        (["registry-1.docker.io"], "docker.io", True),
        (["*.docker.io"], "docker.io", False),
        (["nvcr.io"], "docker.io", False),
        (["ghcr.io", "*.corp.example", "nvcr.io"], "nvcr.io", True),
    ],
)
def test_which_registries_an_allowlist_allows(
    entries: list[str], registry: str, allowed: bool
) -> None:
    settings = load_settings(None, registries=entries)

    assert settings.registry_allowed(registry) is allowed


def test_entries_are_kept_normalised() -> None:
    settings = load_settings(None, registries=[" Index.Docker.IO ", "*.Corp.Example", "nvcr.io"])

    assert settings.registries == ["docker.io", "*.corp.example", "nvcr.io"]


@pytest.mark.parametrize(
    "entry",
    [
        "",
        "*",
        "https://nvcr.io",
        "nvcr.io/nvidia",
        "*.*.corp.example",
        "registry.*.example",
        "*corp.example",
        "nvcr.io:0",
        "nvcr.io:99999",
        "*.10.0.0.1",
        "*.[::1]",
        "bad_host.example",
    ],
)
def test_an_invalid_entry_is_a_clear_error_at_load_time(entry: str) -> None:
    with pytest.raises(ConfigError, match="registries") as raised:
        load_settings(None, registries=["nvcr.io", entry])

    assert repr(entry) in str(raised.value)


def test_the_list_comes_from_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "imgaccel.toml"
    config.write_text('registries = ["nvcr.io", "*.corp.example"]\n')

    settings = load_settings(config)

    assert settings.registries == ["nvcr.io", "*.corp.example"]
    assert not settings.registry_allowed("docker.io")


def test_the_list_comes_from_a_json_variable_over_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "imgaccel.toml"
    config.write_text('registries = ["nvcr.io"]\n')
    monkeypatch.setenv("IMGACCEL_REGISTRIES", '["ghcr.io", "registry.local:5000"]')

    settings = load_settings(config)

    assert settings.registries == ["ghcr.io", "registry.local:5000"]


@pytest.mark.parametrize("value", ["nvcr.io", '["https://nvcr.io"]', '{"nvcr.io": 1}'])
def test_a_bad_variable_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("IMGACCEL_REGISTRIES", value)

    with pytest.raises(ConfigError, match="registries") as raised:
        load_settings(None)

    if value == "nvcr.io":  # not JSON at all
        assert "JSON" in str(raised.value)


def test_upstreams_and_the_default_registry_are_not_allowed_implicitly() -> None:
    settings = load_settings(
        None,
        registries=["nvcr.io"],
        upstreams={"registry.local:5000": {"url": "http://10.0.0.5:5000"}},
    )

    assert not settings.registry_allowed("registry.local:5000")
    assert not settings.registry_allowed(settings.default_registry)
