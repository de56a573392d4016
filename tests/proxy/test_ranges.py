"""``parse_range``: which bytes a ``Range`` header asks of a blob, without sockets."""

from __future__ import annotations

import pytest

from imgaccel.errors import RangeInvalid
from imgaccel.proxy.ranges import parse_range

SIZE = 1000


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("bytes=0-99", (0, 100)),
        ("bytes=0-0", (0, 1)),
        ("bytes=100-", (100, SIZE)),
        ("bytes=999-", (999, SIZE)),
        ("bytes=900-5000", (900, SIZE)),  # the end is clamped to the blob
        ("bytes=-100", (900, SIZE)),  # suffix: the last 100 bytes
        ("bytes=-5000", (0, SIZE)),  # a suffix longer than the blob is the whole blob
        ("BYTES=1-2", (1, 3)),
        (" bytes = 1 - 2 ", (1, 3)),
        # Several ranges: one span from the first byte asked to the last.
        ("bytes=0-1,5-6", (0, 7)),
        ("bytes=500-599, 0-9", (0, 600)),  # in any order
        ("bytes=0-1, -1", (0, SIZE)),  # a suffix counts from the end
        ("bytes=10-19,5000-6000", (10, 20)),  # a range past the end is dropped
        ("bytes=0-1 ,", (0, 2)),  # empty list elements are no range
        (",".join(["bytes=0-0"] + ["2-2"] * 63), (0, 3)),  # MAX_RANGES
        # Ignored (the whole blob is sent): other units, too many ranges.
        ("items=0-1", None),
        (",".join(["bytes=0-0"] + ["2-2"] * 64), None),
    ],
)
def test_satisfiable_or_ignored(header: str | None, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, SIZE) == expected


@pytest.mark.parametrize(
    "header",
    [
        "bytes=1000-",  # starts at the end
        "bytes=5000-6000",
        "bytes=5-2",  # ends before it starts
        "bytes=-0",  # an empty suffix
        "bytes=abc",
        "bytes=-",
        "bytes=",
        "bytes=--1",
        "bytes=-5-",
        "bytes=+1-2",
        "bytes=1-+2",
        "bytes=0x10-",
        "bytes=1.5-2",
        "bytes=99999999999999999999-",  # 20 digits: no int() of attacker-sized numbers
        "bytes=\u00b2-",  # isdigit() but not a number int() reads
        "bytes=\u0661-\u0662",  # Arabic-Indic digits: not HTTP's DIGIT
        "bytes=0-1,abc",  # one malformed range spoils the header
        "bytes=1000-,2000-3000",  # none of them satisfiable
        "bytes=,",
    ],
)
def test_invalid_is_416_with_the_size(header: str) -> None:
    with pytest.raises(RangeInvalid) as raised:
        parse_range(header, SIZE)
    assert raised.value.status == 416
    assert raised.value.code == "RANGE_INVALID"
    assert raised.value.headers["Content-Range"] == f"bytes */{SIZE}"


@pytest.mark.parametrize("header", ["bytes=0-", "bytes=-1", "bytes=0-0"])
def test_nothing_is_satisfiable_in_an_empty_blob(header: str) -> None:
    with pytest.raises(RangeInvalid):
        parse_range(header, 0)
