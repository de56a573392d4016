"""What an image reference resolves to: its manifests (the index's chosen entries) and blobs.

Resolution asks a :class:`ManifestSource` (the node's HTTP API for the CLI, the node's own
manifest cache for its prefetch worker), so both warm exactly the same blobs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol

from imgaccel.oci.media import INDEX_TYPES
from imgaccel.oci.reference import ImageRef
from imgaccel.prewarm.errors import UnknownImage
from imgaccel.prewarm.platform import Platform, select


@dataclass(frozen=True, slots=True)
class Blob:
    digest: str
    size: int
    media_type: str = ""


@dataclass
class ImagePlan:
    """One image to warm: the manifests chosen and every config and layer blob they name."""

    ref: ImageRef
    manifests: list[str] = field(default_factory=list)
    platforms: list[str] = field(default_factory=list)
    blobs: list[Blob] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(b.size for b in self.blobs)

    def add_blobs(self, found: list[Blob]) -> None:
        known = {b.digest for b in self.blobs}
        for blob in found:
            if blob.digest not in known:
                known.add(blob.digest)
                self.blobs.append(blob)


class ManifestSource(Protocol):
    async def manifest(self, ref: ImageRef, reference: str) -> tuple[str, bytes, str]:
        """(media type, body, digest) of ``reference`` (a tag or digest) in ``ref``'s repo."""
        ...


async def resolve(
    source: ManifestSource,
    ref: ImageRef,
    wanted: Platform | None = None,
    all_platforms: bool = False,
) -> ImagePlan:
    """The plan for ``ref``: an index narrows to ``wanted`` (else the host's platform) or to
    every platform; an image manifest is taken as it is."""
    media_type, body, digest = await source.manifest(ref, ref.reference)
    document = _json(body)
    plan = ImagePlan(ref)
    if media_type in INDEX_TYPES or "manifests" in document:
        chosen = select(_entries(document), wanted, all_platforms)
        if not chosen:
            available = ", ".join(_platform_name(e) for e in _entries(document)) or "none"
            target = "any platform" if all_platforms else str(wanted or Platform.host())
            raise UnknownImage(f"{ref}: no manifest for {target} (the index has: {available})")
        for entry in chosen:
            _, child, child_digest = await source.manifest(ref, str(entry["digest"]))
            _add_image(plan, child_digest, _json(child), _platform_name(entry))
    else:
        _add_image(plan, digest, document, "")
    return plan


def _add_image(plan: ImagePlan, digest: str, document: dict[str, Any], platform: str) -> None:
    plan.manifests.append(digest)
    if platform:
        plan.platforms.append(platform)
    plan.add_blobs(blobs_of(document))


def blobs_of(manifest: dict[str, Any]) -> list[Blob]:
    """The config and layer blobs of an image manifest (foreign layers with URLs excluded)."""
    descriptors = [manifest.get("config"), *(manifest.get("layers") or [])]
    return [
        Blob(str(d["digest"]), int(d.get("size", 0)), str(d.get("mediaType", "")))
        for d in descriptors
        if isinstance(d, dict) and "digest" in d and not d.get("urls")
    ]


def _entries(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in document.get("manifests") or [] if isinstance(e, dict) and "digest" in e]


def _platform_name(entry: dict[str, Any]) -> str:
    p = entry.get("platform") or {}
    parts = [p.get("os"), p.get("architecture"), p.get("variant")]
    return "/".join(str(x) for x in parts if x)


def _json(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except ValueError as exc:
        raise UnknownImage(f"the manifest is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise UnknownImage("the manifest is not a JSON object")
    return value
