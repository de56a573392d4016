"""Snapshot bundles: the verified blobs and manifests of images, in one zstd-compressed tar.

Layout of the tar (in this order; nothing else is accepted)::

    index.json                   {"version": 1, "images": [...], "manifests": [...], "blobs": [...]}
    manifests/sha256/<hex>       manifest and index bodies
    blobs/sha256/<hex>           config and layer blobs

:func:`export_bundle` reads a cache directory without changing it (safe while a node runs:
blobs are immutable, SQLite reads do not block it, and it leaves ``tmp/`` alone) and re-hashes
every blob as it writes it. :func:`import_bundle` streams the bundle (never extracting by name:
every member name must match the layout above, and only regular files are read), hashes every
blob and manifest against its digest into a directory of its own, ``tmp/import-<id>/`` (removed
afterwards, whatever happens), and commits nothing until the whole bundle verified: then each
blob through the store's fsync-and-rename :meth:`~imgaccel.cache.store.BlobStore.commit`, then
manifests and tags. A corrupt or hostile bundle loads nothing.

Room is checked from ``index.json`` before the first blob is written (:class:`NoRoom`): the blobs
the cache lacks must fit on its filesystem above ``min_free_percent`` (kept free for containerd,
as for a fill), and with a quota all the bundle's blobs must fit in it beside the pinned ones (a
node that indexes them evicts down to its quota, imported blobs too, pinned ones never: a bundle
that cannot fit would be partly deleted as soon as it is indexed). A blob the cache holds already
is verified from the bundle but not written again. A disk that runs out anyway (``ENOSPC``, the
quota of a user) ends the import the same way, its staging directory removed, nothing committed.

The index's metadata is believed only about the bundle's own content, as far as the operator who
made it is trusted: ``repos`` (which becomes provenance) only for digests the bundle holds,
``public`` only for repositories those name and this cache has no word on yet (from an origin
or an earlier bundle), and every ``images`` entry must be a valid host, name, tag and a manifest
of the bundle, or nothing loads.

Import is safe beside a node running on the same cache. That node reads manifests, tags and
provenance from ``meta.db`` at every request, so it serves them at once; its blobs it indexes in
memory (:class:`~imgaccel.cache.store.BlobStore`), and it indexes an imported one when a ``GET``
misses it (:meth:`~imgaccel.cache.store.BlobStore.adopt`), or all of them, counting them against
its quota, when told (``POST /_imgaccel/rescan``: ``imgaccel snapshot import --node``) or at its
next start.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import zstandard

from imgaccel.cache import space
from imgaccel.cache.meta import Manifest, MetaStore
from imgaccel.cache.store import BlobStore
from imgaccel.errors import CacheError, CacheFull, RegistryError, TagInvalid
from imgaccel.oci.digest import Digest
from imgaccel.oci.manifest import manifest_digest
from imgaccel.oci.media import INDEX_TYPES
from imgaccel.oci.reference import ImageRef, is_tag, validate_host, validate_name

_MEMBER_RE = re.compile(r"^(index\.json|(manifests|blobs)/sha256/[0-9a-f]{64})$")
_MAX_DOCUMENT = 16 * 1024 * 1024
_CHUNK = 1 << 20


class SnapshotInvalid(CacheError):
    """The bundle is corrupt, hostile, or does not match its index; nothing was loaded."""


class NotCached(CacheError):
    """An image to export is not (wholly) in the cache."""


class NoRoom(CacheFull):
    """The bundle's blobs do not fit in the cache (its disk above the floor, or its quota beside
    the pinned blobs), or its disk ran out while staging them; nothing was loaded."""


@dataclass
class Contents:
    """What a bundle holds (``index.json``)."""

    images: list[dict[str, Any]] = field(default_factory=list)
    manifests: dict[str, Manifest] = field(default_factory=dict)
    blobs: dict[str, int] = field(default_factory=dict)
    repos: dict[str, tuple[str, str]] = field(default_factory=dict)  # digest -> registry, repo
    public: dict[str, bool] = field(default_factory=dict)  # "registry/repo" -> seen public

    def index(self) -> bytes:
        return json.dumps(
            {
                "version": 1,
                "images": self.images,
                "manifests": [
                    {"digest": d, "media_type": m.media_type} for d, m in self.manifests.items()
                ],
                "blobs": [{"digest": d, "size": s} for d, s in self.blobs.items()],
                "repos": {d: list(r) for d, r in self.repos.items()},
                "public": self.public,
            }
        ).encode()


# -- export ---------------------------------------------------------------------------------------


def collect(store: BlobStore, meta: MetaStore, images: list[str]) -> Contents:
    """What to export for ``images`` (tags or digests known to this cache)."""
    contents = Contents()
    for text in images:
        ref = ImageRef.parse(text)
        digest = ref.digest or _tagged(meta, ref)
        contents.images.append(
            {
                "registry": ref.registry,
                "repository": ref.name,
                "tag": ref.tag,
                "digest": str(digest),
            }
        )
        _add_manifest(store, meta, contents, ref, digest, top=True)
        public = meta.is_public(ref.registry, ref.name)
        if public is not None:
            contents.public[f"{ref.registry}/{ref.name}"] = public
    return contents


def _tagged(meta: MetaStore, ref: ImageRef) -> Digest:
    entry = meta.tag(ref.registry, ref.name, ref.tag or "latest")
    if entry is None:
        raise NotCached(f"{ref}: this cache never resolved that tag (prewarm it first)")
    return entry.digest


def _add_manifest(
    store: BlobStore, meta: MetaStore, contents: Contents, ref: ImageRef, digest: Digest, top: bool
) -> None:
    manifest = meta.manifest(digest)
    if manifest is None:
        if top:
            raise NotCached(f"{ref}: manifest {digest} is not in the cache")
        return  # a platform of the index this cache never fetched
    contents.manifests[str(digest)] = manifest
    contents.repos[str(digest)] = (ref.registry, ref.name)
    document = json.loads(manifest.body)
    if manifest.media_type in INDEX_TYPES or "manifests" in document:
        for entry in document.get("manifests") or []:
            _add_manifest(store, meta, contents, ref, Digest.parse(entry["digest"]), top=False)
        return
    for descriptor in [document.get("config"), *(document.get("layers") or [])]:
        if not isinstance(descriptor, dict) or descriptor.get("urls"):
            continue
        blob = Digest.parse(descriptor["digest"])
        size = _cached_size(store, blob)
        if size is None:
            raise NotCached(f"{ref}: blob {blob} is not in the cache (prewarm it first)")
        contents.blobs[str(blob)] = size
        contents.repos[str(blob)] = (ref.registry, ref.name)


def _cached_size(store: BlobStore, digest: Digest) -> int | None:
    # From the file, not the store's index: only the node that owns the cache builds that.
    try:
        return store.path(digest).stat().st_size
    except FileNotFoundError:
        return None


def export_bundle(cache_dir: Path, images: list[str], out: Path, level: int = 3) -> Contents:
    """Write ``images`` from the cache at ``cache_dir`` into the bundle ``out``; nothing is left
    at ``out`` (nor ``out.part``) unless it succeeds."""
    if not (cache_dir / "meta.db").is_file():
        # MetaStore would create an empty cache at a mistyped path and report "not cached".
        raise CacheError(f"{cache_dir} is not an imgaccel cache directory (it has no meta.db)")
    # Not store.open(): that is the owning node's crash recovery, which empties tmp/ and so
    # would break every fill of a node running on this cache.
    store = BlobStore(cache_dir)
    meta = MetaStore(cache_dir / "meta.db")
    partial = out.with_name(out.name + ".part")
    try:
        contents = collect(store, meta, images)
        with (
            open(partial, "wb") as raw,
            zstandard.ZstdCompressor(level=level).stream_writer(raw) as packed,
            tarfile.open(fileobj=packed, mode="w|") as tar,
        ):
            _add_bytes(tar, "index.json", contents.index())
            for digest, manifest in contents.manifests.items():
                _add_bytes(tar, _member(digest, "manifests"), manifest.body)
            for digest, size in contents.blobs.items():
                _add_blob(tar, store, Digest.parse(digest), size)
        partial.replace(out)
        return contents
    except OSError as exc:  # out's directory missing or not writable, a blob evicted meanwhile
        raise CacheError(f"export to {out} failed: {exc}") from exc
    finally:
        partial.unlink(missing_ok=True)
        meta.close()


def _member(digest: str, kind: str) -> str:
    parsed = Digest.parse(digest)
    return f"{kind}/{parsed.algorithm}/{parsed.hex}"


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
    tar.addfile(info, io.BytesIO(data))


def _add_blob(tar: tarfile.TarFile, store: BlobStore, digest: Digest, size: int) -> None:
    """Add a blob, re-hashing it on the way: a cache file damaged on disk is not exported."""
    info = tarfile.TarInfo(_member(str(digest), "blobs"))
    info.size, info.mtime, info.mode = size, int(time.time()), 0o644
    with open(store.path(digest), "rb") as f:
        hashing = _HashingReader(f, digest.algorithm)
        tar.addfile(info, hashing)
    if hashing.hexdigest() != digest.hex:
        raise CacheError(f"cached blob {digest} does not match its digest; not exported")


class _HashingReader:
    def __init__(self, raw: IO[bytes], algorithm: str) -> None:
        self._raw, self._hash = raw, hashlib.new(algorithm)

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        self._hash.update(data)
        return data

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


# -- import ---------------------------------------------------------------------------------------


@dataclass
class _Staged:
    blobs: dict[Digest, Path] = field(default_factory=dict)  # verified and written: to commit
    held: set[str] = field(default_factory=set)  # in the cache already: verified, not written
    verified_held: set[str] = field(default_factory=set)
    manifests: dict[str, bytes] = field(default_factory=dict)


def import_bundle(
    bundle: Path, cache_dir: Path, *, min_free_percent: float = 0.0, quota_bytes: int = 0
) -> Contents:
    """Verify ``bundle`` entirely, then load it into the cache at ``cache_dir``. :class:`NoRoom`
    before any blob is written when its blobs do not fit above ``min_free_percent`` of the
    cache's filesystem, or in ``quota_bytes`` (0: no quota) beside the pinned blobs."""
    store = BlobStore(cache_dir, quota_bytes, min_free_percent=min_free_percent)
    # Not store.open(): it empties tmp/, where a running node writes its fills. This import
    # stages in a directory of its own, so neither that node nor another import loses files.
    store.make_layout()
    meta = MetaStore(cache_dir / "meta.db")
    staging = store.tmp_dir / f"import-{uuid.uuid4().hex}"
    staged = _Staged()
    try:
        staging.mkdir()
        contents = _stage(bundle, staging, staged, lambda sizes: _check_room(store, meta, sizes))
        _commit(store, meta, contents, staged)
        return contents
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        meta.close()


def _stage(
    bundle: Path, staging: Path, staged: _Staged, check_room: Callable[[dict[str, int]], set[str]]
) -> Contents:
    """Verify the bundle into ``staging``; ``check_room(blob_sizes)`` is called with the index,
    before any blob, and names the blobs the cache holds already (verified, not written)."""
    index: dict[str, Any] | None = None
    try:
        for member, reader in _members(bundle):
            if member.name == "index.json":
                index = _parse_index(_read_small(reader, member.size)) if index is None else None
                if index is None:
                    raise SnapshotInvalid("the bundle has two index.json")
                staged.held = check_room(index["blob_sizes"])
            elif index is None:
                raise SnapshotInvalid("index.json must come first in the bundle")
            elif member.name.startswith("blobs/"):
                _stage_blob(staging, staged, member, reader, index)
            else:
                _stage_manifest(staged, member, reader, index)
        if index is None:
            raise SnapshotInvalid("the bundle has no index.json")
        return _check_complete(index, staged)
    except (tarfile.TarError, zstandard.ZstdError, OSError, EOFError) as exc:
        raise SnapshotInvalid(f"unreadable bundle: {exc}") from exc
    except (RegistryError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise SnapshotInvalid(f"the bundle's index is invalid: {exc}") from exc


def _members(bundle: Path) -> Iterator[tuple[tarfile.TarInfo, IO[bytes]]]:
    with (
        open(bundle, "rb") as raw,
        zstandard.ZstdDecompressor().stream_reader(raw) as unpacked,
        tarfile.open(fileobj=unpacked, mode="r|") as tar,
    ):
        for member in tar:
            if not member.isreg() or not _MEMBER_RE.fullmatch(member.name):
                raise SnapshotInvalid(f"unexpected member in the bundle: {member.name[:200]!r}")
            reader = tar.extractfile(member)
            assert reader is not None
            yield member, reader


def _read_small(reader: IO[bytes], size: int) -> bytes:
    if size > _MAX_DOCUMENT:
        raise SnapshotInvalid("a manifest or index in the bundle is too large")
    return reader.read()


def _parse_index(data: bytes) -> dict[str, Any]:
    try:
        index = json.loads(data)
        if index.get("version") != 1:
            raise SnapshotInvalid("unknown bundle version")
        index["blob_sizes"] = {
            str(Digest.parse(b["digest"])): int(b["size"]) for b in index["blobs"]
        }
        index["manifest_types"] = {
            str(Digest.parse(m["digest"])): str(m["media_type"]) for m in index.get("manifests", [])
        }
        return dict(index)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SnapshotInvalid(f"index.json is invalid: {exc}") from exc


def _stage_blob(
    staging: Path,
    staged: _Staged,
    member: tarfile.TarInfo,
    reader: IO[bytes],
    index: dict[str, Any],
) -> None:
    digest = Digest.parse(member.name.replace("blobs/", "").replace("/", ":"))
    if index["blob_sizes"].get(str(digest)) != member.size:
        raise SnapshotInvalid(f"{digest}: not in index.json, or of another size")
    hasher = hashlib.new(digest.algorithm)
    if str(digest) in staged.held:
        while chunk := reader.read(_CHUNK):
            hasher.update(chunk)
        staged.verified_held.add(str(digest))
    else:
        temp = staging / f"{digest.algorithm}-{digest.hex}"
        staged.blobs[digest] = temp
        _write(temp, reader, hasher)
    if hasher.hexdigest() != digest.hex:
        raise SnapshotInvalid(f"{digest}: the bundle's bytes do not match the digest")


def _write(temp: Path, reader: IO[bytes], hasher: hashlib._Hash) -> None:
    """Copy ``reader`` into ``temp``, hashing it. Out of space is :class:`NoRoom`, not a
    bundle that cannot be read."""
    try:
        with open(temp, "wb") as out:
            while chunk := reader.read(_CHUNK):
                hasher.update(chunk)
                out.write(chunk)
    except OSError as exc:
        if exc.errno in space.NO_SPACE:
            message = f"the cache's disk ran out of space while staging the bundle: {exc}"
            raise NoRoom(message) from exc
        raise


def _stage_manifest(
    staged: _Staged, member: tarfile.TarInfo, reader: IO[bytes], index: dict[str, Any]
) -> None:
    digest = Digest.parse(member.name.replace("manifests/", "").replace("/", ":"))
    body = _read_small(reader, member.size)
    media_type = index["manifest_types"].get(str(digest), "")
    if manifest_digest(body, media_type, digest.algorithm) != digest:
        raise SnapshotInvalid(f"manifest {digest}: the bundle's bytes do not match the digest")
    staged.manifests[str(digest)] = body


def _check_complete(index: dict[str, Any], staged: _Staged) -> Contents:
    contents = Contents()
    for entry in index.get("manifests", []):
        body = staged.manifests.get(entry["digest"])
        if body is None:
            raise SnapshotInvalid(f"manifest {entry['digest']} is listed but missing")
        contents.manifests[entry["digest"]] = Manifest(
            Digest.parse(entry["digest"]), str(entry["media_type"]), body
        )
    staged_blobs = {str(d) for d in staged.blobs} | staged.verified_held
    missing = set(index["blob_sizes"]) - staged_blobs
    if missing:
        raise SnapshotInvalid(f"{len(missing)} blob(s) listed but missing, e.g. {min(missing)}")
    contents.blobs = dict(index["blob_sizes"])
    contents.repos = _repos(index.get("repos", {}), {*contents.manifests, *contents.blobs})
    contents.public = _public(index.get("public", {}), set(contents.repos.values()))
    contents.images = _images(index.get("images", []), contents.manifests)
    return contents


def _repos(entries: object, held: set[str]) -> dict[str, tuple[str, str]]:
    """Which repository holds each digest, for the digests the bundle holds only: an entry
    for another digest would give a layer the bundle never carried (one cached from a private
    repository, say) the provenance and repository the access guard trusts."""
    repos: dict[str, tuple[str, str]] = {}
    for name, entry in _mapping(entries, "repos").items():
        digest = _checked(_valid_digest, name, "a digest in 'repos'")
        if digest not in held:
            continue
        if not isinstance(entry, list) or len(entry) != 2:
            raise SnapshotInvalid(f"'repos' of {digest} must be [registry, repository]")
        registry = _checked(validate_host, entry[0], f"the registry of {digest}")
        repos[digest] = (registry, _checked(validate_name, entry[1], f"the repository of {digest}"))
    return repos


def _public(entries: object, named: set[tuple[str, str]]) -> dict[str, bool]:
    """Whether each repository was seen public, for repositories the bundle's content is in only:
    the word makes a repository's cached content anyone's, so it goes no further than that."""
    public: dict[str, bool] = {}
    for name, value in _mapping(entries, "public").items():
        registry, _, repo = name.partition("/")
        if (registry, repo) not in named:
            continue
        if not isinstance(value, bool):
            raise SnapshotInvalid(f"'public' of {name[:200]!r} must be true or false")
        public[name] = value
    return public


def _images(entries: object, manifests: dict[str, Manifest]) -> list[dict[str, Any]]:
    """Every image entry checked before anything is committed: one bad entry loads nothing."""
    if not isinstance(entries, list):
        raise SnapshotInvalid("'images' must be a list")
    images = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise SnapshotInvalid(f"an entry of 'images' is not an object: {str(entry)[:200]!r}")
        digest = _checked(_valid_digest, entry.get("digest"), "an image's digest")
        if digest not in manifests:
            raise SnapshotInvalid(f"image manifest {digest} is not in the bundle")
        tag = entry.get("tag")
        images.append(
            {
                "registry": _checked(validate_host, entry.get("registry"), "an image's registry"),
                "repository": _checked(validate_name, entry.get("repository"), "an image's name"),
                "tag": None if tag is None else _checked(_valid_tag, tag, "an image's tag"),
                "digest": digest,
            }
        )
    return images


def _mapping(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SnapshotInvalid(f"'{what}' must be an object")
    return value


def _checked(validate: Callable[[str], str], value: object, what: str) -> str:
    """``validate(value)`` (its normal form), or SnapshotInvalid naming ``what`` and the value."""
    if not isinstance(value, str):
        raise SnapshotInvalid(f"{what} must be a string, not {type(value).__name__}")
    try:
        return validate(value)
    except RegistryError:
        raise SnapshotInvalid(f"{what} is invalid: {value[:200]!r}") from None


def _valid_digest(text: str) -> str:
    return str(Digest.parse(text))


def _valid_tag(text: str) -> str:
    if not is_tag(text):
        raise TagInvalid("invalid tag")
    return text


def _check_room(store: BlobStore, meta: MetaStore, sizes: dict[str, int]) -> set[str]:
    """The bundle's blobs (``sizes``) this cache holds already; :class:`NoRoom` when the others
    do not fit on its disk above the floor, or all of them in its quota beside the pinned ones."""
    held = {d for d in sizes if store.blob_file(Digest.parse(d)) is not None}
    _check_disk(store, sum(size for d, size in sizes.items() if d not in held))
    if store.quota_bytes:
        _check_quota(store, meta, sizes)
    return held


def _check_disk(store: BlobStore, new: int) -> None:
    found = store.disk_usage()
    if found is None:
        return  # the filesystem cannot be asked: running out while staging still ends cleanly
    floor = found.floor(store.min_free_percent)
    if found.free - new < floor:
        raise NoRoom(
            f"its {new} bytes of new blobs would leave less than {store.min_free_percent:g}% of "
            f"the cache's filesystem free (cache.min_free_percent, kept for containerd): "
            f"{found.free} of {found.total} bytes are free, {new + floor - found.free} more "
            "needed (`imgaccel cache gc --target` frees cached blobs)"
        )


def _check_quota(store: BlobStore, meta: MetaStore, sizes: dict[str, int]) -> None:
    now = time.time()
    pinned = {digest for digest, until, _ in meta.pins() if until > now}
    pinned_bytes = sum(found.st_size for d in pinned if (found := store.blob_file(d)))
    needed = sum(size for d, size in sizes.items() if Digest.parse(d) not in pinned)
    if needed + pinned_bytes > store.quota_bytes:
        raise NoRoom(
            f"its {needed} bytes of blobs do not fit in the cache's quota of {store.quota_bytes} "
            f"bytes (cache.quota_bytes) beside the {pinned_bytes} bytes pinned: the node would "
            "evict part of the bundle as soon as it indexes it"
        )


def _commit(store: BlobStore, meta: MetaStore, contents: Contents, staged: _Staged) -> None:
    """Everything verified: blobs first (fsync + rename), then what points at them."""
    for digest, temp in list(staged.blobs.items()):
        store.commit(temp, digest, contents.blobs[str(digest)])
        del staged.blobs[digest]
    for manifest in contents.manifests.values():
        meta.put_manifest(manifest)
    for name, (registry, repo) in contents.repos.items():
        meta.add_content(registry, repo, Digest.parse(name))
    for name, public in contents.public.items():
        registry, _, repo = name.partition("/")
        # What this cache saw at the origin wins over a bundle's word: a bundle fills in only
        # repositories the cache never saw, so it cannot make the cache's private content public.
        if meta.is_public(registry, repo) is None:
            meta.set_public(registry, repo, public)
    for image in contents.images:  # validated by _images
        if image["tag"] is not None:
            digest = Digest.parse(image["digest"])
            meta.put_tag(image["registry"], image["repository"], image["tag"], digest)
