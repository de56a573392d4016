"""The root settings: every component's section, loaded from a TOML file and ``IMGACCEL_*``.

Precedence, highest first: command-line flags, environment (``IMGACCEL_CACHE__QUOTA_BYTES``;
nested sections use ``__``), the config file (``--config`` or ``IMGACCEL_CONFIG``), defaults.
The defaults are the embedded configuration: ``imgaccel node`` runs with no file at all.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from ipaddress import ip_network
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from imgaccel.address import split_listen
from imgaccel.cache.config import CacheSettings
from imgaccel.errors import ConfigError, NameInvalid
from imgaccel.oci.reference import DOCKER_HUB, DOCKER_HUB_ALIASES, validate_host
from imgaccel.upstream.config import DOCKER_HUB_URL, UpstreamClientSettings, UpstreamSettings


class LogSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo in a config file is an error

    level: str = Field(default="INFO", description="Log level: DEBUG, INFO, WARNING, ERROR.")
    json_format: bool = Field(default=False, description="One JSON object per log line.")


class P2PSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo in a config file is an error

    tracker_url: str | None = Field(
        default=None, description="The imgaccel tracker's URL; unset: no peer-to-peer."
    )
    listen: str = Field(default="0.0.0.0:6881", description="Where libtorrent listens for peers.")
    certs_dir: Path | None = Field(
        default=None,
        description="Directory with ca.crt, node.crt and node.key from `imgaccel certs`; "
        "peers and the tracker accept only certificates of this cluster CA. Required with a "
        "tracker.",
    )
    node_id: str | None = Field(
        default=None, description="This node's name at the tracker. [default: the host name]"
    )
    role: Literal["node", "seeder"] = Field(
        default="node",
        description="seeder: fetch cold blobs from the origin for the whole cluster "
        "(set by `imgaccel seeder`).",
    )
    stall_seconds: float = Field(
        default=5.0,
        gt=0,
        description="Less than a block (16 KiB) of data from peers this long: continue from the "
        "origin.",
    )
    no_peers_seconds: float = Field(
        default=3.0,
        gt=0,
        description="No peer connected this long once the tracker has answered (at most 15 s "
        "after the download started): continue from the origin.",
    )
    min_blob_bytes: int = Field(
        default=0,
        ge=0,
        description="Blobs smaller than this come from the origin even when peers have them: "
        "a swarm's set-up (torrent, announce, TLS) can take longer than a small blob from a "
        "near origin. 0: every blob may come from peers, so each crosses the origin once.",
    )
    upload_rate_limit: int = Field(
        default=0, ge=0, description="Most bytes/s this node uploads to peers; 0: no limit."
    )
    share_pieces: bool = Field(
        default=True,
        description="Downloaders of a blob split the pieces only seeds have: each asks the seeds "
        "for its own share and takes the others' from them, so a lone seed sends each piece "
        "about once. false: libtorrent's own piece picking.",
    )
    share_window_pieces: int = Field(
        default=16,
        ge=0,
        description="With piece shares: each downloader asks the seeds for its share front to "
        "back, this many pieces of it at a time, so the blob's in-order prefix (what the "
        "client is sent) grows during the download instead of at its end; a downloader alone "
        "with the seeds fetches in order. 0: the whole share at once, rarest first.",
    )
    disk_threads: int = Field(
        default=2,
        ge=1,
        le=64,
        description="libtorrent's disk I/O threads (its aio_threads): they write downloaded "
        "blocks and read the blocks peers ask for. libtorrent's default of 10 costs CPU here: "
        "every queued block wakes the whole pool. Raise it for disks that need many requests in "
        "flight (network storage, spinning disks).",
    )
    wait_seconds: float = Field(
        default=600.0,
        gt=0,
        description="Longest wait for another node or the seeder to fetch a cold blob before "
        "going to the origin directly.",
    )
    tracker_timeout_seconds: float = Field(
        default=5.0, gt=0, description="Timeout of a tracker API call (long polls excepted)."
    )

    @model_validator(mode="after")
    def _certs_with_tracker(self) -> P2PSettings:
        if self.tracker_url and self.certs_dir is None:
            raise ValueError(
                "peer-to-peer (a tracker) needs the cluster certificates: set p2p.certs_dir "
                "(--certs-dir) to a directory with ca.crt, node.crt and node.key; make them with "
                "`imgaccel certs init` and `imgaccel certs issue`"
            )
        if self.tracker_url and not self.tracker_url.startswith(("http://", "https://")):
            raise ValueError(f"tracker URL must start with http:// or https://: {self.tracker_url}")
        return self


class PrefetchSettings(BaseModel):
    """The node's background prefetch (cluster prewarm jobs and hot layers; needs a tracker)."""

    model_config = ConfigDict(extra="forbid")  # a typo in a config file is an error

    enabled: bool = Field(
        default=True, description="Run prewarm jobs and prefetch hot layers (with a tracker)."
    )
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="This node's labels, matched by "
        "`imgaccel prewarm --cluster --nodes KEY=VALUE`.",
    )
    pin_seconds: float = Field(
        default=86400.0, ge=0, description="How long prewarmed and hot layers are pinned."
    )
    bandwidth_bytes_per_second: int = Field(
        default=50_000_000,
        ge=0,
        description="Bytes/s hot-layer prefetch may fetch (a token bucket; 0: no limit), kept "
        "within each blob as well: from the origin, and from peers through the torrent's "
        "download limit. A workload pulling the same blob meanwhile lifts the limit for it. "
        "Prewarm jobs, which an operator asked for, are not limited.",
    )
    cache_share: float = Field(
        default=0.25,
        ge=0,
        le=1,
        description="Most share of cache.quota_bytes that pinned hot layers may take.",
    )
    hot_min_score: float = Field(
        default=2.0, ge=0, description="Prefetch a hot layer from this score (about N nodes) on."
    )
    hot_interval_seconds: float = Field(
        default=60.0, gt=0, description="How often to read the tracker's hot list."
    )
    report_interval_seconds: float = Field(
        default=5.0, gt=0, description="How often to send the pulls seen to the tracker."
    )
    job_poll_seconds: float = Field(
        default=60.0, gt=0, description="Long-poll duration when asking the tracker for jobs."
    )


def _default_upstreams() -> dict[str, UpstreamSettings]:
    return {"docker.io": UpstreamSettings(url=DOCKER_HUB_URL)}


class Settings(BaseSettings):
    """Settings of ``imgaccel node`` (and the sections other roles share)."""

    model_config = SettingsConfigDict(
        env_prefix="IMGACCEL_",
        env_nested_delimiter="__",
        extra="forbid",
        # An error names the setting and what is wrong with it, never the value given: it may
        # hold a password (an upstream's, or in a proxy URL).
        hide_input_in_errors=True,
    )

    listen: str = Field(default="127.0.0.1:65001", description="HOST:PORT the mirror serves on.")
    metrics_listen: str | None = Field(
        default=None,
        description="HOST:PORT of a second listener with only /metrics and /healthz, for "
        "Prometheus and probes when the mirror binds loopback. Unset: none.",
    )
    default_registry: str = Field(
        default="docker.io",
        description="The registry for requests without containerd's ?ns= (dockerd's mirrors).",
    )
    registry_listen: dict[str, str] = Field(
        default_factory=dict,
        description="More listeners, HOST:PORT -> registry: a request on one of them that sends "
        "no ?ns= is for its registry (on `listen`, for `default_registry`). For clients that "
        "name no registry and take one mirror address per registry, such as "
        "stargz-snapshotter's resolver. Example: "
        '`registry_listen = { "127.0.0.1:65002" = "nvcr.io" }`; a fixed port, not 0. With '
        "`registries` set, list these registries there too (the node warns at start about any "
        "it does not allow).",
    )
    admin_networks: list[IPvAnyNetwork] = Field(
        default_factory=lambda: [ip_network("127.0.0.0/8"), ip_network("::1/128")],
        description="Client networks allowed to use /_imgaccel/: read the node's status and "
        "cache listing, change the cache (pin, unpin, gc). Default: loopback only, even when the "
        "mirror listens on all interfaces.",
    )
    upstreams: dict[str, UpstreamSettings] = Field(
        default_factory=_default_upstreams,
        description="Registry host -> origin. Hosts not listed are reached at https://HOST.",
    )
    registries: list[str] = Field(
        default_factory=list,
        description="The only registries the node (and a seeder) fetches from, whoever asks: "
        "clients, the tracker's seeder work, prewarm jobs, hot layers. Empty: every registry. "
        "An entry is a host, with a port if the registry has one (`registry.local:5000` "
        "matches only that port), or `*.example.com` for every name under example.com (not "
        "example.com itself). docker.io, index.docker.io and registry-1.docker.io are one "
        "registry, docker.io. A request for any other registry gets 403 DENIED and the origin "
        "is not asked (containerd then pulls from the origin itself); work for it is skipped. "
        "Nothing is allowed implicitly: list `default_registry` for clients without ?ns= "
        "(dockerd), and the hosts of your `upstreams` tables and `registry_listen` (the node "
        "warns at start about any it will not use). Example: "
        '`registries = ["docker.io", "nvcr.io", "*.corp.example"]`; as a variable, JSON: '
        "`IMGACCEL_REGISTRIES='[\"nvcr.io\"]'`.",
    )
    upstream_client: UpstreamClientSettings = Field(default_factory=UpstreamClientSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    p2p: P2PSettings = Field(default_factory=P2PSettings)
    prefetch: PrefetchSettings = Field(default_factory=PrefetchSettings)
    log: LogSettings = Field(default_factory=LogSettings)

    @field_validator("listen", "metrics_listen")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is not None:
            split_listen(value)
        return value

    @field_validator("registry_listen")
    @classmethod
    def _registry_listeners(cls, listeners: dict[str, str]) -> dict[str, str]:
        checked = {}
        for address, registry in listeners.items():
            if split_listen(address)[1] == 0:
                raise ValueError(f"registry_listen: {address!r} needs a fixed port, not 0")
            try:
                checked[address] = canonical_registry(validate_host(registry.strip()))
            except NameInvalid:
                raise ValueError(
                    f"registry_listen: {registry!r} is not a registry host (e.g. nvcr.io, "
                    "registry.local:5000)"
                ) from None
        return checked

    def registry_for_port(self, port: int | None) -> str:
        """The registry of a request without ?ns= that came in on local ``port``: that of its
        ``registry_listen`` listener, else ``default_registry``."""
        for address, registry in self.registry_listen.items():
            if split_listen(address)[1] == port:
                return registry
        return self.default_registry

    @field_validator("registries")
    @classmethod
    def _registry_patterns(cls, entries: list[str]) -> list[str]:
        return [registry_pattern(entry) for entry in entries]

    def registry_allowed(self, host: str) -> bool:
        """Whether the node may contact the registry ``host`` (``registries``; empty: any)."""
        if not self.registries:
            return True
        host = canonical_registry(host)
        return any(_pattern_matches(pattern, host) for pattern in self.registries)

    def upstream_for(self, host: str) -> UpstreamSettings:
        """The origin for a registry host (``https://HOST`` when none is configured)."""
        found = self.upstreams.get(host)
        if found is not None:
            return found
        return UpstreamSettings(url=DOCKER_HUB_URL if host == "docker.io" else f"https://{host}")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings


def canonical_registry(host: str) -> str:
    """``host`` as the mirror names a registry: lowercase, Docker Hub's aliases as docker.io."""
    host = host.lower()
    return DOCKER_HUB if host in DOCKER_HUB_ALIASES else host


def registry_pattern(entry: str) -> str:
    """A ``registries`` entry checked and normalised (lowercase, Docker Hub's aliases as
    docker.io): ``HOST``, ``HOST:PORT``, or ``*.DOMAIN`` with an optional port."""
    text = entry.strip().lower()
    wildcard = text.startswith("*.")
    host = text[2:] if wildcard else text
    try:
        validate_host(host)
    except NameInvalid:
        raise ValueError(
            f"registries: {entry!r} is not a registry: give HOST, HOST:PORT or *.DOMAIN "
            "(no scheme, path or other wildcard), e.g. nvcr.io, registry.local:5000, "
            "*.corp.example"
        ) from None
    if wildcard and _is_ip(_split_port(host)[0]):
        raise ValueError(f"registries: {entry!r}: a wildcard needs a DNS name, not an address")
    return text if wildcard else canonical_registry(host)


def _pattern_matches(pattern: str, host: str) -> bool:
    if not pattern.startswith("*."):
        return host == pattern
    name, port = _split_port(host)
    domain, wanted_port = _split_port(pattern[1:])  # keeps the dot: ".corp.example"
    return port == wanted_port and name.endswith(domain)


def _split_port(host: str) -> tuple[str, str | None]:
    """``name:port`` as (name, port); a bracketed IPv6 address keeps its colons."""
    end = host.rfind("]")
    name, sep, port = host.rpartition(":")
    if not sep or end > host.rfind(":"):
        return host, None
    return name, port


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True


def parse_upstream_flag(text: str) -> tuple[str, str]:
    """``HOST=URL`` from ``--upstream``."""
    host, sep, url = text.partition("=")
    if not sep or not host or not url:
        raise ConfigError(f"--upstream wants HOST=URL, got {text!r}")
    return host.strip().lower(), url.strip()


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Defaults < config file < ``IMGACCEL_*`` environment < ``overrides`` (CLI flags).

    ``overrides`` may hold nested dicts; they are merged into the file's sections.
    """
    path = config or (
        Path(os.environ["IMGACCEL_CONFIG"]) if "IMGACCEL_CONFIG" in os.environ else None
    )
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    # The variables' raw values, validated once with the rest: a variable may need a setting
    # that the file or a flag gives (p2p.tracker_url needs p2p.certs_dir).
    try:
        from_env = EnvSettingsSource(Settings, case_sensitive=False)()
    except SettingsError as exc:
        hint = "lists and tables are JSON, e.g. IMGACCEL_REGISTRIES='[\"nvcr.io\"]'"
        raise ConfigError(f"invalid IMGACCEL_* environment variable: {exc} ({hint})") from exc
    try:
        return Settings.model_validate(_deep_merge(data, from_env, overrides))
    except ValueError as exc:
        raise ConfigError(f"invalid settings: {exc}") from exc


def _deep_merge(*layers: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = _deep_merge(out[key], value)
            else:
                out[key] = value
    return out
