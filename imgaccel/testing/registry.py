"""The CNCF distribution registry (``docker-registry serve``) as a real origin.

Its request log is parsed so tests and benchmarks can count what the origin served: requests per
path and the bytes it wrote, from the registry's own ``response completed`` lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imgaccel.testing.procs import Service, netns_prefix, terminate

_FIELD_RE = re.compile(r'([\w.]+)=("(?:[^"\\]|\\.)*"|\S+)')
_LISTEN_RE = re.compile(r"listening on (\S+)")


@dataclass(frozen=True)
class Request:
    method: str
    uri: str
    status: int
    written: int
    #: Who asked, as the registry logged it: tells a mirror's fetch from a client going around it.
    remote_addr: str = ""
    user_agent: str = ""


def registry_binary() -> str:
    found = shutil.which("docker-registry") or shutil.which("registry")
    if found is None:
        raise RuntimeError(
            "the distribution registry is not installed (apt-get install docker-registry)"
        )
    return found


@dataclass
class DistributionRegistry(Service):
    """Run the distribution registry with its data under ``root``.

    ``auth`` is the registry's ``auth:`` section (e.g. ``{"token": {...}}``); ``proxy_remote`` makes
    it a pull-through cache of another registry. ``port`` 0 picks a free one; a restarted registry
    keeps its port and its data.
    """

    root: Path
    host: str = "127.0.0.1"
    port: int = 0
    auth: dict[str, Any] | None = None
    proxy_remote: str | None = None
    netns: str | None = None
    requests: list[Request] = field(default_factory=list)
    _proc: asyncio.subprocess.Process | None = None
    _reader: asyncio.Task[None] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def config_text(self) -> str:
        import json

        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.root / "data")},
                "delete": {"enabled": True},
            },
            "http": {"addr": f"{self.host}:{self.port}", "secret": "imgaccel-test"},
        }
        if self.auth:
            config["auth"] = self.auth
        if self.proxy_remote:
            config["proxy"] = {"remoteurl": self.proxy_remote}
        return json.dumps(config)  # JSON is YAML

    async def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "config.yml"
        config.write_text(self.config_text())
        self._proc = await asyncio.create_subprocess_exec(
            *netns_prefix(self.netns),
            registry_binary(),
            "serve",
            str(config),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        assert self._proc.stderr is not None
        listening: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(
            self._read_log(self._proc.stderr, listening), name="registry-log"
        )
        try:
            address = await asyncio.wait_for(listening, 20)
        except (TimeoutError, EOFError):
            await self.stop()
            raise RuntimeError("the distribution registry did not start") from None
        self.port = int(address.rpartition(":")[2])

    async def _read_log(self, stream: asyncio.StreamReader, listening: asyncio.Future[str]) -> None:
        async for raw in stream:
            line = raw.decode(errors="replace")
            if not listening.done() and (m := _LISTEN_RE.search(line)):
                listening.set_result(m.group(1).strip('"'))
            if "response completed" in line:
                fields = {k: v.strip('"') for k, v in _FIELD_RE.findall(line)}
                self.requests.append(
                    Request(
                        fields.get("http.request.method", ""),
                        fields.get("http.request.uri", ""),
                        int(fields.get("http.response.status", "0")),
                        int(fields.get("http.response.written", "0")),
                        fields.get("http.request.remoteaddr", ""),
                        fields.get("http.request.useragent", ""),
                    )
                )
        if not listening.done():
            listening.set_exception(EOFError())

    async def stop(self) -> None:
        if self._proc is not None:
            await terminate(self._proc)
            self._proc = None
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None

    async def settle(self, quiet: float = 0.3, timeout: float = 10.0) -> None:
        """Wait until the request log has been quiet for ``quiet`` seconds: the registry logs a
        request after its response is sent, so a client can finish before the line arrives."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        seen = -1
        while len(self.requests) != seen and loop.time() < deadline:
            seen = len(self.requests)
            await asyncio.sleep(quiet)

    # -- counting what the origin served -------------------------------------------------------

    def blob_gets(self, digest: str | None = None) -> list[Request]:
        """GETs of blobs (any repository) that sent content, optionally of one digest."""
        return [
            r
            for r in self.requests
            if r.method == "GET"
            and "/blobs/" in r.uri
            and r.status in (200, 206)
            and (digest is None or r.uri.split("?")[0].endswith(digest))
        ]

    def manifest_requests(self) -> list[Request]:
        return [r for r in self.requests if "/manifests/" in r.uri]

    def bytes_sent(self) -> int:
        return sum(r.written for r in self.requests)
