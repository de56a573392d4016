"""The CNCF distribution registry (``docker-registry serve``) as a real origin.

Its request log is parsed so tests and benchmarks can count what the origin served: requests per
path and the bytes it wrote, from the registry's own ``response completed`` lines.

With :class:`RegistryTLS` it serves HTTPS with a certificate of a private CA (an on-prem Harbor
behind the company's CA), and can require client certificates of that CA (mTLS).
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
# "listening on 127.0.0.1:5000" or, with TLS, "listening on 127.0.0.1:5000, tls".
_LISTEN_RE = re.compile(r'listening on ([^\s,"]+)')


@dataclass(frozen=True)
class RegistryTLS:
    """PEM files under one directory: a private CA, the registry's certificate (127.0.0.1 and
    localhost) and a client certificate, both signed by that CA; ``other_ca`` is a CA that
    signed neither (trusting it must not be enough). The directory itself is laid out as
    skopeo's ``--cert-dir`` wants it (``*.crt`` CAs, ``client.cert`` and ``client.key``); the
    registry's own pair is in ``server/``, and the CAs' keys are not kept."""

    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def other_ca(self) -> Path:
        return self.directory / "other-ca.crt"

    @property
    def cert(self) -> Path:
        return self.directory / "server" / "registry.crt"

    @property
    def key(self) -> Path:
        return self.directory / "server" / "registry.key"

    @property
    def client_cert(self) -> Path:
        return self.directory / "client.cert"  # the names skopeo's --cert-dir reads

    @property
    def client_key(self) -> Path:
        return self.directory / "client.key"

    @classmethod
    def make(cls, directory: Path) -> RegistryTLS:
        """A new CA and certificates in ``directory``."""
        from imgaccel.p2p.certs import issue, make_ca

        tls = cls(directory)
        ca = make_ca("registry-test")
        directory.mkdir(parents=True, exist_ok=True)
        tls.ca.write_bytes(ca.cert_pem)
        tls.other_ca.write_bytes(make_ca("unrelated").cert_pem)
        for common_name, cert, key in [
            ("registry", tls.cert, tls.key),
            ("imgaccel-node", tls.client_cert, tls.client_key),
        ]:
            pair = issue(ca, common_name, dns=("localhost",), ips=("127.0.0.1",))
            pair.write(cert.parent, cert.name, key.name)
        return tls


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
    keeps its port and its data. ``tls``: serve HTTPS with its certificate; with
    ``client_certs`` as well, accept only clients with a certificate of its CA.
    """

    root: Path
    host: str = "127.0.0.1"
    port: int = 0
    auth: dict[str, Any] | None = None
    proxy_remote: str | None = None
    netns: str | None = None
    tls: RegistryTLS | None = None
    client_certs: bool = False
    requests: list[Request] = field(default_factory=list)
    _proc: asyncio.subprocess.Process | None = None
    _reader: asyncio.Task[None] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.address}"

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
        if self.tls:
            tls: dict[str, Any] = {"certificate": str(self.tls.cert), "key": str(self.tls.key)}
            if self.client_certs:
                tls["clientcas"] = [str(self.tls.ca)]
            config["http"]["tls"] = tls
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
