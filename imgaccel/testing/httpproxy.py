"""tinyproxy (Debian ``tinyproxy``) as the HTTP proxy between a node and its origins: what a
company network puts there (Squid, tinyproxy, a gateway), forwarding plain HTTP by absolute URL
and tunnelling HTTPS with ``CONNECT``.

Its log is parsed so tests can tell what went through it: every request line it was sent
(``GET http://...`` or ``CONNECT host:port``). tinyproxy cannot listen on port 0, so it is given
a port that was free a moment ago, and started again on another if that one was taken.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from imgaccel.testing.procs import Service, free_port, terminate

# INFO ... : Request (file descriptor 4): CONNECT 127.0.0.1:5000 HTTP/1.1
_REQUEST_RE = re.compile(r"Request \(file descriptor \d+\): (\S+) (\S+) HTTP/")
_READY = "Accepting connections"


@dataclass
class Tinyproxy(Service):
    """tinyproxy on 127.0.0.1, its config and log under ``root``.

    ``credentials`` (``user``, ``password``): it takes only clients that send them (407 to the
    others). ``upstream``: it forwards everything to that HTTP proxy (``host:port``) instead of
    to the target, so a test can see which hosts a client asks for without any of them being
    reached.
    """

    root: Path
    credentials: tuple[str, str] | None = None
    upstream: str | None = None
    port: int = 0
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, target)
    log: list[str] = field(default_factory=list)
    _proc: asyncio.subprocess.Process | None = None
    _reader: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """The proxy's URL, with the credentials it takes."""
        user = f"{self.credentials[0]}:{self.credentials[1]}@" if self.credentials else ""
        return f"http://{user}127.0.0.1:{self.port}"

    def targets(self, method: str) -> list[str]:
        """What clients asked it for with ``method``: URLs (GET, HEAD) or ``host:port``."""
        return [target for m, target in self.requests if m == method]

    def config_text(self) -> str:
        lines = [
            f"Port {self.port}",
            "Listen 127.0.0.1",
            "Timeout 60",
            "MaxClients 100",
            "LogLevel Info",
            "Allow 127.0.0.1",
            "DisableViaHeader Yes",
        ]
        if self.credentials:
            lines.append(f"BasicAuth {self.credentials[0]} {self.credentials[1]}")
        if self.upstream:
            lines.append(f"Upstream http {self.upstream}")
        return "\n".join(lines) + "\n"

    async def start(self) -> None:
        binary = shutil.which("tinyproxy")
        if binary is None:
            raise RuntimeError("tinyproxy is not installed (apt-get install tinyproxy)")
        self.root.mkdir(parents=True, exist_ok=True)
        for _ in range(5):  # another program may take the free port before tinyproxy does
            self.port = self.port or free_port()
            if await self._start(binary):
                return
            self.port = 0
        raise RuntimeError("tinyproxy did not start:\n" + "".join(self.log[-10:]))

    async def _start(self, binary: str) -> bool:
        config = self.root / "tinyproxy.conf"
        config.write_text(self.config_text())
        # -d: in the foreground, logging to stdout.
        self._proc = await asyncio.create_subprocess_exec(
            binary, "-d", "-c", str(config),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        assert self._proc.stdout is not None
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read_log(self._proc.stdout, ready), name="proxy")
        try:
            await asyncio.wait_for(ready, 10)
        except (TimeoutError, EOFError):
            await self.stop()
            return False
        return True

    async def _read_log(self, stream: asyncio.StreamReader, ready: asyncio.Future[None]) -> None:
        async for raw in stream:
            line = raw.decode(errors="replace")
            self.log.append(line)
            if not ready.done() and _READY in line:
                ready.set_result(None)
            if match := _REQUEST_RE.search(line):
                self.requests.append((match.group(1), match.group(2)))
        if not ready.done():
            ready.set_exception(EOFError())

    async def stop(self) -> None:
        if self._proc is not None:
            await terminate(self._proc)
            self._proc = None
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, EOFError):
                await self._reader
            self._reader = None
