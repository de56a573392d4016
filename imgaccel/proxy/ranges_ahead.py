"""Ranges far ahead of a fill: a lazy pull's reads of a blob that is not cached, answered by the
origin.

stargz-snapshotter (eStargz) and SOCI read the footer or table of contents at the end of a layer
first, then scattered chunks of it, each with a ``Range`` request (stargz-snapshotter asks for
several chunks in one). From the fill of the whole blob (:mod:`imgaccel.proxy.blobs`) such a
read waits until the fill's in-order prefix reaches it: for the footer of a 5 GB layer, 5 GB. A
range (several: their span) that starts more than :data:`ALLOWANCE` past what the fill has
landed (nothing, when no fill is in flight) is asked of the origin instead, with the client's
credentials, and the origin's answer is streamed back as it comes: the origin decides who may
read it, and none of its bytes go into the cache (a range cannot be checked against the digest;
the client checks what it reads, as when it pulls from the origin). The cache gets the blob from
one fill of the whole of it, which such a request starts in the background when none is in
flight (``BlobFetcher.fill_in_background``), as a miss would.

What the origin does not answer as asked (the whole blob, a 416, a ``Content-Range`` other than
the range asked for, a 5xx, no answer at all) is served from the fill, as before: a node whose
origin is down still serves what its peers hold. A refusal (401, 403, 404) is the client's.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from imgaccel.cache.fill import Fill
from imgaccel.errors import RangeInvalid, UpstreamError
from imgaccel.proxy.access import refusal
from imgaccel.proxy.ranges import parse_range
from imgaccel.upstream.blobs import BlobLocation, parse_content_length
from imgaccel.upstream.client import Answer, UpstreamClient

log = logging.getLogger("imgaccel.serve")

#: How far past the fill's landed prefix a range may start and still be served from the fill:
#: what a fill brings in well under a second. A pull resumed with ``bytes=N-`` while the fill
#: that served its first N bytes is in flight is always within it (those bytes had landed).
ALLOWANCE = 16 << 20

#: A blob's size for :func:`parse_range` while it is not known: past any offset a range can name
#: (19 digits at most), so that it refuses only a malformed range and clamps none.
_UNKNOWN_SIZE = 10**19

#: Origin answers relayed to the client as refusals (any other but the range: the fill's turn).
_REFUSALS = frozenset({401, 403, 404})

_CONTENT_RANGE = re.compile(r"bytes ([0-9]{1,19})-([0-9]{1,19})/([0-9]{1,19})", re.IGNORECASE)


@dataclass(frozen=True)
class FarRange:
    """One byte range of a blob as the origin is asked for it: ``first`` to ``last``
    (inclusive; None: to the end), or the last ``suffix`` bytes. ``size`` is the blob's, when a
    fill in flight tells it."""

    first: int = 0
    last: int | None = None
    suffix: int | None = None
    size: int | None = None

    @property
    def header(self) -> str:
        if self.suffix is not None:
            return f"bytes=-{self.suffix}"
        return f"bytes={self.first}-{'' if self.last is None else self.last}"

    def span(self, total: int) -> tuple[int, int] | None:
        """``[start, end)`` of a ``total``-byte blob; None when none of it is in the blob."""
        if self.suffix is not None:
            return (max(0, total - self.suffix), total) if self.suffix and total else None
        if self.first >= total:
            return None
        return self.first, total if self.last is None else min(self.last + 1, total)


def far_range(header: str | None, fill: Fill | None) -> FarRange | None:
    """The range to ask the origin for: ``header`` names a byte range that starts more than
    :data:`ALLOWANCE` past what ``fill`` (the blob's fill in flight, if any) has landed, or,
    with no fill to tell the blob's size, the last N bytes. Several ranges (stargz-snapshotter
    asks for a layer's chunks so) are one span, from the first byte any of them asks to the
    last, as the fill path answers them: the origin is asked for that span.

    None: the fill is to serve it. So for a malformed or unsatisfiable range too: the fill path
    answers it with a 416 that gives the blob's size, as it always has; and for several ranges
    with a suffix among them while the blob's size is not known."""
    if header is None:
        return None
    specs = [part.strip() for part in header.partition("=")[2].split(",") if part.strip()]
    if fill is None and len(specs) > 1 and any(part.startswith("-") for part in specs):
        return None  # where a suffix starts depends on the size
    size = _UNKNOWN_SIZE if fill is None else fill.size
    try:
        span = parse_range(header, size)
    except RangeInvalid:
        return None
    if span is None:
        return None
    start, end = span
    if fill is None and len(specs) == 1 and specs[0].startswith("-"):
        return FarRange(suffix=size - start)
    landed = 0 if fill is None else fill.contiguous
    if start <= landed + ALLOWANCE:
        return None
    return FarRange(start, None if end == size else end - 1, size=None if fill is None else size)


def served_span(headers: Mapping[str, str], asked: FarRange) -> tuple[int, int, int] | None:
    """``(start, end, total)`` of an origin's 206 that is exactly the range ``asked`` for (and
    of a blob of ``asked.size``, if known), with the length to match; else None."""
    match = _CONTENT_RANGE.fullmatch(headers.get("Content-Range", "").strip())
    if match is None:
        return None
    first, last, total = (int(number) for number in match.groups())
    if asked.size is not None and total != asked.size:
        return None
    if asked.span(total) != (first, last + 1):
        return None
    if parse_content_length(headers.get("Content-Length")) != last + 1 - first:
        return None
    return first, last + 1, total


@contextlib.asynccontextmanager
async def origin_range(
    client: UpstreamClient, location: BlobLocation, asked: FarRange
) -> AsyncIterator[tuple[Answer, tuple[int, int, int]] | None]:
    """The origin's 206 answer to ``asked`` (body unread) and its ``(start, end, total)``, or
    None when the fill is to answer instead (see the module docstring). A refusal is raised as
    the client's registry error."""
    async with contextlib.AsyncExitStack() as stack:
        try:
            answer: Answer | None = await stack.enter_async_context(
                client.open(
                    "GET",
                    location.registry,
                    location.repo,
                    location.path,
                    client_auth=location.client_auth,
                    headers={"Range": asked.header},
                    kind="blob-range",
                )
            )
        except UpstreamError as exc:
            log.info(
                "%s %s: origin unavailable (%s); from the fill", location.digest, asked.header, exc
            )
            answer = None
        if answer is None:
            yield None
            return
        if answer.status in _REFUSALS:
            raise refusal(answer.status, "blobs", answer.challenge)
        span = served_span(answer.headers, asked) if answer.status == 206 else None
        if span is None:
            log.log(
                logging.WARNING if answer.status == 206 else logging.INFO,
                "%s %s: origin answered %d (Content-Range %r, Content-Length %r); from the fill",
                location.digest,
                asked.header,
                answer.status,
                answer.headers.get("Content-Range"),
                answer.headers.get("Content-Length"),
            )
            yield None
            return
        yield answer, span
