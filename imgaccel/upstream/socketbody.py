"""A big blob body read by a thread straight off a socket, not by aiohttp on the event loop.

aiohttp reads a body on the event loop: a ``recv`` of up to 256 KiB, the parser, a stream
append and a wake-up for each, then a hop to a worker thread to write and hash it. For a
multi-GB layer that is a busy event loop for the whole transfer, on a node whose cores the
runtime needs too (measured with ``scripts/bench-node``: 0.6-0.9 CPU-s of event loop for a cold
512 MiB blob, where a relay doing only the required work needed no loop at all).

A thread does instead what a verifying mirror must and nothing more: ``recv_into`` one buffer,
write it into the fill (which hashes bytes in order in the same pass), and tell the loop how far
the blob landed once per buffer. Where its socket comes from:

* **Plain HTTP**: once aiohttp has parsed a response's head, :func:`take_over` stops it reading,
  takes the body bytes it had already received, and gives the thread a duplicate of the socket.
* **TLS**: asyncio keeps the connection's TLS state in its SSL protocol, which has no socket to
  give away; :func:`imgaccel.upstream.tlsbody.reopen` asks the origin again on a blocking
  ``ssl`` socket of the thread's own (``recv_into`` decrypts in OpenSSL with the GIL released,
  one TLS record a call: :meth:`_Reader._receive` loops until the buffer is full).

Either way the connection is closed afterwards, never reused: aiohttp no longer knows where its
stream is. Only for bodies aiohttp would hand over unchanged: a ``Content-Length``, no
``Content-Encoding``. Anything else keeps aiohttp's reader.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from yarl import URL

from imgaccel.cache.fill import CHUNK, Fill
from imgaccel.errors import UpstreamError, UpstreamTimeout
from imgaccel.upstream.proxy import Proxy

log = logging.getLogger(__name__)

#: What the reading thread posts to the loop: bytes ``[start, end)`` landed; the offset it
#: stopped at; or the error it stopped with.
Landed = tuple[int, int]
Post = Callable[["Landed | Stopped | BaseException"], None]


@dataclass(frozen=True)
class OffSocket:
    """When and how a body is read by a thread (``upstream_client`` settings)."""

    read_timeout: float  # the longest wait for the next bytes
    min_bytes: int  # smaller bodies stay with aiohttp, keeping their connection
    connect_timeout: float  # a TLS body's own connection
    tls_min_bytes: int  # smaller HTTPS bodies stay with aiohttp (not asked for twice)
    # The proxy a TLS body's own connection tunnels through, by the body's URL.
    proxy_for: Callable[[URL], Proxy | None] = lambda url: None


@dataclass(frozen=True)
class Stopped:
    """The thread is done; the fill has every byte up to ``offset`` that it wrote."""

    offset: int


@dataclass
class Taken:
    """A response body that aiohttp no longer reads."""

    sock: socket.socket  # with a read timeout: a duplicate of aiohttp's, or an SSLSocket of its own
    buffered: bytes  # body bytes received with the head (by aiohttp, or on the own connection)
    length: int  # body bytes in all, ``buffered`` included


def take_over(
    response: aiohttp.ClientResponse, read_timeout: float, min_bytes: int = 0
) -> Taken | None:
    """Stop aiohttp reading ``response``'s body and take its socket; None (aiohttp reads on)
    when the body is not a plain byte stream of known length, at least ``min_bytes``, on a plain
    TCP connection.

    The caller must read the body from the returned socket and then close it and the response.
    """
    connection = response.connection
    transport = connection.transport if connection is not None else None
    protocol = connection.protocol if connection is not None else None
    length = response.content_length
    if (
        transport is None
        or protocol is None
        or length is None
        or length < min_bytes
        or transport.get_extra_info("sslcontext") is not None
        or response.headers.get("Content-Encoding", "identity").lower() != "identity"
        or response.headers.get("Transfer-Encoding") is not None
        or response.content.is_eof()
    ):
        return None
    raw = transport.get_extra_info("socket")
    if raw is None:
        return None
    # Take what aiohttp received, then stop it: nothing runs in between, so no byte is lost
    # (reading may resume the protocol, which the pause then stops again).
    buffered = response.content.read_nowait()
    protocol.pause_reading()
    sock = socket.socket(fileno=os.dup(raw.fileno()))
    sock.settimeout(read_timeout)
    consumed = response.content.total_bytes - len(buffered)  # read by the caller before
    log.debug("reading %d body bytes of %s off the socket", length - consumed, response.url)
    return Taken(sock, buffered, length - consumed)


async def copy(
    response: aiohttp.ClientResponse,
    taken: Taken,
    fill: Fill,
    offset: int,
    end: int,
    *,
    head: bool = False,
) -> int:
    """Write the body of ``taken`` into ``fill`` from ``offset`` until ``end`` in a thread;
    return where it stopped. Same contract as :func:`imgaccel.upstream.blobs.copy_body`: the
    bytes that arrived are in the fill before an error is raised, and a ``head`` stops (returning
    ``end``) once it runs into bytes another range landed. Closes the socket and the response.
    """
    loop = asyncio.get_running_loop()
    posts: asyncio.Queue[Landed | Stopped | BaseException] = asyncio.Queue()

    def post(item: Landed | Stopped | BaseException) -> None:
        loop.call_soon_threadsafe(posts.put_nowait, item)

    reader = _Reader(taken, fill, offset, min(end, offset + taken.length), head, post)
    thread = threading.Thread(target=reader.run, name=f"body-{fill.digest.hex[:12]}", daemon=True)
    thread.start()
    try:
        while True:
            item = await posts.get()
            if isinstance(item, Stopped):
                return end if reader.overtaken else item.offset
            if isinstance(item, BaseException):
                raise item
            await fill.arrived(*item, "origin")
    finally:
        # Normally the thread has ended; after a cancellation the shutdown wakes it from recv
        # at once, and the fill's file must not be closed while it may still write.
        reader.stop()
        thread.join()
        taken.sock.close()
        response.close()


def wake(sock: socket.socket) -> None:
    """Shut ``sock`` down under a thread blocked reading it: the read returns at once.

    On an ``SSLSocket``, the TCP socket's own shutdown: ``SSLSocket.shutdown`` also drops the
    TLS state, and a ``recv_into`` that ran after it would return ciphertext as if it were body.
    """
    with contextlib.suppress(OSError):  # already disconnected
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Reader:
    """The thread's side of :func:`copy`."""

    def __init__(
        self, taken: Taken, fill: Fill, offset: int, end: int, head: bool, post: Post
    ) -> None:
        self.taken = taken
        self.fill = fill
        self.offset = offset
        self.end = end
        self.head = head
        self.post = post
        self.overtaken = False  # a head that met bytes another range had landed
        self._stopping = threading.Event()

    def stop(self) -> None:
        if not self._stopping.is_set():
            self._stopping.set()
            wake(self.taken.sock)

    def run(self) -> None:
        try:
            if self.taken.buffered:
                self._write(memoryview(self.taken.buffered)[: self.end - self.offset])
            self._pump()
        except BaseException as exc:  # handed to the loop, which raises it in copy()
            self.post(exc)
        else:
            self.post(Stopped(self.offset))

    def _pump(self) -> None:
        buffer = memoryview(bytearray(CHUNK))
        while self.offset < self.end and not self._stopping.is_set():
            if self.head and self.fill.contiguous > self.offset:
                self.overtaken = True
                return
            want = min(CHUNK, self.end - self.offset)
            filled, error = self._receive(buffer, want)
            if filled:
                self._write(buffer[:filled])
            if error is not None:
                raise error
            if filled < want and not self._stopping.is_set():
                raise UpstreamError(
                    f"the origin closed the connection at byte {self.offset} of {self.end}"
                )

    def _receive(self, buffer: memoryview, want: int) -> tuple[int, UpstreamError | None]:
        """Fill ``buffer[:want]`` from the socket; short at the end of the stream or on an
        error, which is returned once the bytes before it are safe."""
        filled = 0
        try:
            while filled < want:
                n = self.taken.sock.recv_into(buffer[filled:want])
                if n == 0:
                    break
                filled += n
        except TimeoutError:
            waited = self.taken.sock.gettimeout()
            return filled, UpstreamTimeout(f"no bytes from the origin for {waited} s")
        except OSError as exc:
            return filled, UpstreamError(f"the origin's connection broke: {exc}")
        return filled, None

    def _write(self, data: memoryview) -> None:
        self.fill.store([data], self.offset)
        self.post((self.offset, self.offset + len(data)))
        self.offset += len(data)
