"""Snapshot bundles: export from a warm node's cache, import into a clean one, reject bad ones."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import random
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import zstandard
from click.testing import CliRunner

from imgaccel.cache.meta import Manifest, MetaStore
from imgaccel.cache.snapshot import SnapshotInvalid, export_bundle, import_bundle
from imgaccel.cache.store import BlobStore
from imgaccel.cli.cache import cache
from imgaccel.cli.prewarm import prewarm
from imgaccel.cli.snapshot import snapshot
from imgaccel.oci.digest import Digest
from imgaccel.testing.images import Image
from imgaccel.testing.registry import DistributionRegistry
from tests.cache.test_store import put
from tests.conftest import needs_registry, until


def blobs_of(image: Image) -> list[str]:
    return [image.config.digest, *(layer.digest for layer in image.layers)]


async def invoke(command: Any, *args: str) -> Any:
    return await asyncio.to_thread(CliRunner().invoke, command, list(args), catch_exceptions=False)


async def get(url: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.read()


@pytest.mark.system
@needs_registry
async def test_a_bundle_carries_an_image_to_a_clean_node_that_never_sees_the_origin(
    origin: DistributionRegistry,
    pushed: str,
    small_image: Image,
    node_factory: Callable[..., Any],
    tmp_path: Path,
) -> None:
    warm = await node_factory(origin, cache_dir=tmp_path / "warm")
    assert (await invoke(prewarm, "--node", warm.url, pushed)).exit_code == 0
    bundle = tmp_path / "image.tar.zst"
    exported = await invoke(
        snapshot, "export", pushed, "-o", str(bundle), "--cache-dir", str(tmp_path / "warm")
    )
    assert exported.exit_code == 0, exported.output

    imported = await invoke(snapshot, "import", str(bundle), "--cache-dir", str(tmp_path / "clean"))
    assert imported.exit_code == 0, imported.output
    await origin.stop()  # the clean node must serve everything from the bundle
    clean = await node_factory(origin, cache_dir=tmp_path / "clean", upstream_client={"retries": 0})

    repo = pushed.split("/", 1)[1].split(":")[0]
    status, body = await get(f"{clean.url}/v2/{repo}/manifests/v1?ns={origin.address}")
    assert status == 200, body
    assert json.loads(body)["layers"][0]["digest"] == small_image.layers[0].digest
    for digest in blobs_of(small_image):
        status, body = await get(f"{clean.url}/v2/{repo}/blobs/{digest}?ns={origin.address}")
        assert status == 200
        assert "sha256:" + hashlib.sha256(body).hexdigest() == digest


def _bundle(path: Path, members: list[tuple[str, bytes]], index: dict[str, Any]) -> Path:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in [("index.json", json.dumps(index).encode()), *members]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(zstandard.ZstdCompressor().compress(raw.getvalue()))
    return path


def _index(*blobs: bytes) -> dict[str, Any]:
    return {
        "version": 1,
        "images": [],
        "manifests": [],
        "blobs": [{"digest": _digest(b), "size": len(b)} for b in blobs],
    }


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _member(data: bytes) -> str:
    return "blobs/sha256/" + hashlib.sha256(data).hexdigest()


def _loaded(cache_dir: Path) -> list[Path]:
    return [p for p in (cache_dir / "blobs").rglob("*") if p.is_file()] + list(
        (cache_dir / "tmp").iterdir()
    )


def test_a_corrupted_blob_rejects_the_bundle_and_loads_nothing(tmp_path: Path) -> None:
    good, bad = b"good layer" * 1000, b"bad layer" * 1000
    corrupted = bytearray(bad)
    corrupted[10] ^= 0xFF
    bundle = _bundle(
        tmp_path / "b.tar.zst",
        [(_member(good), good), (_member(bad), bytes(corrupted))],
        _index(good, bad),
    )
    with pytest.raises(SnapshotInvalid, match="do not match"):
        import_bundle(bundle, tmp_path / "cache")
    assert _loaded(tmp_path / "cache") == []


def test_truncated_bundle_and_missing_blobs_are_rejected(tmp_path: Path) -> None:
    good = b"layer" * 1000
    bundle = _bundle(tmp_path / "b.tar.zst", [(_member(good), good)], _index(good, b"other"))
    with pytest.raises(SnapshotInvalid, match="missing"):
        import_bundle(bundle, tmp_path / "cache")
    whole = _bundle(tmp_path / "w.tar.zst", [(_member(good), good)], _index(good))
    cut = tmp_path / "cut.tar.zst"
    cut.write_bytes(whole.read_bytes()[:-20])
    with pytest.raises(SnapshotInvalid):
        import_bundle(cut, tmp_path / "cache")
    assert _loaded(tmp_path / "cache") == []


@pytest.mark.parametrize(
    "name", ["../escape", "/etc/evil", "blobs/sha256/../../../x", "blobs/x", "index.json/.."]
)
def test_path_tricks_inside_the_tar_are_rejected(tmp_path: Path, name: str) -> None:
    bundle = _bundle(tmp_path / "b.tar.zst", [(name, b"x")], _index())
    with pytest.raises(SnapshotInvalid, match="unexpected member"):
        import_bundle(bundle, tmp_path / "cache" / "inner")
    assert not (tmp_path / "escape").exists() and not (tmp_path / "x").exists()


def test_a_symlink_member_is_rejected(tmp_path: Path) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        data = json.dumps(_index()).encode()
        info = tarfile.TarInfo("index.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("blobs/sha256/" + "a" * 64)
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    bundle = tmp_path / "b.tar.zst"
    bundle.write_bytes(zstandard.ZstdCompressor().compress(raw.getvalue()))
    with pytest.raises(SnapshotInvalid, match="unexpected member"):
        import_bundle(bundle, tmp_path / "cache")


@pytest.mark.system
@needs_registry
async def test_cache_cli_lists_pins_unpins_and_collects(
    origin: DistributionRegistry,
    pushed: str,
    small_image: Image,
    node_factory: Callable[..., Any],
) -> None:
    node = await node_factory(origin)
    assert (
        await invoke(prewarm, "--node", node.url, "--pin-seconds", "600", pushed)
    ).exit_code == 0
    listing = json.loads((await invoke(cache, "ls", "--node", node.url, "--json")).stdout)
    assert {b["digest"] for b in listing["blobs"] if b["reason"] == "prewarm"} == set(
        blobs_of(small_image)
    )

    gc = await invoke(cache, "gc", "--node", node.url, "--target", "0")
    assert "removed 0 blobs" in gc.stdout  # everything is pinned

    layer = small_image.layers[0].digest
    # Pinned for a second reason, then one reason dropped: still pinned, so gc keeps it.
    assert (await invoke(cache, "pin", layer, "--node", node.url)).exit_code == 0  # manual
    unpinned = await invoke(cache, "unpin", layer, "--reason", "prewarm", "--node", node.url)
    assert unpinned.exit_code == 0, unpinned.output
    listing = json.loads((await invoke(cache, "ls", "--node", node.url, "--json")).stdout)
    assert next(b for b in listing["blobs"] if b["digest"] == layer)["reasons"] == ["manual"]
    gc = await invoke(cache, "gc", "--node", node.url, "--target", "0")
    assert "removed 0 blobs" in gc.stdout
    assert (await invoke(cache, "unpin", layer, "--node", node.url)).exit_code == 0  # all
    gc = await invoke(cache, "gc", "--node", node.url, "--target", "0")
    assert "removed 1 blobs" in gc.stdout
    listing = json.loads((await invoke(cache, "ls", "--node", node.url, "--json")).stdout)
    assert layer not in {b["digest"] for b in listing["blobs"]}

    status, _ = await get(f"{node.url}/_imgaccel/pins/..%2F..%2Fetc")
    assert status in (404, 405)
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{node.url}/_imgaccel/pins", json={"digests": ["../../x"], "seconds": 1}
        ) as response,
    ):
        assert response.status == 400


# -- a cache and a running node beside export and import ------------------------------------------

REGISTRY, REPO = "registry.local:5000", "team/app"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG, LAYER = b'{"architecture": "amd64"}', b"layer" * 1000


def _manifest(config: bytes, *layers: bytes) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {"digest": _digest(config), "size": len(config)},
            "layers": [{"digest": _digest(layer), "size": len(layer)} for layer in layers],
        }
    ).encode()


MANIFEST = _manifest(CONFIG, LAYER)


def _warm(cache_dir: Path) -> BlobStore:
    """The cache a node leaves after pulling REGISTRY/REPO:v1, and that node's store (opened)."""
    store = BlobStore(cache_dir)
    store.open()
    for data in (CONFIG, LAYER):
        put(store, data)
    meta = MetaStore(cache_dir / "meta.db")
    meta.put_manifest(Manifest(Digest.of(MANIFEST), MANIFEST_TYPE, MANIFEST))
    meta.put_tag(REGISTRY, REPO, "v1", Digest.of(MANIFEST))
    meta.close()
    return store


def _image_bundle(path: Path, **index: Any) -> Path:
    """A bundle of REGISTRY/REPO:v1 as export writes it; ``index`` overrides its index.json."""
    members = [
        ("manifests/sha256/" + Digest.of(MANIFEST).hex, MANIFEST),
        (_member(CONFIG), CONFIG),
        (_member(LAYER), LAYER),
    ]
    image = {"registry": REGISTRY, "repository": REPO, "tag": "v1", "digest": _digest(MANIFEST)}
    default = {
        **_index(CONFIG, LAYER),
        "manifests": [{"digest": _digest(MANIFEST), "media_type": MANIFEST_TYPE}],
        "images": [image],
        "repos": {_digest(d): [REGISTRY, REPO] for d in (MANIFEST, CONFIG, LAYER)},
    }
    return _bundle(path, members, {**default, **index})


def test_export_and_import_leave_a_running_nodes_fills_alone(tmp_path: Path) -> None:
    warm = _warm(tmp_path / "warm")
    warm_fill = warm.temp_path()
    warm_fill.write_bytes(b"half a blob")  # a fill in flight on the node serving this cache
    bundle = tmp_path / "app.tar.zst"
    exported = export_bundle(tmp_path / "warm", [f"{REGISTRY}/{REPO}:v1"], bundle)
    assert set(exported.blobs) == {_digest(CONFIG), _digest(LAYER)}
    assert warm_fill.read_bytes() == b"half a blob"

    other = BlobStore(tmp_path / "other")
    other.open()
    other_fill = other.temp_path()
    other_fill.write_bytes(b"half a blob")
    import_bundle(bundle, tmp_path / "other")
    assert other_fill.read_bytes() == b"half a blob"
    assert list((tmp_path / "other" / "tmp").iterdir()) == [other_fill]  # staging removed
    assert other.path(Digest.of(LAYER)).read_bytes() == LAYER


async def test_two_imports_at_once_keep_each_others_files(tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    slow_blob = random.Random(1).randbytes(2_000_000)
    slow = _bundle(tmp_path / "slow.tar.zst", [(_member(slow_blob), slow_blob)], _index(slow_blob))
    quick = _bundle(tmp_path / "quick.tar.zst", [(_member(LAYER), LAYER)], _index(LAYER))
    fifo = tmp_path / "slow.fifo"  # the slow import reads what the test feeds it, when it does
    os.mkfifo(fifo)
    slow_import = asyncio.create_task(asyncio.to_thread(import_bundle, fifo, cache_dir))
    data = slow.read_bytes()
    with await asyncio.to_thread(open, fifo, "wb") as feed:
        await asyncio.to_thread(feed.write, data[: len(data) // 2])
        await asyncio.to_thread(feed.flush)
        # Halfway through its blob: a file of the slow import is in tmp/.
        await until(lambda: any(p.is_file() for p in (cache_dir / "tmp").rglob("*")))
        await asyncio.to_thread(import_bundle, quick, cache_dir)
        await asyncio.to_thread(feed.write, data[len(data) // 2 :])
    await slow_import
    store = BlobStore(cache_dir)
    assert store.path(Digest.of(slow_blob)).read_bytes() == slow_blob
    assert store.path(Digest.of(LAYER)).read_bytes() == LAYER
    assert list((cache_dir / "tmp").iterdir()) == []


def test_a_bundle_says_nothing_about_content_it_does_not_hold(tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    meta = MetaStore(cache_dir / "meta.db")
    meta.set_public("private.corp", "secret", False)  # this cache saw it private at its origin
    elsewhere = Digest.parse("sha256:" + "cd" * 32)  # e.g. a private layer this cache holds
    bundle = _image_bundle(
        tmp_path / "b.tar.zst",
        repos={
            **{_digest(d): [REGISTRY, REPO] for d in (MANIFEST, CONFIG, LAYER)},
            str(elsewhere): ["docker.io", "library/alpine"],
        },
        public={
            f"{REGISTRY}/{REPO}": True,
            "docker.io/library/alpine": True,
            "private.corp/secret": True,
        },
    )
    import_bundle(bundle, cache_dir)
    assert meta.origins_of(elsewhere) == frozenset()
    assert not meta.has_content("docker.io", "library/alpine", elsewhere)
    assert meta.is_public("docker.io", "library/alpine") is None
    assert meta.is_public("private.corp", "secret") is False
    # What the bundle holds keeps its provenance and repository, public as exported.
    assert meta.origins_of(Digest.of(LAYER)) == {REGISTRY}
    assert meta.has_content(REGISTRY, REPO, Digest.of(LAYER))
    assert meta.is_public(REGISTRY, REPO) is True


def test_a_bundle_cannot_make_public_a_repository_this_cache_saw_private(tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    meta = MetaStore(cache_dir / "meta.db")
    meta.set_public(REGISTRY, REPO, False)
    import_bundle(
        _image_bundle(tmp_path / "b.tar.zst", public={f"{REGISTRY}/{REPO}": True}), cache_dir
    )
    assert meta.is_public(REGISTRY, REPO) is False
    assert meta.has_content(REGISTRY, REPO, Digest.of(LAYER))  # the content itself loaded


_IMAGE = {"registry": REGISTRY, "repository": REPO, "tag": "v1", "digest": _digest(MANIFEST)}


@pytest.mark.parametrize(
    "images",
    [
        ["oops"],
        [{k: v for k, v in _IMAGE.items() if k != "digest"}],
        [{**_IMAGE, "registry": "../../x"}],
        [{**_IMAGE, "repository": "A B"}],
        [{**_IMAGE, "tag": "t\x00"}],
        [{**_IMAGE, "tag": 1}],
        [{**_IMAGE, "digest": _digest(b"a manifest the bundle does not hold")}],
        [_IMAGE, {**_IMAGE, "digest": "sha256:nothex"}],  # the good one loads nothing either
        {"not": "a list"},
    ],
)
def test_an_invalid_image_entry_rejects_the_bundle_and_loads_nothing(
    tmp_path: Path, images: Any
) -> None:
    cache_dir = tmp_path / "cache"
    with pytest.raises(SnapshotInvalid):
        import_bundle(_image_bundle(tmp_path / "b.tar.zst", images=images), cache_dir)
    assert _loaded(cache_dir) == []
    meta = MetaStore(cache_dir / "meta.db")
    assert meta.manifest(Digest.of(MANIFEST)) is None
    assert meta.tag(REGISTRY, REPO, "v1") is None
    assert meta.origins_of(Digest.of(LAYER)) == frozenset()


def _export(*args: str) -> Any:
    # catch_exceptions=False: a crash fails the test instead of passing as exit code 1.
    return CliRunner().invoke(snapshot, ["export", *args], catch_exceptions=False)


def test_a_failed_export_says_why_in_one_line_and_leaves_no_file(tmp_path: Path) -> None:
    warm = _warm(tmp_path / "warm")
    warm.path(Digest.of(LAYER)).write_bytes(b"rotten" * 1000)  # damaged on disk
    out = tmp_path / "app.tar.zst"
    result = _export(f"{REGISTRY}/{REPO}:v1", "-o", str(out), "--cache-dir", str(tmp_path / "warm"))
    assert result.exit_code == 1
    assert "does not match its digest" in result.output and "Traceback" not in result.output
    assert list(tmp_path.glob("app.tar.zst*")) == []


def test_export_into_a_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    _warm(tmp_path / "warm")
    out = tmp_path / "missing" / "app.tar.zst"
    result = _export(f"{REGISTRY}/{REPO}:v1", "-o", str(out), "--cache-dir", str(tmp_path / "warm"))
    assert result.exit_code == 1
    assert f"export to {out} failed" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_export_from_a_mistyped_cache_dir_creates_nothing(tmp_path: Path) -> None:
    typo = tmp_path / "typo"
    result = _export(
        f"{REGISTRY}/{REPO}:v1", "-o", str(tmp_path / "a.tar.zst"), "--cache-dir", str(typo)
    )
    assert result.exit_code == 1
    assert "not an imgaccel cache directory" in result.output
    assert not typo.exists()
