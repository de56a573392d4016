"""Build OCI images of random (incompressible) layers and push them with skopeo.

The shape follows real GPU images: one or two big layers and a tail of small ones. Layers are
real gzip'd tars with correct ``diff_ids``, so containerd can unpack them.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from imgaccel.oci.media import OCI_INDEX, OCI_MANIFEST
from imgaccel.testing.procs import run

LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"

#: Layer sizes of GPU images as fractions of the whole (nvidia/cuda devel + PyTorch: a couple of
#: multi-GB layers, then a long tail of small ones).
GPU_PROFILE = (0.46, 0.30, 0.12, 0.05, 0.03, 0.02, 0.01, 0.005, 0.003, 0.002)


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int

    def as_json(self) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass
class Image:
    """An OCI image layout on disk (``layout``) and the descriptors in it."""

    layout: Path
    manifest: Descriptor
    config: Descriptor
    layers: list[Descriptor]
    index: Descriptor | None = None
    platforms: dict[str, Descriptor] = field(default_factory=dict)

    @property
    def size(self) -> int:
        """Bytes a pull transfers: manifest, config and layers."""
        return self.manifest.size + self.config.size + sum(d.size for d in self.layers)

    def blob_path(self, digest: str) -> Path:
        return self.layout / "blobs" / "sha256" / digest.removeprefix("sha256:")


def profile_sizes(
    total: int, profile: tuple[float, ...] = GPU_PROFILE, minimum: int = 4096
) -> list[int]:
    """Split ``total`` bytes into layer sizes following ``profile``."""
    return [max(minimum, int(total * share)) for share in profile]


def _write_blob(layout: Path, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    path = layout / "blobs" / "sha256" / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return f"sha256:{digest}"


def _write_layer(layout: Path, size: int, rng: random.Random, name: str) -> tuple[Descriptor, str]:
    """A gzip'd tar with one file of ``size`` random bytes; returns its descriptor and diff_id.

    The data is incompressible, so gzip level 0 (stored blocks) gives the same sizes a real
    compressor would, at disk speed rather than zlib's few MB/s on random data.
    """
    tmp = layout / "blobs" / "sha256" / "tmp-layer"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    diff = hashlib.sha256()

    class _Hashing(io.RawIOBase):
        def __init__(self, out: gzip.GzipFile):
            self.out = out

        def writable(self) -> bool:
            return True

        def write(self, b: bytes) -> int:  # type: ignore[override]
            diff.update(b)
            return self.out.write(b)

    with (
        open(tmp, "wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=0, mtime=0) as gz,
        tarfile.open(fileobj=_Hashing(gz), mode="w|", format=tarfile.PAX_FORMAT) as tar,
    ):
        info = tarfile.TarInfo(name)
        info.size = size
        info.mode = 0o644
        tar.addfile(info, _RandomReader(rng, size))
    data_hash = hashlib.sha256()
    with open(tmp, "rb") as f:
        while chunk := f.read(1 << 20):
            data_hash.update(chunk)
    digest = data_hash.hexdigest()
    final = layout / "blobs" / "sha256" / digest
    tmp.replace(final)
    return Descriptor(
        LAYER_TYPE, f"sha256:{digest}", final.stat().st_size
    ), f"sha256:{diff.hexdigest()}"


class _RandomReader(io.RawIOBase):
    def __init__(self, rng: random.Random, size: int):
        self.rng, self.left = rng, size

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return self.rng.randbytes(n)


def build_image(
    layout: Path,
    layer_sizes: list[int],
    *,
    seed: int = 0,
    arch: str = "amd64",
    os_name: str = "linux",
) -> Image:
    """Write a single-platform OCI image layout with one layer per entry of ``layer_sizes``."""
    layout.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"{seed}-{arch}")
    layers, diff_ids = [], []
    for i, size in enumerate(layer_sizes):
        desc, diff_id = _write_layer(layout, size, rng, f"layer-{seed}-{arch}-{i}.bin")
        layers.append(desc)
        diff_ids.append(diff_id)
    config_bytes = json.dumps(
        {
            "architecture": arch,
            "os": os_name,
            "config": {"Cmd": ["/bin/true"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
    ).encode()
    config = Descriptor(CONFIG_TYPE, _write_blob(layout, config_bytes), len(config_bytes))
    manifest_bytes = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.as_json(),
            "layers": [d.as_json() for d in layers],
        }
    ).encode()
    manifest = Descriptor(OCI_MANIFEST, _write_blob(layout, manifest_bytes), len(manifest_bytes))
    _write_index(layout, [manifest.as_json()])
    return Image(layout, manifest, config, layers)


def build_multiarch(
    layout: Path,
    layer_sizes: list[int],
    *,
    seed: int = 0,
    arches: tuple[str, ...] = ("amd64", "arm64"),
) -> Image:
    """An OCI image index over one image per architecture (all in one layout)."""
    images = {arch: build_image(layout, layer_sizes, seed=seed, arch=arch) for arch in arches}
    entries = [
        {**img.manifest.as_json(), "platform": {"architecture": arch, "os": "linux"}}
        for arch, img in images.items()
    ]
    index_bytes = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    ).encode()
    index = Descriptor(OCI_INDEX, _write_blob(layout, index_bytes), len(index_bytes))
    _write_index(layout, [index.as_json()])
    first = next(iter(images.values()))
    return Image(
        layout,
        first.manifest,
        first.config,
        first.layers,
        index=index,
        platforms={arch: img.manifest for arch, img in images.items()},
    )


def _write_index(layout: Path, manifests: list[dict[str, object]]) -> None:
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": manifests}))


async def push(
    image: Image, dest: str, *, creds: str | None = None, netns: str | None = None
) -> None:
    """Push the layout to ``dest`` (``HOST:PORT/repo:tag``) over plain HTTP with skopeo."""
    from imgaccel.testing.procs import netns_prefix

    argv = [*netns_prefix(netns), "skopeo", "copy", "--quiet", "--dest-tls-verify=false"]
    if creds:
        argv += ["--dest-creds", creds]
    if image.index is not None:
        argv.append("--all")
    await run(*argv, f"oci:{image.layout}", f"docker://{dest}")
