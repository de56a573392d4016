"""The node's local, verified, content-addressed snapshot cache.

Nouns: ``store`` (BlobStore: verified blobs, LRU, quota), ``fill`` (Fill: a blob being written
while clients read it), ``meta`` (MetaStore: manifests, tags, repository contents, visibility),
``config`` (CacheSettings), ``writeback`` (early writeback of a fill's pages, so the commit's fsync
is short), ``space`` (the filesystem's free space, and a fill's blocks taken before its first byte).
Core package: imports only ``imgaccel.oci`` and ``imgaccel.errors``.
"""

from imgaccel.cache.config import CacheSettings
from imgaccel.cache.fill import Fill, FillFailed
from imgaccel.cache.meta import Manifest, MetaStore, TagEntry
from imgaccel.cache.store import BlobStore, Entry

__all__ = [
    "BlobStore",
    "CacheSettings",
    "Entry",
    "Fill",
    "FillFailed",
    "Manifest",
    "MetaStore",
    "TagEntry",
]
