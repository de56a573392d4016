"""Registry authentication: the ``WWW-Authenticate`` challenge, bearer tokens, Basic.

Tokens come from the challenge's realm (``GET realm?service=..&scope=repository:NAME:pull``), with
the node's configured credentials, the client's Basic credentials, or none (anonymous), and are
cached until shortly before they expire. Both caches here are bounded: any client can make the
node talk to an origin of its choosing, so their keys are not the operator's to enumerate.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

# The lookbehind anchors a name at the start of a word. Without it the search is retried at every
# position inside a long run of word characters, each try scanning to the run's end: quadratic,
# and a hostile origin's 8 KB challenge held the event loop for over a second.
_PARAM_RE = re.compile(r'(?<!\w)(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')
#: Real challenges are a few hundred characters; a longer one is not followed.
MAX_CHALLENGE_CHARS = 4096
_EARLY_SECONDS = 10.0
#: The token spec's lifetime when the realm names none (or names something that is not one).
DEFAULT_TOKEN_SECONDS = 60.0
#: No token is kept longer than this, whatever the realm says.
MAX_TOKEN_SECONDS = 86400.0

TokenKey = tuple[str, str, str, str]  # realm, service, scope, identity


@dataclass(frozen=True)
class Challenge:
    """A parsed ``WWW-Authenticate`` header."""

    scheme: str  # "bearer" or "basic"
    params: dict[str, str]
    raw: str

    @classmethod
    def parse(cls, header: str | None) -> Challenge | None:
        """The challenge; None when there is none or it is longer than ``MAX_CHALLENGE_CHARS``."""
        if not header or len(header) > MAX_CHALLENGE_CHARS:
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


def token_lifetime(expires_in: object) -> float:
    """Seconds a token lives, from the realm's ``expires_in`` as it came in the JSON: a number
    clamped to [0, ``MAX_TOKEN_SECONDS``]; anything else (absent, a bool, a string, NaN or an
    infinity) is the spec's default. Integers are clamped before ``float()``, which overflows on
    one of a few hundred digits."""
    if isinstance(expires_in, bool) or not isinstance(expires_in, int | float):
        return DEFAULT_TOKEN_SECONDS
    if isinstance(expires_in, int):
        return float(min(max(expires_in, 0), int(MAX_TOKEN_SECONDS)))
    if not math.isfinite(expires_in):
        return DEFAULT_TOKEN_SECONDS
    return min(max(expires_in, 0.0), MAX_TOKEN_SECONDS)


@dataclass
class _Token:
    value: str
    expires_at: float
    size: int


class TokenCache:
    """Bearer tokens by (realm, service, scope, identity), kept until just before expiry.

    Every client credential and repository adds a key, so the cache is bounded in entries and in
    characters (least recently used go first), and expired tokens are swept as it grows.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_entries: int = 4096,
        max_chars: int = 8 * 1024 * 1024,
    ) -> None:
        self._clock = clock
        self._max_entries = max_entries
        self._max_chars = max_chars
        self._tokens: OrderedDict[TokenKey, _Token] = OrderedDict()
        self._chars = 0
        self._sweep_at = 64

    def __len__(self) -> int:
        return len(self._tokens)

    def get(self, key: TokenKey) -> str | None:
        token = self._tokens.get(key)
        if token is None:
            return None
        if token.expires_at <= self._clock():
            self.discard(key)
            return None
        self._tokens.move_to_end(key)
        return token.value

    def put(self, key: TokenKey, value: str, expires_in: object) -> None:
        """Keep ``value`` for ``expires_in`` (the realm's value, checked by ``token_lifetime``)
        less a margin, so it is not sent just as it expires."""
        seconds = token_lifetime(expires_in)
        lifetime = max(1.0, seconds - _EARLY_SECONDS) if seconds > 2 * _EARLY_SECONDS else seconds
        self.discard(key)
        size = len(value) + sum(map(len, key))
        if size > self._max_chars:
            return  # used for this request only
        self._tokens[key] = _Token(value, self._clock() + lifetime, size)
        self._chars += size
        self._make_room()

    def discard(self, key: TokenKey) -> None:
        """Forget the token for ``key`` (the registry refused it)."""
        token = self._tokens.pop(key, None)
        if token is not None:
            self._chars -= token.size

    def _make_room(self) -> None:
        if len(self._tokens) >= self._sweep_at:
            now = self._clock()
            for key in [k for k, t in self._tokens.items() if t.expires_at <= now]:
                self.discard(key)
            # The next sweep waits until the cache has doubled: O(1) per put, amortised.
            self._sweep_at = max(64, 2 * len(self._tokens))
        while len(self._tokens) > self._max_entries or self._chars > self._max_chars:
            self.discard(next(iter(self._tokens)))


class Realms:
    """The challenge each origin sent last, so later requests can send a cached token up front.

    Bounded (least recently used go first): origins are whatever clients name.
    """

    def __init__(self, max_origins: int = 256) -> None:
        self._max_origins = max_origins
        self._challenges: OrderedDict[str, Challenge] = OrderedDict()

    def __len__(self) -> int:
        return len(self._challenges)

    def get(self, origin: str) -> Challenge | None:
        challenge = self._challenges.get(origin)
        if challenge is not None:
            self._challenges.move_to_end(origin)
        return challenge

    def remember(self, origin: str, challenge: Challenge) -> None:
        self._challenges[origin] = challenge
        self._challenges.move_to_end(origin)
        while len(self._challenges) > self._max_origins:
            self._challenges.popitem(last=False)
