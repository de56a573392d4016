"""A blob the cache and containerd both hold is kept once on disk (imgaccel.cache.containerd),
without sockets: a content store laid out as containerd's, on the cache's filesystem."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from imgaccel.cache import containerd as containerd_module
from imgaccel.cache.containerd import ContainerdSharing
from imgaccel.cache.space import Usage
from imgaccel.cache.store import BlobStore
from imgaccel.oci.digest import Digest
from tests.cache.test_store import put


@pytest.fixture
def content(tmp_path: Path) -> Path:
    return tmp_path / "containerd" / "io.containerd.content.v1.content"


def containerd_has(content: Path, digest: Digest, data: bytes) -> Path:
    """containerd's file of ``digest`` (read-only, as containerd commits it)."""
    path = content / "blobs" / digest.algorithm / digest.hex
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o444)
    return path


def threads_by_name() -> dict[str, int]:
    """This process's threads: their names (as ``top -H`` shows them) and IDs."""
    named = {}
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread that ended meanwhile
            named[(task / "comm").read_text().strip()] = int(task.name)
    return named


def same_file(a: Path, b: Path) -> bool:
    return os.path.samefile(a, b)


async def test_a_blob_containerd_holds_too_becomes_one_file(
    store: BlobStore, content: Path
) -> None:
    data = os.urandom(10_000)
    digest = put(store, data)
    theirs = containerd_has(content, digest, data)
    reopened: list[Digest] = []
    sharing = ContainerdSharing(store, content, reopened.append)

    found = await sharing.sweep()

    assert (found.shared, found.shared_bytes) == (1, 10_000)
    assert same_file(store.path(digest), theirs)
    assert os.stat(theirs).st_nlink == 2
    assert store.path(digest).read_bytes() == data
    assert reopened == [digest]  # libtorrent is told to reopen the file
    assert list(store.tmp_dir.iterdir()) == []
    assert store.frees(digest, 10_000) == 0  # evicting it gives the disk nothing back
    again = await sharing.sweep()  # nothing left to do; the shared bytes still counted
    assert (again.shared, again.shared_bytes, sharing.shared_bytes) == (0, 10_000, 10_000)
    sharing.close()


async def test_either_side_deleting_its_name_leaves_the_other_s_file_whole(
    store: BlobStore, content: Path
) -> None:
    data = os.urandom(5000)
    digest = put(store, data)
    theirs = containerd_has(content, digest, data)
    sharing = ContainerdSharing(store, content)
    await sharing.sweep()

    theirs.unlink()  # containerd's garbage collection

    assert store.path(digest).read_bytes() == data
    assert store.frees(digest, 5000) == 5000  # the cache's alone again
    assert store.remove(digest)
    sharing.close()


async def test_a_copy_that_does_not_match_its_digest_is_not_taken_nor_hashed_again(
    store: BlobStore,
    content: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = os.urandom(8000)
    digest = put(store, data)
    theirs = containerd_has(content, digest, bytes([data[0] ^ 1]) + data[1:])  # same size
    sharing = ContainerdSharing(store, content)

    with caplog.at_level(logging.WARNING, logger="imgaccel.cache.containerd"):
        found = await sharing.sweep()

    assert found.shared == 0
    assert not same_file(store.path(digest), theirs)
    assert store.path(digest).read_bytes() == data
    assert "does not match its digest" in caplog.text
    assert list(store.tmp_dir.iterdir()) == []
    links: list[object] = []
    monkeypatch.setattr(containerd_module.os, "link", lambda *a, **k: links.append(a))
    await sharing.sweep()
    assert links == []
    sharing.close()


async def test_a_copy_of_another_size_is_left_alone(store: BlobStore, content: Path) -> None:
    data = os.urandom(3000)
    digest = put(store, data)
    theirs = containerd_has(content, digest, data[:2000])  # containerd still writing, say

    found = await ContainerdSharing(store, content).sweep()

    assert found.shared == 0 and not same_file(store.path(digest), theirs)


async def test_a_blob_evicted_while_its_copy_was_hashed_is_not_put_back(
    store: BlobStore, content: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(4000)
    digest = put(store, data)
    containerd_has(content, digest, data)
    sharing = ContainerdSharing(store, content)
    matches = sharing._matches

    def evicted_meanwhile(path: Path, d: Digest, size: int) -> bool:
        assert store.remove(d)  # only safe here because the test's loop waits for this thread
        return matches(path, d, size)

    monkeypatch.setattr(sharing, "_matches", evicted_meanwhile)

    found = await sharing.sweep()

    assert found.shared == 0
    assert not store.path(digest).exists()
    assert list(store.tmp_dir.iterdir()) == []
    sharing.close()


async def test_hard_links_across_mounts_turn_sharing_off_with_one_line_saying_why(
    store: BlobStore,
    content: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two hostPath volumes are two mounts even on one disk: ``link`` fails with EXDEV."""
    data = [os.urandom(1000 + n) for n in range(3)]
    for blob in data:
        containerd_has(content, put(store, blob), blob)
    calls: list[object] = []

    def cross_mount(*args: object, **kwargs: object) -> None:
        calls.append(args)
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(containerd_module.os, "link", cross_mount)
    sharing = ContainerdSharing(store, content)

    with caplog.at_level(logging.INFO, logger="imgaccel.cache.containerd"):
        found = await sharing.sweep()
        await sharing.sweep()

    assert found.shared == 0 and len(calls) == 1
    assert sharing.off is not None and "two filesystems or mounts" in sharing.off
    assert [r.getMessage() for r in caplog.records] == [
        f"not sharing blobs with containerd's content store: {sharing.off}"
    ]
    sharing.close()


async def test_no_content_store_no_sharing(store: BlobStore, tmp_path: Path) -> None:
    put(store, os.urandom(1000))

    found = await ContainerdSharing(store, tmp_path / "nowhere").sweep()

    assert (found.shared, found.shared_bytes) == (0, 0)


async def test_eviction_for_disk_space_passes_over_shared_blobs(
    tmp_path: Path, content: Path
) -> None:
    """Deleting a shared blob's name gives the disk nothing: containerd keeps the inode."""
    usage = Usage(total=100_000, free=9_500)  # 500 bytes under a 10 % floor
    store = BlobStore(tmp_path / "cache", min_free_percent=10, disk=lambda _path: usage)
    store.open()
    shared_data, own_data = os.urandom(1000), os.urandom(1000)
    shared = put(store, shared_data)  # the least recently used
    own = put(store, own_data)
    containerd_has(content, shared, shared_data)
    sharing = ContainerdSharing(store, content)
    assert (await sharing.sweep()).shared == 1

    assert store.keep_floor() == (1, 1000)

    assert shared in store and own not in store
    sharing.close()


async def test_nothing_is_hashed_while_a_blob_is_being_fetched(
    store: BlobStore, content: Path
) -> None:
    data = os.urandom(2000)
    digest = put(store, data)
    theirs = containerd_has(content, digest, data)
    sharing = ContainerdSharing(store, content)
    store.reserve(1000)  # a fill in progress

    assert (await sharing.sweep()).shared == 0

    store.unreserve(1000)
    assert (await sharing.sweep()).shared == 1
    assert same_file(store.path(digest), theirs)
    sharing.close()


async def test_the_hashing_runs_in_a_named_thread_of_the_lowest_priority(
    store: BlobStore, content: Path
) -> None:
    """Housekeeping: it yields the CPU to the pulls, and ``top -H`` says what it is."""
    data = os.urandom(1000)
    containerd_has(content, put(store, data), data)
    sharing = ContainerdSharing(store, content)

    assert (await sharing.sweep()).shared == 1

    named = threads_by_name()
    assert "imgaccel-share" in named
    assert os.getpriority(os.PRIO_PROCESS, named["imgaccel-share"]) == 19
    sharing.close()


SWEEP_IN_A_MOUNT_NAMESPACE = """
import asyncio, sys
from pathlib import Path
from imgaccel.cache.containerd import ContainerdSharing
from imgaccel.cache.store import BlobStore
store = BlobStore(Path(sys.argv[1]))
store.open()
sharing = ContainerdSharing(store, Path(sys.argv[2]))
found = asyncio.run(sharing.sweep())
print(found.shared, sharing.off)
"""


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare"
)
def test_a_cache_bind_mounted_apart_from_the_content_store_turns_sharing_off(
    store: BlobStore, content: Path
) -> None:
    """A real second mount of the same disk (what a systemd sandbox or a hostPath volume
    makes): the kernel refuses the link with EXDEV, and the cache keeps its own copy."""
    data = os.urandom(3000)
    digest = put(store, data)
    theirs = containerd_has(content, digest, data)

    shared, off = _sweep_under_bind_mount(store.root, store.root, store.root, content)

    assert shared == "0" and "two filesystems or mounts" in off, off
    assert not same_file(store.path(digest), theirs)
    assert store.path(digest).read_bytes() == data


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare"
)
def test_one_mount_holding_the_cache_and_the_content_store_shares(
    tmp_path: Path, content: Path
) -> None:
    """The node DaemonSet's layout: one hostPath volume, containerd's root, holds both the
    content store and the cache, mounted in the pod at another path (a real bind mount)."""
    host_root = content.parent
    store = BlobStore(host_root / "imgaccel")
    store.open()
    data = os.urandom(3000)
    digest = put(store, data)
    theirs = containerd_has(content, digest, data)
    pod_root = tmp_path / "pod" / "var" / "lib" / "containerd"
    pod_root.mkdir(parents=True)

    shared, off = _sweep_under_bind_mount(
        host_root, pod_root, pod_root / "imgaccel", pod_root / content.name
    )

    assert (shared, off) == ("1", "None"), off
    assert same_file(store.path(digest), theirs)


def _sweep_under_bind_mount(
    source: Path, target: Path, cache: Path, content: Path
) -> tuple[str, str]:
    """One sharing round over ``cache`` and ``content`` in a mount namespace of its own where
    ``source`` is bind-mounted at ``target``: (blobs shared, why sharing is off, or "None")."""
    mount = shlex.join(["mount", "--bind", str(source), str(target)])
    sweep = shlex.join([sys.executable, "-c", SWEEP_IN_A_MOUNT_NAMESPACE, str(cache), str(content)])
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"{mount} && exec {sweep}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    shared, off = done.stdout.rstrip("\n").split(" ", 1)
    return shared, off
