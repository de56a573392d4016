"""imgaccel's own daemons (node, tracker, seeder) started as subprocesses in a namespace.

They run as ``python -m imgaccel ...`` with this interpreter, so the benchmark measures the
checkout it was started from. Which commands exist is probed with ``--help``: the benchmark
skips what is not there instead of pretending.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from imgaccel.testing.procs import Service, netns_prefix, run, terminate

_READY_RE = re.compile(r"listening on (https?://\S+)")


def imgaccel_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "imgaccel", *args]


@functools.cache
def command_help(command: str) -> str | None:
    """``imgaccel COMMAND --help`` output, or None when the command does not exist (yet)."""
    try:
        done = subprocess.run(
            imgaccel_argv(command, "--help"), capture_output=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.decode(errors="replace") if done.returncode == 0 else None


@dataclass
class Daemon(Service):
    """``imgaccel ARGS`` in ``netns``; ready once it logs ``listening on http://...``.

    Its output goes to ``log``; :meth:`stop` ends it by its PID.
    """

    args: list[str]
    netns: str
    log: Path
    #: Extra environment (``IMGACCEL_*`` settings that have no flag).
    env: dict[str, str] = field(default_factory=dict)
    url: str = ""
    _proc: asyncio.subprocess.Process | None = None
    _drain: asyncio.Task[None] | None = None
    _lines: list[str] = field(default_factory=list)

    async def start(self, within: float = 60.0) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._proc = await asyncio.create_subprocess_exec(
            *netns_prefix(self.netns),
            *imgaccel_argv(*self.args),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
        )
        assert self._proc.stdout is not None
        ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._drain = asyncio.create_task(
            self._read(self._proc.stdout, ready), name=f"imgaccel-{self.args[0]}-log"
        )
        try:
            self.url = await asyncio.wait_for(ready, within)
        except (TimeoutError, EOFError):
            await self.stop()
            tail = "".join(self._lines[-20:])
            raise RuntimeError(
                f"imgaccel {self.args[0]} did not start in {self.netns}:\n{tail}"
            ) from None

    async def _read(self, stream: asyncio.StreamReader, ready: asyncio.Future[str]) -> None:
        with open(self.log, "a") as out:  # noqa: ASYNC230 - a local log, written line by line
            async for raw in stream:
                line = raw.decode(errors="replace")
                out.write(line)
                out.flush()
                if not ready.done():
                    self._lines.append(line)
                    if m := _READY_RE.search(line):
                        ready.set_result(m.group(1).rstrip("/"))
        if not ready.done():
            ready.set_exception(EOFError())

    async def healthy(self) -> bool:
        """``GET /healthz`` from inside the namespace answers 2xx."""
        probe = (
            "import sys, urllib.request\n"
            f"sys.exit(0 if urllib.request.urlopen({self.url + '/healthz'!r}, timeout=5)"
            ".status < 300 else 1)"
        )
        done = await run(*netns_prefix(self.netns), sys.executable, "-c", probe, check=False)
        return done.returncode == 0

    async def stop(self) -> None:
        if self._proc is not None:
            await terminate(self._proc)
            self._proc = None
        if self._drain is not None:
            with contextlib.suppress(asyncio.CancelledError, EOFError):
                await self._drain
            self._drain = None
