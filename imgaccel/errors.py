"""The one exception hierarchy of imgaccel.

ImgaccelError
├── RegistryError                 an error a registry client sees, as OCI error JSON
│   ├── NameInvalid               400 NAME_INVALID
│   ├── DigestInvalid             400 DIGEST_INVALID
│   ├── TagInvalid                400 MANIFEST_INVALID (a reference that is neither tag nor digest)
│   ├── PaginationInvalid         400 PAGINATION_NUMBER_INVALID (a tag list's ``n``)
│   ├── RangeInvalid              416 RANGE_INVALID
│   ├── BlobUnknown               404 BLOB_UNKNOWN
│   ├── ManifestUnknown           404 MANIFEST_UNKNOWN
│   ├── NameUnknown               404 NAME_UNKNOWN
│   ├── Unauthorized              401 UNAUTHORIZED (carries the origin's challenge)
│   ├── Denied                    403 DENIED
│   │   └── RegistryNotAllowed    (proxy.errors) a registry the `registries` setting refuses
│   ├── Unsupported               405 UNSUPPORTED
│   ├── TooManyRequests           429 TOOMANYREQUESTS
│   ├── OriginRefused             the origin's own 4xx for a request it found bad, relayed
│   ├── UpstreamUnavailable       502/503/504 UNAVAILABLE: the origin cannot be reached
│   │   └── DiskFull              503: the cache's disk cannot take a blob (also a CacheFull)
│   └── MetaUnwritable            503 UNAVAILABLE: meta.db failed on a full disk or an I/O
│                                 error (also a CacheError)
├── UpstreamError                 talking to the origin failed (internal; mapped to a RegistryError)
│   ├── UpstreamTimeout           (also a TimeoutError)
│   └── UpstreamStatus            the origin answered with an unexpected status
├── CacheError
│   ├── DigestMismatch            the bytes did not hash to the digest they were fetched for
│   └── CacheFull                 no room to keep a blob: the quota (everything left is pinned
│       │                         or busy), or the disk's floor: streamed, not kept
│       └── DiskLow               keeping it would leave less than cache.min_free_percent free
└── ConfigError                   bad settings or command line (also a ValueError)
"""

from __future__ import annotations

from collections.abc import Mapping


class ImgaccelError(Exception):
    """The base of every error imgaccel raises on purpose."""


class RegistryError(ImgaccelError):
    """An error a registry client sees: an HTTP status and an OCI error code."""

    status = 500
    code = "UNKNOWN"

    def __init__(
        self,
        message: str,
        *,
        detail: object = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.headers = dict(headers or {})

    def body(self) -> dict[str, object]:
        """The registry error JSON for this error."""
        error: dict[str, object] = {"code": self.code, "message": self.message}
        if self.detail is not None:
            error["detail"] = self.detail
        return {"errors": [error]}


class NameInvalid(RegistryError):
    status, code = 400, "NAME_INVALID"


class DigestInvalid(RegistryError):
    status, code = 400, "DIGEST_INVALID"


class TagInvalid(RegistryError):
    status, code = 400, "MANIFEST_INVALID"


class PaginationInvalid(RegistryError):
    status, code = 400, "PAGINATION_NUMBER_INVALID"


class RangeInvalid(RegistryError):
    status, code = 416, "RANGE_INVALID"


class BlobUnknown(RegistryError):
    status, code = 404, "BLOB_UNKNOWN"


class ManifestUnknown(RegistryError):
    status, code = 404, "MANIFEST_UNKNOWN"


class NameUnknown(RegistryError):
    status, code = 404, "NAME_UNKNOWN"


class Unauthorized(RegistryError):
    status, code = 401, "UNAUTHORIZED"


class Denied(RegistryError):
    status, code = 403, "DENIED"


class Unsupported(RegistryError):
    status, code = 405, "UNSUPPORTED"


class TooManyRequests(RegistryError):
    status, code = 429, "TOOMANYREQUESTS"


class OriginRefused(RegistryError):
    """The origin's 4xx (other than a refusal of access, an unknown name or a rate limit) for a
    request it cannot serve as asked, e.g. 400 MANIFEST_INVALID to a client whose Accept names
    no type it can give: the client gets that status and code, not an origin failure."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


class UpstreamUnavailable(RegistryError):
    status, code = 503, "UNAVAILABLE"


class UpstreamError(ImgaccelError):
    """Talking to the origin registry failed."""


class UpstreamTimeout(UpstreamError, TimeoutError):
    """The origin did not answer in time."""


class UpstreamStatus(UpstreamError):
    """The origin answered with a status we cannot use."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(f"origin answered {status}: {message}")
        self.status = status
        self.headers = dict(headers or {})


class CacheError(ImgaccelError):
    """The local cache could not do what was asked."""


class DigestMismatch(CacheError):
    """The bytes of a blob did not hash to its digest; nothing entered the cache."""


class CacheFull(CacheError):
    """The cache cannot make room to keep a blob: what is left is pinned or in use."""


class QuotaTooSmall(CacheFull):
    """The blob is larger than the whole cache quota: no eviction or unpinning makes room."""


class DiskLow(CacheFull):
    """Keeping the blob would leave less free on the cache's filesystem than
    ``cache.min_free_percent``, even after evicting what may be evicted."""


def not_kept_reason(why: CacheFull) -> str:
    """The word metrics and the pins API use for why a blob was not kept: ``disk`` (the
    filesystem's floor), ``too_big`` (larger than the quota) or ``quota`` (full of pinned or
    busy blobs)."""
    if isinstance(why, DiskLow):
        return "disk"
    return "too_big" if isinstance(why, QuotaTooSmall) else "quota"


class DiskFull(UpstreamUnavailable, CacheFull):
    """The cache's filesystem cannot take the blob at all, not even to stream it through: a fill
    refused before its first byte. Clients get 503 UNAVAILABLE and pull from the origin
    (containerd tries its next host on an error status, never after a broken body)."""


class MetaUnwritable(RegistryError, CacheError):
    """The cache's metadata (``meta.db``, SQLite) could not be written or read: its disk is
    full, or failed. The request gets 503 UNAVAILABLE, which containerd falls back to the
    origin on. Not an :class:`UpstreamUnavailable`: the origin is fine, and what falls back
    to cached answers when the origin fails must not take the node's disk for the origin."""

    status, code = 503, "UNAVAILABLE"


class ConfigError(ImgaccelError, ValueError):
    """Bad settings or command-line values."""
