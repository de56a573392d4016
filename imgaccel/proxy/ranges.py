"""The HTTP ``Range`` header, for serving blobs (RFC 9110 §14)."""

from __future__ import annotations

from imgaccel.errors import RangeInvalid

#: More ranges than this in one header are ignored (the whole blob is sent): a client that
#: asks for hundreds of pieces at once is broken or hostile (RFC 9110, 14.2).
MAX_RANGES = 64


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The byte range ``[start, end)`` that ``header`` asks of a ``size``-byte blob.

    None means "send it all" (no header, or one we may ignore: another unit, more than
    :data:`MAX_RANGES` ranges). Several ranges are answered as one span, from the first byte
    any of them asks to the last (a server may coalesce ranges, RFC 9110 14.2; clients that ask
    for several, as stargz-snapshotter does, read each from the span's ``Content-Range``);
    ranges past the end are dropped. A malformed range, or ranges none of which the blob can
    satisfy, raise :class:`RangeInvalid` (416).
    """
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes":
        return None
    parts = [part for part in spec.split(",") if part.strip()]  # empty list elements: none
    if len(parts) > MAX_RANGES:
        return None
    if not parts:
        raise _malformed(header, size)
    spans = [span for part in parts if (span := _one_range(part, header, size)) is not None]
    if not spans:
        raise _unsatisfiable(header, size)
    return min(start for start, _ in spans), max(end for _, end in spans)


def _one_range(part: str, header: str, size: int) -> tuple[int, int] | None:
    """``[start, end)`` of one ``first-last`` or ``-suffix`` of ``header``; None when the blob
    cannot satisfy it; :class:`RangeInvalid` when it is malformed."""
    first, sep, last = part.strip().partition("-")
    first, last = first.strip(), last.strip()
    if (
        not sep
        or (first and not _is_number(first))
        or (last and not _is_number(last))
        or (not first and not last)
        or len(first) > 19
        or len(last) > 19
    ):
        raise _malformed(header, size)
    if not first:  # suffix: the last N bytes
        length = int(last)
        if length == 0 or size == 0:
            return None
        return max(0, size - length), size
    start = int(first)
    end = min(int(last) + 1, size) if last else size
    if start >= size or end <= start:
        return None
    return start, end


def _is_number(text: str) -> bool:
    # ASCII only: str.isdigit() is also true for "²" (int() rejects it: a 500) and for
    # Arabic-Indic digits (int() reads them).
    return text.isascii() and text.isdigit()


def _malformed(header: str, size: int) -> RangeInvalid:
    return RangeInvalid(
        "malformed range",
        detail={"range": header[:100]},
        headers={"Content-Range": f"bytes */{size}"},
    )


def _unsatisfiable(header: str, size: int) -> RangeInvalid:
    return RangeInvalid(
        "range not satisfiable",
        detail={"range": header[:100]},
        headers={"Content-Range": f"bytes */{size}"},
    )
