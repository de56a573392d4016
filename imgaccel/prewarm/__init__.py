"""Prewarm: fetch an image's blobs into a node's cache before anyone pulls it.

Nouns: ``platform`` (``os/arch[/variant]`` and picking manifests of an index), ``plan`` (what an
image reference resolves to: manifests and the blobs to fetch), ``errors`` (outcomes a script can
act on, each with its exit code), ``node`` (the node daemon's HTTP API as a prewarm client sees
it: manifests and blobs through cache -> peers -> origin), ``jobs`` (the tracker's prewarm-job
API as the CLI sees it).

A service-side package: it imports core (``imgaccel.oci``, ``imgaccel.errors``) and never the CLI
or the proxy; the node's prefetch worker (``imgaccel.proxy.prefetch``) reuses ``platform`` and
``plan`` with an in-process manifest source.
"""

from imgaccel.prewarm.errors import (
    CacheFullError,
    Denied,
    NodeUnreachable,
    PrewarmError,
    UnknownImage,
)
from imgaccel.prewarm.plan import Blob, ImagePlan, resolve
from imgaccel.prewarm.platform import Platform

__all__ = [
    "Blob",
    "CacheFullError",
    "Denied",
    "ImagePlan",
    "NodeUnreachable",
    "Platform",
    "PrewarmError",
    "UnknownImage",
    "resolve",
]
