"""The HTTP ``Range`` header, for serving blobs (RFC 9110 §14)."""

from __future__ import annotations

from imgaccel.errors import RangeInvalid


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The single byte range ``[start, end)`` that ``header`` asks of a ``size``-byte blob.

    None means "send it all" (no header, or one we may ignore: another unit, several ranges).
    An unsatisfiable range raises :class:`RangeInvalid` (416).
    """
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, sep, last = spec.strip().partition("-")
    first, last = first.strip(), last.strip()
    if (
        not sep
        or (first and not _is_number(first))
        or (last and not _is_number(last))
        or (not first and not last)
        or len(first) > 19
        or len(last) > 19
    ):
        raise RangeInvalid(
            "malformed range",
            detail={"range": header[:100]},
            headers={"Content-Range": f"bytes */{size}"},
        )
    if not first:  # suffix: the last N bytes
        length = int(last)
        if length == 0 or size == 0:
            raise _unsatisfiable(header, size)
        return max(0, size - length), size
    start = int(first)
    end = min(int(last) + 1, size) if last else size
    if start >= size or end <= start:
        raise _unsatisfiable(header, size)
    return start, end


def _is_number(text: str) -> bool:
    # ASCII only: str.isdigit() is also true for "²" (int() rejects it: a 500) and for
    # Arabic-Indic digits (int() reads them).
    return text.isascii() and text.isdigit()


def _unsatisfiable(header: str, size: int) -> RangeInvalid:
    return RangeInvalid(
        "range not satisfiable",
        detail={"range": header[:100]},
        headers={"Content-Range": f"bytes */{size}"},
    )
