"""A containerd of our own (root, state and socket under one directory) and ``ctr`` pulls into it.

The ``cri`` and ``opt`` plugins are disabled: they are not needed to pull and they fail inside a
network namespace. Pulls unpack with the ``native`` snapshotter, which works on any filesystem.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from imgaccel.testing.procs import netns_prefix, run, terminate

_CONFIG = """\
version = 2
root = "{root}/root"
state = "{root}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.internal.v1.opt",
                    "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "{root}/containerd.sock"
[ttrpc]
  address = "{root}/containerd-ttrpc.sock"
[debug]
  address = ""
"""


@dataclass
class Containerd:
    """containerd running with everything under ``root``; optionally inside ``netns``.
    ``extra_config`` is appended to its config (a ``[proxy_plugins]`` section, say)."""

    root: Path
    netns: str | None = None
    extra_config: str = ""
    _proc: asyncio.subprocess.Process | None = None

    @property
    def socket(self) -> Path:
        return self.root / "containerd.sock"

    async def start(self) -> None:
        if shutil.which("containerd") is None:
            raise RuntimeError("containerd is not installed (apt-get install containerd)")
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "config.toml"
        config.write_text(_CONFIG.format(root=self.root) + self.extra_config)
        log = open(self.root / "containerd.log", "wb")  # noqa: SIM115 - handed to the child
        self._proc = await asyncio.create_subprocess_exec(
            *netns_prefix(self.netns),
            "containerd",
            "--config",
            str(config),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        log.close()
        for _ in range(200):
            if self.socket.exists():
                probe = await self.ctr("version", check=False)
                if probe.returncode == 0:
                    return
            if self._proc.returncode is not None:
                break
            await asyncio.sleep(0.05)
        await self.stop()
        raise RuntimeError(f"containerd did not start; see {self.root / 'containerd.log'}")

    async def ctr(
        self, *args: str, check: bool = True, timeout: float = 600.0
    ) -> subprocess.CompletedProcess[bytes]:
        return await run(
            *netns_prefix(self.netns),
            "ctr",
            "--address",
            str(self.socket),
            "--namespace",
            "default",
            *args,
            check=check,
            timeout=timeout,
        )

    async def pull(
        self,
        ref: str,
        *,
        hosts_dir: Path | None = None,
        user: str | None = None,
        unpack: bool = True,
        platform: str | None = None,
        check: bool = True,
        timeout: float = 600.0,
    ) -> subprocess.CompletedProcess[bytes]:
        """``ctr images pull`` (the transfer runs in the ctr process, as with crictl/kubelet);
        with ``unpack=False``, ``ctr content fetch``: the same transfer, no unpacking."""
        args = ["images", "pull"] if unpack else ["content", "fetch"]
        if hosts_dir is not None:
            args += ["--hosts-dir", str(hosts_dir)]
        if user:
            args += ["--user", user]
        if unpack:
            args += ["--snapshotter", "native"]
        if platform:
            args += ["--platform", platform]
        args.append(ref)
        return await self.ctr(*args, check=check, timeout=timeout)

    async def remove_all_images(self) -> None:
        """Forget every image and its content (so a second pull transfers everything again)."""
        listed = await self.ctr("images", "ls", "-q")
        refs = listed.stdout.decode().split()
        if refs:
            await self.ctr("images", "rm", "--sync", *refs)
        content = await self.ctr("content", "ls", "-q", check=False)
        digests = content.stdout.decode().split()
        if digests:
            await self.ctr("content", "rm", *digests, check=False)

    async def stop(self) -> None:
        if self._proc is not None:
            await terminate(self._proc)
            self._proc = None

    async def __aenter__(self) -> Containerd:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        with contextlib.suppress(Exception):
            await self.stop()
