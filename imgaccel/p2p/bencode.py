"""Bencoding (BEP 3), strict both ways.

Own code rather than ``lt.bencode``/``lt.bdecode`` so that metainfo is typed, testable without
libtorrent, and so that a malformed .torrent is an error instead of a silent ``None``. Dict keys
are bytes and are written sorted, which is what makes an info dict's hash canonical.
"""

from __future__ import annotations

from imgaccel.p2p.errors import MetainfoInvalid

Value = int | bytes | list["Value"] | dict[bytes, "Value"]


def encode(value: Value) -> bytes:
    out: list[bytes] = []
    _encode(value, out)
    return b"".join(out)


def _encode(value: Value, out: list[bytes]) -> None:
    if isinstance(value, bool):
        raise TypeError("bencode has no booleans")
    if isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, bytes):
        out.append(b"%d:%s" % (len(value), value))
    elif isinstance(value, list):
        out.append(b"l")
        for item in value:
            _encode(item, out)
        out.append(b"e")
    elif isinstance(value, dict):
        out.append(b"d")
        for key in sorted(value):
            _encode(key, out)
            _encode(value[key], out)
        out.append(b"e")
    else:
        raise TypeError(f"cannot bencode {type(value).__name__}")


def decode(data: bytes) -> Value:
    """The one value ``data`` holds; :class:`MetainfoInvalid` on anything malformed or trailing."""
    try:
        value, end = _decode(data, 0)
    except (IndexError, ValueError) as exc:
        raise MetainfoInvalid(f"malformed bencoding: {exc}") from exc
    if end != len(data):
        raise MetainfoInvalid("trailing bytes after bencoded value")
    return value


def _decode(data: bytes, pos: int) -> tuple[Value, int]:
    kind = data[pos : pos + 1]
    if kind == b"i":
        end = data.index(b"e", pos)
        return int(data[pos + 1 : end]), end + 1
    if kind == b"l":
        items: list[Value] = []
        pos += 1
        while data[pos : pos + 1] != b"e":
            item, pos = _decode(data, pos)
            items.append(item)
        return items, pos + 1
    if kind == b"d":
        return _decode_dict(data, pos + 1)
    if kind.isdigit():
        colon = data.index(b":", pos)
        start = colon + 1
        end = start + int(data[pos:colon])
        if end > len(data):
            raise ValueError("string runs past the end")
        return data[start:end], end
    raise ValueError(f"unexpected byte {kind!r} at {pos}")


def _decode_dict(data: bytes, pos: int) -> tuple[Value, int]:
    result: dict[bytes, Value] = {}
    while data[pos : pos + 1] != b"e":
        key, pos = _decode(data, pos)
        if not isinstance(key, bytes):
            raise ValueError("dict key is not a string")
        result[key], pos = _decode(data, pos)
    return result, pos + 1
