"""The cache directory: can the node write there, does the disk hold what the quota allows, and
can the cache keep blobs once with containerd's content store?

The node keeps ``cache.min_free_percent`` of the disk free (it keeps no blob that would take the
disk below that), so the disk check measures the quota against that floor, not against a full
disk.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

from imgaccel.cache.space import usage
from imgaccel.ops.check import Check, fail, ok, skip, warn
from imgaccel.ops.units import human_bytes


def cache_writable(cache_dir: Path) -> Check:
    """Write, fsync and delete a probe file in ``cache_dir`` (as the node does with blobs)."""
    name = "cache dir writable"
    if cache_dir.exists() and not cache_dir.is_dir():
        return fail(name, f"{cache_dir} is not a directory", _pick_another(cache_dir))
    if not cache_dir.exists():
        parent = existing_ancestor(cache_dir)
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            detail = f"{cache_dir} does not exist and cannot be made under {parent}"
            return fail(name, detail, _pick_another(cache_dir))
        detail = f"{cache_dir} does not exist yet (the node makes it when it starts)"
        return warn(name, detail, f"start the node, or: mkdir -p {cache_dir}")
    try:
        _probe(cache_dir)
    except OSError as exc:
        fix = (
            f"give the node's user {cache_dir} (`chown -R USER {cache_dir}`), or put it on a "
            "writable volume (a hostPath volume on Kubernetes)"
        )
        return fail(name, f"cannot write to {cache_dir}: {exc.strerror or exc}", fix)
    return ok(name, f"{cache_dir} takes writes")


def _probe(directory: Path) -> None:
    fd, name = tempfile.mkstemp(dir=directory, prefix=".imgaccel-doctor-")
    try:
        os.write(fd, b"imgaccel doctor\n")
        os.fsync(fd)
    finally:
        os.close(fd)
        os.unlink(name)


def _pick_another(cache_dir: Path) -> str:
    return f"point cache.dir (--cache-dir) at a writable directory instead of {cache_dir}"


def existing_ancestor(path: Path) -> Path:
    """``path`` or its nearest parent that exists."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def cache_bytes_on_disk(cache_dir: Path) -> int:
    """Bytes of the files under ``cache_dir`` (for when the node cannot be asked)."""
    total = 0
    for root, _dirs, files in os.walk(cache_dir):
        for file in files:
            try:
                total += os.lstat(os.path.join(root, file)).st_size
            except OSError:
                continue
    return total


def disk_headroom(cache_dir: Path, quota: int, used: int, min_free_percent: float = 0.0) -> Check:
    """Free space on the cache's disk against what the quota still lets the cache grow by, and
    against the floor the node leaves free (``min_free_percent``, as the node computes it)."""
    name = "disk headroom"
    disk = usage(existing_ancestor(cache_dir))
    floor = disk.floor(min_free_percent)
    room = f"{human_bytes(disk.free)} free of {human_bytes(disk.total)}"
    kept = f"cache.min_free_percent keeps {min_free_percent:g}% ({human_bytes(floor)}) free"
    fit = max(0, used + disk.free - floor)
    suggest = f"set cache.quota_bytes (--quota) to at most {human_bytes(fit)}"
    if disk.free < floor:
        detail = f"{room}, less than {kept}: the node keeps a new blob only by evicting others"
        return warn(name, detail, "free space on the disk, or lower cache.min_free_percent")
    if quota == 0:
        if floor == 0:
            detail = f"no quota, no min free: the cache grows until the disk is full ({room})"
            return warn(name, detail, f"{suggest}, or set cache.min_free_percent")
        return ok(name, f"no quota: the cache grows until {kept} ({room})")
    left = disk.free - max(0, quota - used)
    state = f"quota {human_bytes(quota)}, cache {human_bytes(used)}, {room}"
    if left < 0 and floor == 0:
        return fail(name, f"{state}: the disk fills up before the quota stops the cache", suggest)
    if left < floor:
        detail = f"{state}: the cache stops short of its quota, where {kept}"
        return warn(name, detail, suggest)
    return ok(name, f"{state}; at its quota {human_bytes(left)} stays free")


SHARING_DOCS = "docs/deploy.md, 'One copy on disk with containerd'"


def containerd_sharing(
    cache_dir: Path, content_dir: Path | None, shared_bytes: int | None
) -> Check:
    """Whether a blob of containerd's content store can be hard-linked into the cache, as the
    node does to keep blobs both hold once on disk: one is linked into ``cache_dir`` and the
    link removed again (containerd's file is not touched). ``shared_bytes``: what the running
    node keeps once now, when it said."""
    name = "containerd sharing"
    if content_dir is None:
        return skip(name, "cache.containerd_content_dir is empty: blobs are not shared")
    if not content_dir.is_dir():
        detail = (
            f"no containerd content store at {content_dir} (in the DaemonSet's pod, the pod "
            "does not see it): a blob containerd pulled through the node is on the disk twice"
        )
        return skip(name, detail)
    blob = _any_blob(content_dir / "blobs")
    if blob is None:
        return skip(name, f"{content_dir} holds no blob yet: no link to try")
    if not cache_dir.is_dir():
        return skip(name, f"{cache_dir} does not exist yet: no link to try")
    probe = cache_dir / f".imgaccel-doctor-link-{os.getpid()}"
    try:
        os.link(blob, probe, follow_symlinks=False)
    except OSError as exc:
        why = (
            "another filesystem or mount" if exc.errno == errno.EXDEV else exc.strerror or str(exc)
        )
        detail = (
            f"cannot hard-link {content_dir} into {cache_dir} ({why}): a blob containerd "
            "pulled through the node is on the disk twice"
        )
        fix = (
            f"put both on one filesystem and one mount ({SHARING_DOCS}), or set "
            'cache.containerd_content_dir = "" to stop trying'
        )
        return warn(name, detail, fix)
    probe.unlink()
    kept = f" ({human_bytes(shared_bytes)} kept once now)" if shared_bytes else ""
    return ok(name, f"{content_dir} links into {cache_dir}: blobs both hold are kept once{kept}")


def _any_blob(blobs: Path) -> Path | None:
    """A regular file of containerd's ``blobs/<algorithm>/``, if there is one."""
    for algorithm in ("sha256", "sha512"):
        try:
            with os.scandir(blobs / algorithm) as entries:
                for entry in entries:
                    if stat.S_ISREG(entry.stat(follow_symlinks=False).st_mode):
                        return Path(entry.path)
        except OSError:
            continue
    return None
