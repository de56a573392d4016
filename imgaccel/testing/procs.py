"""Subprocess helpers shared by the launchers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Sequence
from types import TracebackType
from typing import Self


async def run(
    *argv: str,
    check: bool = True,
    input_: bytes | None = None,
    timeout: float = 300.0,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run a command to completion; raise with its output when ``check`` and it failed."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=subprocess.PIPE if input_ is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(input_), timeout)
    except (TimeoutError, asyncio.CancelledError):
        # A cancelled caller (Ctrl-C, SIGTERM) must not leave the child running.
        await terminate(proc)
        raise
    result = subprocess.CompletedProcess(list(argv), proc.returncode or 0, out, err)
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} exited {result.returncode}:\n{err.decode(errors='replace')[-4000:]}"
        )
    return result


async def terminate(proc: asyncio.subprocess.Process, grace: float = 5.0) -> None:
    """Stop a process we started (SIGTERM, then SIGKILL), by its PID only."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), grace)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (for programs that cannot listen on port 0)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def netns_prefix(netns: str | None) -> Sequence[str]:
    """The argv prefix that runs a command inside network namespace ``netns``."""
    return ("ip", "netns", "exec", netns) if netns else ()


def is_root() -> bool:
    return os.geteuid() == 0


class Service:
    """Something started and stopped by ``start()``/``stop()``, used as ``async with``."""

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
