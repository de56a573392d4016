"""The image every scenario pulls: GPU-shaped, scaled to this machine, built once per run."""

from __future__ import annotations

import asyncio
from pathlib import Path

from imgaccel.testing.images import Image, build_image, profile_sizes

REPOSITORY = "bench/gpu"
TAG = "v1"


def layer_sizes(total: int) -> list[int]:
    """Uncompressed layer sizes of a ``total``-byte image with the GPU layer profile.

    Layers are random bytes, so the pulled size is ``total`` plus tar and gzip framing (under
    16 KiB per layer).
    """
    return profile_sizes(total)


async def build(layout: Path, total: int, *, seed: int = 0) -> Image:
    """Build the image in a thread (it is CPU-bound: random bytes and gzip)."""
    return await asyncio.to_thread(build_image, layout, layer_sizes(total), seed=seed)
