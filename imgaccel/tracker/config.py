"""The tracker's settings section."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, Field, field_validator, model_validator

from imgaccel.address import split_listen


class TrackerSettings(BaseModel):
    """Settings of ``imgaccel tracker``: where it listens, its state, its timers, its TLS files."""

    listen: str = Field(
        default="0.0.0.0:6970",
        description="HOST:PORT the tracker serves on; port 0 picks a free port (it is logged).",
    )
    metrics_listen: str | None = Field(
        default=None,
        description="HOST:PORT of a plain HTTP listener with only /healthz and /metrics, for "
        "kubelet probes and Prometheus, which hold no cluster certificate. Unset: none.",
    )
    data_dir: Path = Field(
        default=Path("/var/lib/imgaccel-tracker"),
        description="Directory of the SQLite state (metainfo, claims, seeders, peers).",
    )
    announce_interval: int = Field(
        default=60,
        gt=0,
        description="Seconds between a peer's announces, sent as `interval`; also how often a "
        "node says which blobs it still holds (`POST /v1/alive`), one call for all of them.",
    )
    seed_announce_interval: int = Field(
        default=3600,
        gt=0,
        description="The `interval` sent to a seed whose node says what it holds every "
        "announce_interval (that keeps its peers alive): its own announces only back that up. "
        "A node seeding thousands of blobs would otherwise announce each of them every 5 "
        "minutes (libtorrent's shortest interval), thousands of TLS handshakes a minute for "
        "the tracker per node.",
    )
    min_announce_interval: int = Field(
        default=15, gt=0, description="Seconds a peer must wait between announces (`min interval`)."
    )
    peer_ttl: float = Field(
        default=180.0,
        gt=0,
        description="A peer not heard from for this long leaves its swarms. Unset: 3 x "
        "announce_interval, which tolerates two missed announces.",
    )
    claim_lease_seconds: float = Field(
        default=60.0,
        gt=0,
        description="How long a cold-blob fetch claim holds without a renew or a publish; after "
        "that another node may fetch, so a crashed fetcher does not block the cluster.",
    )
    seeder_ttl: float = Field(
        default=30.0, gt=0, description="A seeder without a heartbeat for this long is not alive."
    )
    max_wait_seconds: float = Field(
        default=120.0, gt=0, description="The longest long-poll (`?wait=`) a client may ask for."
    )
    job_ttl_seconds: float = Field(
        default=86400.0,
        ge=0,
        description="How long a prewarm job is handed to nodes (also to nodes that join later) "
        "when it does not say (`expires_seconds`, `imgaccel prewarm --expires-seconds`); 0: "
        "until cancelled.",
    )
    numwant_default: int = Field(
        default=50, gt=0, description="Peers returned when an announce does not say `numwant`."
    )
    numwant_max: int = Field(default=200, gt=0, description="Most peers one announce returns.")
    ca_cert: Path | None = Field(
        default=None, description="The cluster CA (PEM): clients must present a cert it signed."
    )
    cert: Path | None = Field(default=None, description="The tracker's TLS certificate (PEM).")
    key: Path | None = Field(default=None, description="The tracker's TLS private key (PEM).")
    insecure: bool = Field(
        default=False,
        description="Serve plain HTTP without client authentication (tests and development only).",
    )

    @field_validator("listen", "metrics_listen")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is not None:
            split_listen(value)
        return value

    @model_validator(mode="before")
    @classmethod
    def _default_peer_ttl(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("peer_ttl") is None:
            data = {**data, "peer_ttl": 3 * float(data.get("announce_interval") or 60)}
        return data

    @model_validator(mode="after")
    def _tls_or_insecure(self) -> Self:
        tls = [self.ca_cert, self.cert, self.key]
        if self.insecure and any(tls):
            raise ValueError("insecure excludes ca_cert/cert/key")
        if not self.insecure and not all(tls):
            raise ValueError("give all of ca_cert, cert and key, or set insecure")
        if self.peer_ttl <= self.announce_interval:
            raise ValueError("peer_ttl must be longer than announce_interval")
        if self.seed_announce_interval < self.announce_interval:
            raise ValueError("seed_announce_interval must be at least announce_interval")
        return self

    @property
    def tls(self) -> bool:
        """Whether the tracker serves HTTPS with client-certificate verification."""
        return not self.insecure
