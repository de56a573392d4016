"""A TCP relay that hashes and stores every byte it relays: the least work any verifying,
caching mirror must do, as a reference for ``scripts/bench-node``.

No HTTP, no cache, no verification against a digest: bytes from the origin are received into
one reusable buffer, fed to sha256, written to a file and sent on, each a single C call that
releases the GIL, one thread per direction of each connection. Like the node's cache, the file's
writeback starts every few MB and the file is fsynced at the end (after the last byte was sent:
the node does it before, so this is the cheaper order). A mirror that does less per byte would
not verify or would not cache. Run it as::

    python -m imgaccel.testing.relay --origin 127.0.0.1:5000 --store /tmp/relay

It prints ``listening on 127.0.0.1:PORT`` once it accepts connections, and runs until stopped.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import tempfile
import threading
from pathlib import Path

from imgaccel.cache import writeback

BUFFER = 1 << 20


def relay_plain(source: socket.socket, sink: socket.socket) -> None:
    """Copy ``source`` to ``sink`` until ``source`` closes (the requests' direction)."""
    with source, sink:
        try:
            while data := source.recv(BUFFER):
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the other side went away


def relay_stored(source: socket.socket, sink: socket.socket, store: Path) -> None:
    """Copy ``source`` to ``sink``, hashing every byte and writing it to a file in ``store``
    on the way (the responses' direction)."""
    buffer = bytearray(BUFFER)
    view = memoryview(buffer)
    hasher = hashlib.sha256()
    fd, name = tempfile.mkstemp(dir=store)
    unsynced = 0
    try:
        while received := source.recv_into(buffer):
            chunk = view[:received]
            hasher.update(chunk)
            written = 0
            while written < received:
                written += os.write(fd, chunk[written:])
            sink.sendall(chunk)
            unsynced += received
            if unsynced >= writeback.EVERY:
                writeback.start_writeback(fd)
                unsynced = 0
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # the other side went away: the relay ends with it, as a proxy's would
    finally:
        os.fsync(fd)
        os.close(fd)
        os.unlink(name)
        source.close()
        sink.close()


def serve(origin: tuple[str, int], store: Path, bind: str | None = None) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        print(f"listening on 127.0.0.1:{listener.getsockname()[1]}", flush=True)
        while True:
            client, _ = listener.accept()
            upstream = socket.create_connection(origin, source_address=(bind, 0) if bind else None)
            # Each thread closes the sockets it was given when its direction ends: duplicates,
            # so that one direction finishing does not cut the other.
            threading.Thread(target=relay_plain, args=(client.dup(), upstream.dup())).start()
            threading.Thread(target=relay_stored, args=(upstream, client, store)).start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--origin", required=True, help="HOST:PORT to relay to")
    parser.add_argument("--store", type=Path, required=True, help="directory for the files")
    parser.add_argument("--bind", help="source address of the connections to the origin")
    args = parser.parse_args()
    host, port = args.origin.rsplit(":", 1)
    serve((host, int(port)), args.store, args.bind)


if __name__ == "__main__":
    main()
