"""Content digests (``algorithm:hex``) as the OCI image spec defines them.

Only sha256 and sha512 are accepted: their hex part is fixed-length lowercase hex, which makes a
digest safe to turn into a file name (no separators, no dots, no case games).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from imgaccel.errors import DigestInvalid

_HEX_LENGTH = {"sha256": 64, "sha512": 128}
_DIGEST_RE = re.compile(r"^(sha256|sha512):([a-f0-9]+)$")


@dataclass(frozen=True, slots=True)
class Digest:
    """A validated content digest."""

    algorithm: str
    hex: str

    @classmethod
    def parse(cls, text: str) -> Digest:
        """Parse ``text`` or raise :class:`DigestInvalid` (a 400 for the client)."""
        match = _DIGEST_RE.fullmatch(text)
        if match is None or len(match.group(2)) != _HEX_LENGTH[match.group(1)]:
            raise DigestInvalid("invalid digest", detail={"digest": text[:200]})
        return cls(match.group(1), match.group(2))

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        """The digest of ``data``."""
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    def hasher(self) -> hashlib._Hash:
        """A fresh hash object of this digest's algorithm."""
        return hashlib.new(self.algorithm)

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"
