"""stargz-snapshotter, the lazy-pulling snapshotter of eStargz images, run as containerd's proxy
snapshotter, and eStargz images made with its ``ctr-remote``.

``containerd-stargz-grpc`` is the snapshotter's daemon. Debian's ``stargz-snapshotter`` package
ships only ``ctr-remote``; ``scripts/install --test`` builds the daemon from the library Debian
packages (``golang-github-containerd-stargz-snapshotter-dev``) with ``scripts/stargz-grpc``.

The snapshotter does not read containerd's hosts.toml: its own config names the mirrors of a
registry (``[[resolver.host."REGISTRY".mirrors]]``), tried in order before the registry itself,
and it sends no ``?ns=``: each registry's mirror is a node listener of its own
(``registry_listen``), or the node's main one for its ``default_registry``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from imgaccel.oci.media import OCI_MANIFEST
from imgaccel.testing.containerd import Containerd
from imgaccel.testing.images import CONFIG_TYPE, LAYER_TYPE, Descriptor, Image
from imgaccel.testing.procs import Service, run, terminate

#: The name containerd knows the snapshotter by (``--snapshotter stargz``).
SNAPSHOTTER = "stargz"

DAEMON = "containerd-stargz-grpc"


def proxy_plugin_config(socket: Path) -> str:
    """containerd's config section that makes the snapshotter at ``socket`` its ``stargz``."""
    return f"""
[proxy_plugins]
  [proxy_plugins.{SNAPSHOTTER}]
    type = "snapshot"
    address = "{socket}"
"""


@dataclass
class StargzSnapshotter(Service):
    """``containerd-stargz-grpc`` with its root, socket and config under ``root``; ``mirrors``
    maps a registry (``HOST:PORT``) to the plain-HTTP mirror it is to be pulled through."""

    root: Path
    mirrors: dict[str, str]
    _proc: asyncio.subprocess.Process | None = None

    @property
    def socket(self) -> Path:
        return self.root / "stargz.sock"

    @property
    def log(self) -> Path:
        return self.root / "stargz.log"

    def config_text(self) -> str:
        lines = []
        for registry, mirror in self.mirrors.items():
            lines += [
                f'[[resolver.host."{registry}".mirrors]]',
                f'host = "{mirror}"',
                "insecure = true",
            ]
        return "\n".join(lines) + "\n"

    async def start(self) -> None:
        binary = shutil.which(DAEMON)
        if binary is None:
            raise RuntimeError(f"{DAEMON} is not installed (scripts/install --test builds it)")
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "config.toml"
        config.write_text(self.config_text())
        with open(self.log, "wb") as log:
            self._proc = await asyncio.create_subprocess_exec(
                binary,
                "--address",
                str(self.socket),
                "--root",
                str(self.root / "root"),
                "--config",
                str(config),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        for _ in range(200):
            if self.socket.exists() or self._proc.returncode is not None:
                break
            await asyncio.sleep(0.05)
        if not self.socket.exists():
            await self.stop()
            raise RuntimeError(f"{DAEMON} did not start: {self.log.read_text()[-2000:]}")

    async def stop(self) -> None:
        """Stop the daemon, then unmount what it left mounted under its root (its layers'
        FUSE mounts, and the snapshots' bind mounts)."""
        if self._proc is not None:
            await terminate(self._proc)
            self._proc = None
        for mountpoint in mounts_under(self.root):
            await run("umount", "--lazy", str(mountpoint), check=False)


def mounts_under(root: Path) -> dict[Path, str]:
    """The mount points at or under ``root``, deepest first, and their filesystem types
    (``fuse.rawBridge``: a layer the snapshotter mounted)."""
    prefix = str(root.resolve())
    found = {}
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _, point, fstype, *_ = line.split()
        if point == prefix or point.startswith(prefix + "/"):
            found[Path(point)] = fstype
    return dict(sorted(found.items(), key=lambda item: len(item[0].parts), reverse=True))


def build_files_image(layout: Path, files: dict[str, bytes]) -> Image:
    """A single-layer OCI image layout whose layer holds ``files`` (name: content), in order."""
    raw, diff = io.BytesIO(), hashlib.sha256()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(content), 0o644
            tar.addfile(info, io.BytesIO(content))
    diff.update(raw.getvalue())
    # Level 0: the content is the test's (random, as a rule); ctr-remote compresses it anyway.
    layer = _blob(layout, gzip.compress(raw.getvalue(), compresslevel=0, mtime=0), LAYER_TYPE)
    config = _blob(
        layout,
        json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff.hexdigest()}"]},
            }
        ).encode(),
        CONFIG_TYPE,
    )
    manifest_json = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.as_json(),
        "layers": [layer.as_json()],
    }
    manifest = _blob(layout, json.dumps(manifest_json).encode(), OCI_MANIFEST)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (layout / "index.json").write_text(
        json.dumps({"schemaVersion": 2, "manifests": [manifest.as_json()]})
    )
    return Image(layout, manifest, config, [layer])


def _blob(layout: Path, data: bytes, media_type: str) -> Descriptor:
    digest = hashlib.sha256(data).hexdigest()
    path = layout / "blobs" / "sha256" / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return Descriptor(media_type, f"sha256:{digest}", len(data))


async def convert_to_estargz(containerd: Containerd, source: str, dest: str) -> None:
    """Pull ``source`` (plain HTTP) into ``containerd``, convert it to eStargz with ``ctr-remote
    image convert --estargz --oci`` and push it as ``dest``; then forget both images there."""
    await containerd.ctr("images", "pull", "--plain-http", source)
    await ctr_remote(containerd, "images", "convert", "--estargz", "--oci", source, dest)
    await containerd.ctr("images", "push", "--plain-http", dest)
    await containerd.remove_all_images()


async def rpull(
    containerd: Containerd, ref: str, hosts_dir: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    """``ctr-remote image rpull``: the layers become the snapshotter's remote snapshots (mounted,
    fetched on demand) instead of being downloaded and unpacked. ``hosts_dir``: containerd's
    hosts.toml for what ctr-remote fetches itself (the manifest and the config)."""
    hosts = ["--hosts-dir", str(hosts_dir)] if hosts_dir else ["--plain-http"]
    return await ctr_remote(containerd, "images", "rpull", *hosts, ref, timeout=120)


async def ctr_remote(
    containerd: Containerd, *args: str, timeout: float = 300.0
) -> subprocess.CompletedProcess[bytes]:
    if shutil.which("ctr-remote") is None:
        raise RuntimeError("ctr-remote is not installed (apt-get install stargz-snapshotter)")
    return await run(
        "ctr-remote",
        "--address",
        str(containerd.socket),
        "--namespace",
        "default",
        *args,
        timeout=timeout,
    )


@contextlib.asynccontextmanager
async def mounted_view(containerd: Containerd, parent: str, target: Path) -> AsyncIterator[Path]:
    """A read-only view of the snapshot ``parent`` (a chain ID) mounted at ``target``."""
    key = f"view-{parent.removeprefix('sha256:')[:12]}"
    answer = await containerd.ctr(
        "snapshots", "--snapshotter", SNAPSHOTTER, "view", "--mounts", key, parent
    )
    await asyncio.to_thread(target.mkdir, parents=True, exist_ok=True)
    for mount in json.loads(answer.stdout):  # containerd's mount.Mount, as Go marshals it
        options = ",".join(mount.get("Options") or [])
        await run("mount", "-t", mount["Type"], "-o", options, mount["Source"], str(target))
    try:
        yield target
    finally:
        await run("umount", str(target), check=False)
        await containerd.ctr("snapshots", "--snapshotter", SNAPSHOTTER, "rm", key, check=False)
