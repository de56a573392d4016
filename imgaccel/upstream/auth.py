"""Registry authentication: the ``WWW-Authenticate`` challenge, bearer tokens, Basic.

Tokens come from the challenge's realm (``GET realm?service=..&scope=repository:NAME:pull``), with
the node's configured credentials, the client's Basic credentials, or none (anonymous), and are
cached until shortly before they expire.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

_PARAM_RE = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')
_EARLY_SECONDS = 10.0


@dataclass(frozen=True)
class Challenge:
    """A parsed ``WWW-Authenticate`` header."""

    scheme: str  # "bearer" or "basic"
    params: dict[str, str]
    raw: str

    @classmethod
    def parse(cls, header: str | None) -> Challenge | None:
        if not header:
            return None
        scheme, _, rest = header.strip().partition(" ")
        params = {
            m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
            for m in _PARAM_RE.finditer(rest)
        }
        return cls(scheme.lower(), params, header)

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")


def basic_header(username: str, password: str) -> str:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return f"Basic {token}"


def identity(authorization: str | None) -> str:
    """A short, non-reversible name for a set of credentials (for cache keys and logs)."""
    if not authorization:
        return "anonymous"
    return hashlib.sha256(authorization.encode()).hexdigest()[:16]


@dataclass
class _Token:
    value: str
    expires_at: float


class TokenCache:
    """Bearer tokens by (realm, service, scope, identity), kept until just before expiry."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tokens: dict[tuple[str, str, str, str], _Token] = {}

    def get(self, key: tuple[str, str, str, str]) -> str | None:
        token = self._tokens.get(key)
        if token is None or token.expires_at <= self._clock():
            self._tokens.pop(key, None)
            return None
        return token.value

    def put(self, key: tuple[str, str, str, str], value: str, expires_in: float) -> None:
        lifetime = (
            max(1.0, expires_in - _EARLY_SECONDS) if expires_in > 2 * _EARLY_SECONDS else expires_in
        )
        self._tokens[key] = _Token(value, self._clock() + lifetime)
