"""The cache's settings section."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator


def default_cache_dir() -> Path:
    """``/var/lib/imgaccel`` as root, else the XDG cache dir."""
    if os.geteuid() == 0:
        return Path("/var/lib/imgaccel")
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "imgaccel"


class CacheSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo in a config file is an error

    dir: Path = Field(
        default_factory=default_cache_dir,
        description="Where blobs, manifests and the metadata database live.",
    )
    quota_bytes: int = Field(
        default=0,
        ge=0,
        description="Most bytes of blobs to keep; least recently used go first (a blob is used "
        "when a client reads it, and while peers fetch it from this node). 0: no quota.",
    )
    min_free_percent: float = Field(
        default=25.0,
        ge=0,
        lt=100,
        description="Least share of the cache's filesystem, in percent of its size, to leave free "
        "for what shares the disk (containerd's content and snapshots): a blob that would take "
        "it below this evicts least recently used blobs first, and if that is not enough it is "
        "streamed to the client but not kept. 25: the cache alone never takes the disk to where "
        "kubelet acts (by its defaults it deletes unused images from 85 % used down to 80 %, and "
        "evicts pods below 15 % free; it counts the root reserve as used, as this does), so "
        "the cache gives way to containerd's images, not the other way round. A disk of the "
        "cache's own (a seeder's volume): 5. 0: fill the disk up to the quota. Whatever this "
        "says, a blob the disk cannot take at all is refused with 503 before its first byte, "
        "so the client pulls it from the origin.",
    )
    disk_check_seconds: float = Field(
        default=10.0,
        gt=0,
        description="How often the node looks at its filesystem's free space between fills: "
        "when something else (containerd's pulls, logs) took it below min_free_percent, least "
        "recently used blobs nobody reads or pinned are evicted until it is above again, as far "
        "as they go (as kubelet's image garbage collection does for images). 10: as often as "
        "kubelet's eviction manager looks.",
    )
    containerd_content_dir: Path | None = Field(
        default=Path("/var/lib/containerd/io.containerd.content.v1.content"),
        description="containerd's content store. A blob both the cache and containerd hold is "
        "kept once on disk: the cache's file becomes a hard link to containerd's copy, once that "
        "copy's bytes hashed to the digest (in a thread of low priority). Needs one filesystem "
        "and, in a container, one mount holding both directories (two hostPath volumes are two "
        "mounts); otherwise the node says why once and keeps its own copies. A shared blob frees "
        "no disk when evicted, so eviction for disk space passes it over; the quota still "
        "counts it. Missing directory: nothing shared. Empty or null: off.",
    )
    containerd_share_seconds: float = Field(
        default=30.0,
        gt=0,
        description="How often the node looks for cached blobs that containerd holds too.",
    )
    tag_ttl_seconds: float = Field(
        default=60.0,
        ge=0,
        description="How long a tag -> digest answer is used without asking the origin again.",
    )
    not_found_ttl_seconds: float = Field(
        default=10.0, ge=0, description="How long an origin's 'not found' is remembered."
    )
    auth_ttl_seconds: float = Field(
        default=300.0,
        ge=0,
        description="How long the origin's yes to a client's credentials for a private repository "
        "is remembered before it is asked again.",
    )

    @field_validator("containerd_content_dir", mode="before")
    @classmethod
    def _empty_is_off(cls, value: object) -> object:
        return None if value == "" else value
