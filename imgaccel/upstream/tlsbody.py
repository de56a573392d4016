"""A big HTTPS blob body read by a thread on a connection of its own.

asyncio keeps a TLS connection's state in its SSL protocol: no socket to give a thread, as
:func:`imgaccel.upstream.socketbody.take_over` does for plain HTTP, and a body decrypted and
parsed on the event loop costs about three times the CPU of the plain path (a GiB from the
distribution registry: 6.6-7.7 CPU-s against 2.3-2.5). Taking the TLS state out of asyncio
gained only ~10 % (a GIL hand-off per record through a ``MemoryBIO``), through its internals.

So once aiohttp has parsed the head of a big response, :func:`reopen` pauses it (no more reads:
its TCP window closes and the origin stops sending on it) and sends the same request again on a
blocking ``ssl`` socket: to the same peer address, with the SSL context aiohttp's connection was
made with (the upstream's CA file and client certificate: :mod:`imgaccel.upstream.tls`), for the
same URL (the final one, after redirects), with the headers aiohttp sent on it (``Authorization``
only where the client sent it: none on a redirect to another host) and ``Connection: close``.
When that answers the same bytes (the same status, ``Content-Length``, ``Content-Range`` and
``ETag``), aiohttp's connection is aborted (never reused) and the thread reads the body
(:func:`imgaccel.upstream.socketbody.copy`). When anything goes wrong before that (no
connection, a refused handshake, a 403 for a signed URL that serves once, another length),
aiohttp reads on as before: this path never fails a fill. Through an HTTP proxy
(:mod:`imgaccel.upstream.proxy`), the peer address is the proxy's, and the new connection asks
it for a ``CONNECT`` tunnel to the origin first, as aiohttp did.

The price: one more request per big body, a connection set up while the first waits, and what
the origin sent on the abandoned connection before its window closed (the socket buffers: 5.6-8.1
MB on loopback), so only bodies of ``tls_body_min_bytes`` (64 MiB) or more take this path.
Measured for a GiB from the distribution registry over TLS: 3.7-6.0 node CPU-s against 6.7-7.3
on the event loop, in the same rounds (the loop's own share: 0.96 against 3.5). ``recv_into``
returns one TLS record (16 KiB) a call; a thread that only reads a GiB so spends ~1.5 CPU-s
against ~0.45 on plain TCP, ~0.4 of it AES-GCM. Reading the TCP socket in big chunks through a
``MemoryBIO`` did not spend measurably less.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import aiohttp
from multidict import CIMultiDict

from imgaccel.upstream.proxy import Proxy
from imgaccel.upstream.socketbody import OffSocket, Taken, wake

log = logging.getLogger(__name__)

#: The longest response head (status line and header lines) read on the own connection.
MAX_HEAD = 64 * 1024

T = TypeVar("T")


class NotTheSame(ValueError):
    """The own connection's answer is not the body aiohttp's response promised."""


@dataclass(frozen=True)
class Expected:
    """What the second answer must say to be the same bytes as aiohttp's response."""

    status: int
    length: int
    content_range: str | None
    etag: str | None

    def check(self, status: int, headers: CIMultiDict[str]) -> None:
        """Raise NotTheSame unless ``status`` and ``headers`` answer these bytes, unencoded."""
        lengths = headers.getall("Content-Length", [])
        if status != self.status:
            raise NotTheSame(f"status {status}, not {self.status}")
        if lengths != [str(self.length)]:
            raise NotTheSame(f"Content-Length {lengths}, not {self.length}")
        if self.status == 206 and headers.get("Content-Range") != self.content_range:
            raise NotTheSame(f"Content-Range {headers.get('Content-Range')}")
        if headers.get("Content-Encoding", "identity").lower() != "identity":
            raise NotTheSame(f"Content-Encoding {headers['Content-Encoding']}")
        if "Transfer-Encoding" in headers:
            raise NotTheSame(f"Transfer-Encoding {headers['Transfer-Encoding']}")
        etag = headers.get("ETag")
        if self.etag is not None and etag is not None and etag != self.etag:
            raise NotTheSame(f"ETag {etag}, not {self.etag}")


def body_start(response: aiohttp.ClientResponse) -> int | None:
    """The blob offset of ``response``'s first body byte: 0 for a 200, the first byte of its
    ``Content-Range`` for a 206; None for anything else."""
    if response.status == 200:
        return 0
    content_range = response.headers.get("Content-Range", "")
    first = content_range.removeprefix("bytes ").partition("-")[0]
    if response.status != 206 or not (first.isascii() and first.isdigit()):
        return None
    return int(first)


def request_bytes(response: aiohttp.ClientResponse) -> bytes:
    """The request aiohttp sent for ``response``, again: its request target and headers, but
    ``Connection: close`` (the connection reads this one body)."""
    info = response.request_info
    lines = [f"{info.method} {info.url.raw_path_qs} HTTP/1.1"]
    lines += [f"{k}: {v}" for k, v in info.headers.items() if k.lower() != "connection"]
    if "Host" not in info.headers:
        lines.append(f"Host: {info.url.raw_authority}")
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()  # utf-8, as aiohttp writes headers


def parse_head(head: bytes) -> tuple[int, CIMultiDict[str]]:
    """The status and headers of a response head (without its blank line)."""
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    version, _, rest = status_line.partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or not (code.isascii() and code.isdigit()):
        raise NotTheSame(f"not an HTTP/1 status line: {status_line[:80]!r}")
    headers: CIMultiDict[str] = CIMultiDict()
    for line in header_lines:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise NotTheSame(f"a malformed header line: {line[:80]!r}")
        headers.add(name, value.strip(" \t"))
    return int(code), headers


async def reopen(
    response: aiohttp.ClientResponse, offset: int, off_socket: OffSocket
) -> Taken | None:
    """The body of ``response``, a big HTTPS one positioned at ``offset``, on a connection of
    its own (see the module docstring); None, and aiohttp reads on, when that is not for this
    body or did not answer the same bytes.

    The caller must read the body from the returned socket and then close it and the response.
    """
    connection = response.connection
    transport = connection.transport if connection is not None else None
    protocol = connection.protocol if connection is not None else None
    context = transport.get_extra_info("sslcontext") if transport is not None else None
    raw = transport.get_extra_info("socket") if transport is not None else None
    length = response.content_length
    host = response.url.raw_host
    if (
        transport is None
        or protocol is None
        or not isinstance(context, ssl.SSLContext)
        or raw is None
        or host is None
        or response.method != "GET"
        or length is None
        or length < max(off_socket.min_bytes, off_socket.tls_min_bytes)
        or body_start(response) != offset
        or response.headers.get("Content-Encoding", "identity").lower() != "identity"
        or response.headers.get("Transfer-Encoding") is not None
        or response.content.is_eof()
    ):
        return None
    expected = Expected(
        response.status,
        length,
        response.headers.get("Content-Range"),
        response.headers.get("ETag"),
    )
    protocol.pause_reading()  # until the second answer is known: the origin stops sending here
    peer = transport.get_extra_info("peername")  # the origin's, or the proxy's
    proxy = off_socket.proxy_for(response.url)
    tunnel = _Tunnel(_authority(host, response.url.port or 443), proxy) if proxy else None
    try:
        tls = await _connect(context, host, raw.family, peer, off_socket, tunnel)
    except Exception as exc:  # anything: aiohttp's response is still there to read
        log.debug("reading %s on the event loop: no connection of its own: %r", response.url, exc)
        protocol.resume_reading()
        return None
    try:
        request = request_bytes(response)
        buffered = await _in_thread(lambda: _exchange(tls, request, expected), tls)
    except Exception as exc:
        tls.close()
        log.debug("reading %s on the event loop: its own connection failed: %r", response.url, exc)
        protocol.resume_reading()
        return None
    except BaseException:
        tls.close()
        raise
    transport.abort()  # now, not after a TLS shutdown that would read on for its close_notify
    response.close()
    log.debug("reading %d body bytes of %s on a TLS connection of its own", length, response.url)
    return Taken(tls, buffered, length)


async def _connect(
    context: ssl.SSLContext,
    host: str,
    family: socket.AddressFamily,
    peer: tuple[str, int],
    off_socket: OffSocket,
    tunnel: _Tunnel | None = None,
) -> ssl.SSLSocket:
    """A TCP connection to ``peer``, the address aiohttp's connection is to, as an SSL socket
    for ``host`` (not yet shaken hands), with the read timeout. With ``tunnel``, ``peer`` is
    its proxy, asked first to open the tunnel."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        async with asyncio.timeout(off_socket.connect_timeout):
            await asyncio.get_running_loop().sock_connect(sock, peer)
            if tunnel is not None:
                await tunnel.open(sock)
        # aiohttp's name for the handshake: the URL's host without a trailing dot.
        tls = context.wrap_socket(
            sock, server_hostname=host.rstrip("."), do_handshake_on_connect=False
        )
    except BaseException:
        sock.close()
        raise
    tls.settimeout(off_socket.read_timeout)
    return tls


@dataclass(frozen=True)
class _Tunnel:
    """A ``CONNECT`` tunnel to ``authority`` (``host:port``) through ``proxy``."""

    authority: str
    proxy: Proxy

    async def open(self, sock: socket.socket) -> None:
        """Ask the proxy on ``sock`` (connected, non-blocking) for the tunnel; NotTheSame
        unless it answered 2xx with nothing after its head (the origin speaks only after the
        TLS client hello)."""
        loop = asyncio.get_running_loop()
        lines = [f"CONNECT {self.authority} HTTP/1.1", f"Host: {self.authority}"]
        if (authorization := self.proxy.authorization()) is not None:
            lines.append(f"Proxy-Authorization: {authorization}")
        await loop.sock_sendall(sock, "\r\n".join([*lines, "", ""]).encode())
        received = bytearray()
        while (end := received.find(b"\r\n\r\n")) < 0:
            if len(received) > MAX_HEAD:
                raise NotTheSame(f"the proxy {self.proxy} sent a head over {MAX_HEAD} bytes")
            chunk = await loop.sock_recv(sock, MAX_HEAD)
            if not chunk:
                raise NotTheSame(f"the proxy {self.proxy} closed the tunnel's connection")
            received += chunk
        status = received[:end].split(b"\r\n", 1)[0].split(b" ")
        if len(status) < 2 or not status[1].startswith(b"2") or end + 4 != len(received):
            raise NotTheSame(f"the proxy {self.proxy} did not open the tunnel: {status!r:.100}")


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _exchange(tls: ssl.SSLSocket, request: bytes, expected: Expected) -> bytes:
    """Handshake, send ``request`` and check the answer's head; return the body bytes that
    came with it. Blocking: in a thread."""
    tls.do_handshake()
    tls.sendall(request)
    received = bytearray()
    while (end := received.find(b"\r\n\r\n")) < 0:
        if len(received) > MAX_HEAD:
            raise NotTheSame(f"a response head longer than {MAX_HEAD} bytes")
        chunk = tls.recv(MAX_HEAD)
        if not chunk:
            raise NotTheSame("the connection closed before the end of the response head")
        received += chunk
    expected.check(*parse_head(bytes(received[:end])))
    return bytes(received[end + 4 :])


async def _in_thread(call: Callable[[], T], sock: socket.socket) -> T:
    """``call()``, blocking on ``sock``, in a thread of its own; a cancellation shuts ``sock``
    down, which wakes the thread, and returns once it has ended."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if done.done():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]  # T when error is None

    def run() -> None:
        try:
            result = call()
        except BaseException as exc:  # raised on the loop
            loop.call_soon_threadsafe(settle, None, exc)
        else:
            loop.call_soon_threadsafe(settle, result, None)

    thread = threading.Thread(target=run, name="body-head", daemon=True)
    thread.start()
    try:
        return await done
    finally:
        if done.cancelled():  # by the caller's cancellation, not settled by the thread
            wake(sock)
        thread.join()
