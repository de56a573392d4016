"""Snapshot bundles: export from a warm node's cache, import into a clean one, reject bad ones."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import zstandard
from click.testing import CliRunner

from imgaccel.cache.snapshot import SnapshotInvalid, import_bundle
from imgaccel.cli.cache import cache
from imgaccel.cli.prewarm import prewarm
from imgaccel.cli.snapshot import snapshot
from imgaccel.testing.images import Image
from imgaccel.testing.registry import DistributionRegistry
from tests.conftest import needs_registry


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
