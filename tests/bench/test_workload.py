"""The benchmark image is shaped like a GPU image and as big as asked."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

from imgaccel.bench import workload
from imgaccel.testing.images import GPU_PROFILE


def test_layer_sizes_follow_the_gpu_profile() -> None:
    sizes = workload.layer_sizes(300_000_000)
    assert len(sizes) == len(GPU_PROFILE)
    assert sizes == sorted(sizes, reverse=True)  # two big layers, then a tail of small ones
    assert sizes[0] + sizes[1] >= 0.75 * sum(sizes)
    assert abs(sum(sizes) - 300_000_000) < 300_000


async def test_built_image_is_as_big_as_asked_and_unpackable(tmp_path: Path) -> None:
    image = await workload.build(tmp_path / "layout", 3_000_000)
    # Random bytes do not compress: the pulled size is the asked size plus tar/gzip framing
    # (a tar header and padding to a 10 KiB record per layer, a few bytes of gzip).
    assert 0 <= image.size - 3_000_000 <= len(image.layers) * 16 * 1024
    config = json.loads(image.blob_path(image.config.digest).read_bytes())
    diff_ids = config["rootfs"]["diff_ids"]
    assert len(diff_ids) == len(image.layers) == len(GPU_PROFILE)
    first = gzip.decompress(image.blob_path(image.layers[0].digest).read_bytes())
    assert diff_ids[0] == "sha256:" + hashlib.sha256(first).hexdigest()
