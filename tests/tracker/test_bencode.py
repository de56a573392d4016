"""The bencode codec: round trips, canonical-only decoding, the raw bytes of a value."""

from __future__ import annotations

import pytest

from imgaccel import bencode


def test_round_trip_keeps_raw_bytes_and_sorts_keys() -> None:
    value = {"peers": b"\x00\xff\x7f", "interval": 60, "a": [1, -2, b"", {"x": b"y"}]}
    encoded = bencode.encode(value)
    assert encoded == b"d1:ali1ei-2e0:d1:x1:yee8:intervali60e5:peers3:\x00\xff\x7fe"
    assert bencode.decode(encoded) == {
        b"a": [1, -2, b"", {b"x": b"y"}],
        b"interval": 60,
        b"peers": b"\x00\xff\x7f",
    }


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"i01e",
        b"i-0e",
        b"ie",
        b"i1",
        b"03:abc",
        b"5:abc",
        b"l",
        b"d",
        b"x",
        b"d1:bi1e1:ai2ee",
        b"d1:ai1e1:ai2ee",
        b"i1ei2e",
        b"d3:keye",
        b"l" * 100 + b"e" * 100,
        # more digits than int() reads from a string (a plain ValueError, not BencodeError)
        pytest.param(b"i" + b"7" * 5000 + b"e", id="int-5000-digits"),
        pytest.param(b"i-" + b"7" * 5000 + b"e", id="negative-int-5000-digits"),
        pytest.param(b"9" * 5000 + b":x", id="length-5000-digits"),
        pytest.param(b"i" + b"1" * 20 + b"e", id="int-20-digits"),
    ],
)
def test_rejects_non_canonical_or_broken_input(bad: bytes) -> None:
    with pytest.raises(bencode.BencodeError):
        bencode.decode(bad)


def test_integers_are_64_bit_signed() -> None:
    assert bencode.decode(b"i9223372036854775807e") == 2**63 - 1
    assert bencode.decode(b"i-9223372036854775808e") == -(2**63)
    for bad in (b"i9223372036854775808e", b"i-9223372036854775809e"):
        with pytest.raises(bencode.BencodeError):
            bencode.decode(bad)


def test_raw_value_is_the_exact_encoded_bytes() -> None:
    data = b"d8:announce3:url4:infod6:lengthi5e4:name3:abcee"
    assert bencode.raw_value(data, b"info") == b"d6:lengthi5e4:name3:abce"
    with pytest.raises(bencode.BencodeError):
        bencode.raw_value(data, b"missing")


def test_refuses_to_encode_what_bencode_cannot_say() -> None:
    with pytest.raises(TypeError):
        bencode.encode(1.5)
    with pytest.raises(TypeError):
        bencode.encode(True)
