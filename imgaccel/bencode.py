"""Bencoding (BEP 3): the wire format of tracker replies and .torrent files (one codec for the
tracker, the swarm and the node; a core module that imports nothing).

A small strict pure-Python codec rather than ``libtorrent.bencode``/``bdecode``: the tracker then
does not load the libtorrent extension at all, errors are typed (``lt.bdecode`` returns ``None``
or raises untyped ``RuntimeError`` depending on the input), types are checked by mypy, and
:func:`raw_value` gives the exact bytes of the ``info`` dictionary, which an info-hash needs.

Decoding rejects non-canonical input (leading zeros, ``-0``, unsorted or repeated keys, trailing
bytes) so that re-encoding a decoded value gives back the same bytes, and integers beyond 64 bits.
"""

from __future__ import annotations

from typing import TypeAlias

Value: TypeAlias = int | bytes | list["Value"] | dict[bytes, "Value"]

_MAX_DEPTH = 64
#: Integers are signed 64-bit, as in libtorrent (and SQLite). Capping the digits first also keeps
#: ``int()`` away from Python's limit on int-string conversion (4300 digits: a plain ValueError).
_MAX_DIGITS = 19
_INT64 = range(-(2**63), 2**63)


class BencodeError(ValueError):
    """The bytes are not canonical bencoding."""


def encode(value: object) -> bytes:
    """Bencode ints, bytes, str (as UTF-8), lists and dicts (keys bytes or str, sorted)."""
    out: list[bytes] = []
    _encode(value, out)
    return b"".join(out)


def _encode(value: object, out: list[bytes]) -> None:
    if isinstance(value, bool):
        raise TypeError("cannot bencode a bool")
    if isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, bytes | str):
        raw = value.encode() if isinstance(value, str) else value
        out.append(b"%d:%s" % (len(raw), raw))
    elif isinstance(value, list | tuple):
        out.append(b"l")
        for item in value:
            _encode(item, out)
        out.append(b"e")
    elif isinstance(value, dict):
        items = {k.encode() if isinstance(k, str) else k: v for k, v in value.items()}
        out.append(b"d")
        for key in sorted(items):
            _encode(key, out)
            _encode(items[key], out)
        out.append(b"e")
    else:
        raise TypeError(f"cannot bencode {type(value).__name__}")


def decode(data: bytes) -> Value:
    """Decode one complete value; :class:`BencodeError` on anything else."""
    value, end = _Decoder(data).value(0, 0)
    if end != len(data):
        raise BencodeError(f"trailing bytes at offset {end}")
    return value


def raw_value(data: bytes, key: bytes) -> bytes:
    """The exact encoded bytes of ``key``'s value in the top-level dictionary of ``data``."""
    decoder = _Decoder(data)
    if data[:1] != b"d":
        raise BencodeError("not a dictionary")
    pos = 1
    while data[pos : pos + 1] != b"e":
        found, pos = decoder.string(pos)
        _, end = decoder.value(pos, 1)
        if found == key:
            return data[pos:end]
        pos = end
    raise BencodeError(f"no key {key!r}")


class _Decoder:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def value(self, pos: int, depth: int) -> tuple[Value, int]:
        if depth > _MAX_DEPTH:
            raise BencodeError("nested too deeply")
        lead = self.data[pos : pos + 1]
        if lead == b"i":
            return self.integer(pos)
        if lead == b"l":
            return self.list(pos, depth)
        if lead == b"d":
            return self.dict(pos, depth)
        if lead.isdigit():
            return self.string(pos)
        raise BencodeError(f"unexpected {lead!r} at offset {pos}")

    def integer(self, pos: int) -> tuple[int, int]:
        end = self.data.find(b"e", pos)
        text = self.data[pos + 1 : end] if end > 0 else b""
        digits = text.removeprefix(b"-")
        canonical = digits.isdigit() and (digits == b"0" or not digits.startswith(b"0"))
        if not canonical or text == b"-0" or len(digits) > _MAX_DIGITS:
            raise BencodeError(f"bad integer at offset {pos}")
        if int(text) not in _INT64:
            raise BencodeError(f"integer out of 64-bit range at offset {pos}")
        return int(text), end + 1

    def string(self, pos: int) -> tuple[bytes, int]:
        colon = self.data.find(b":", pos)
        length = self.data[pos:colon] if colon > 0 else b""
        if (
            not length.isdigit()
            or (length.startswith(b"0") and length != b"0")
            or len(length) > _MAX_DIGITS
        ):
            raise BencodeError(f"bad string length at offset {pos}")
        start, end = colon + 1, colon + 1 + int(length)
        if end > len(self.data):
            raise BencodeError(f"string at offset {pos} runs past the end")
        return self.data[start:end], end

    def list(self, pos: int, depth: int) -> tuple[Value, int]:
        items: list[Value] = []
        pos += 1
        while self.data[pos : pos + 1] != b"e":
            item, pos = self.value(pos, depth + 1)
            items.append(item)
        return items, pos + 1

    def dict(self, pos: int, depth: int) -> tuple[Value, int]:
        items: dict[bytes, Value] = {}
        previous: bytes | None = None
        pos += 1
        while self.data[pos : pos + 1] != b"e":
            if pos >= len(self.data):
                raise BencodeError("unterminated dictionary")
            key, pos = self.string(pos)
            if previous is not None and key <= previous:
                raise BencodeError(f"keys unsorted or repeated at {key!r}")
            items[key], pos = self.value(pos, depth + 1)
            previous = key
        return items, pos + 1
