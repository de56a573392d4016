"""The node daemon's HTTP API as a prewarm client uses it.

Manifests and blobs are plain registry GETs (``/v2/<name>/...?ns=<registry>``), so they take the
node's own path: cache, then peers, then the origin; the node caches and verifies what it
fetches. Requests carry ``X-Imgaccel-Prewarm: 1`` so the node does not report them to the tracker
as a pull by a workload. After the blobs, :meth:`NodeAPI.pin` pins them and says which the node
did not keep, and why: its quota (full of pinned or busy blobs), or the floor of free space
``cache.min_free_percent`` keeps on its disk.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from imgaccel.oci.media import MANIFEST_ACCEPT
from imgaccel.oci.reference import ImageRef
from imgaccel.prewarm.errors import (
    CacheFullError,
    Denied,
    NodeUnreachable,
    PrewarmError,
    UnknownImage,
)
from imgaccel.prewarm.plan import Blob, ImagePlan

PREWARM_HEADER = "X-Imgaccel-Prewarm"
_CHUNK = 1 << 20
_PIN_BATCH = 10


@dataclass(frozen=True)
class PinReply:
    pinned: list[str]
    missing: list[str]
    #: Why the node could not keep a missing blob: ``{digest: {reason, message}}``, ``reason``
    #: ``quota`` or ``disk`` (a node from before this answer says nothing).
    not_kept: dict[str, dict[str, str]] = field(default_factory=dict)


class NodeAPI:
    """A node at ``base_url``; ``authorization`` is passed on for private images."""

    def __init__(
        self, base_url: str, session: aiohttp.ClientSession, authorization: str | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._session = session
        self._headers = {PREWARM_HEADER: "1"}
        if authorization:
            self._headers["Authorization"] = authorization

    async def manifest(self, ref: ImageRef, reference: str) -> tuple[str, bytes, str]:
        url = f"{self.base_url}/v2/{ref.name}/manifests/{reference}"
        headers = {**self._headers, "Accept": MANIFEST_ACCEPT}
        what = str(ref) if reference == ref.reference else f"{ref}: manifest {reference}"
        with self._failures(what):
            async with self._request("GET", url, ref, headers=headers) as response:
                await _check(response, ref)
                body = await response.read()
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        return media_type, body, response.headers.get("Docker-Content-Digest", reference)

    async def fetch_blob(self, ref: ImageRef, blob: Blob, progress: Callable[[int], None]) -> None:
        """GET the blob through the node (the node keeps it); the bytes are counted and dropped."""
        url = f"{self.base_url}/v2/{ref.name}/blobs/{blob.digest}"
        what = f"{ref}: blob {blob.digest}"
        with self._failures(what):
            async with self._request("GET", url, ref, headers=self._headers) as response:
                await _check(response, ref, what)
                received = 0
                async for chunk in response.content.iter_chunked(_CHUNK):
                    received += len(chunk)
                    progress(len(chunk))
        if response.content_length is not None and received != response.content_length:
            raise PrewarmError(f"{what}: the node ended it early ({received} bytes)")

    @contextlib.contextmanager
    def _failures(self, what: str) -> Iterator[None]:
        """A manifest or blob transfer's HTTP failures (before the answer or in its body: a
        connection cut, a read timeout) as prewarm errors that say ``what`` failed."""
        try:
            yield
        except aiohttp.InvalidURL as exc:
            raise PrewarmError(
                f"{self.base_url!r} is not a node URL (like http://127.0.0.1:65001)"
            ) from exc
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            raise NodeUnreachable(f"{what}: node {self.base_url} unreachable: {reason}") from exc
        except aiohttp.ClientError as exc:  # ClientPayloadError: the body ended early or garbled
            raise PrewarmError(f"{what}: the node's answer broke off: {exc}") from exc

    async def pin(
        self, digests: list[str], seconds: float, reason: str, sizes: dict[str, int] | None = None
    ) -> PinReply:
        """Pin ``digests``; with their ``sizes``, the node says why it could not keep those it
        lacks."""
        url = f"{self.base_url}/_imgaccel/pins"
        reply = PinReply([], [])
        # In small batches: the node takes request bodies of at most 1 KiB.
        for start in range(0, len(digests), _PIN_BATCH):
            batch = digests[start : start + _PIN_BATCH]
            payload: dict[str, Any] = {"digests": batch, "seconds": seconds, "reason": reason}
            if sizes:
                payload["sizes"] = {d: sizes[d] for d in batch if d in sizes}
            body = await self.admin("POST", url, json=payload)
            reply.pinned.extend(body.get("pinned", []))
            reply.missing.extend(body.get("missing", []))
            if isinstance(not_kept := body.get("not_kept"), dict):
                reply.not_kept.update(not_kept)
        return reply

    async def admin(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        try:
            async with self._session.request(method, url, **kwargs) as response:
                if response.status >= 400:
                    raise PrewarmError(f"{method} {url}: {response.status} {await response.text()}")
                value = await response.json() if response.status != 204 else {}
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise NodeUnreachable(f"node {self.base_url} unreachable: {exc}") from exc
        except aiohttp.InvalidURL as exc:
            raise PrewarmError(
                f"{self.base_url!r} is not a node URL (like http://127.0.0.1:65001)"
            ) from exc
        except (aiohttp.ClientError, ValueError) as exc:  # not JSON: not an imgaccel node?
            raise PrewarmError(f"{method} {url}: not an imgaccel node's answer: {exc}") from exc
        return value if isinstance(value, dict) else {}

    def _request(self, method: str, url: str, ref: ImageRef, headers: dict[str, str]) -> Any:
        """Call within :meth:`_failures`, which maps its connection errors."""
        return self._session.request(method, url, params={"ns": ref.registry}, headers=headers)


async def _check(response: aiohttp.ClientResponse, ref: ImageRef, what: str = "") -> None:
    """Raise for an error answer; ``what`` (default: the image) is named in the message."""
    if response.status == 200:
        return
    detail, refused_registry = await _error_message(response)
    what = what or str(ref)
    if response.status == 404:
        raise UnknownImage(f"{what}: unknown to the registry ({detail})")
    if response.status == 403 and refused_registry:  # the node's `registries` setting
        raise Denied(f"{what}: {detail}")
    if response.status in (401, 403):
        raise Denied(f"{what}: access denied ({detail}); give --username and --password-stdin")
    raise PrewarmError(f"{what}: the node answered {response.status} ({detail})")


async def _error_message(response: aiohttp.ClientResponse) -> tuple[str, bool]:
    """The registry error's message, and whether it is the node refusing the registry itself
    (credentials would not help)."""
    try:
        error = (await response.json(content_type=None))["errors"][0]
        detail = error.get("detail")
        refused = isinstance(detail, dict) and "registry" in detail
        return str(error["message"]), refused
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, aiohttp.ClientError):
        return response.reason or str(response.status), False


async def warm(
    api: NodeAPI,
    plan: ImagePlan,
    progress: Callable[[int], None],
    *,
    pin_seconds: float,
    parallel: int = 4,
) -> None:
    """Fetch every blob of ``plan`` through the node, then pin them; CacheFullError when the
    node could not keep them all."""
    limit = asyncio.Semaphore(parallel)

    async def one(blob: Blob) -> None:
        async with limit:
            await api.fetch_blob(plan.ref, blob, progress)

    tasks = [asyncio.create_task(one(b), name=f"prewarm-{b.digest}") for b in plan.blobs]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    sizes = {b.digest: b.size for b in plan.blobs}
    reply = await api.pin(list(sizes), pin_seconds, "prewarm", sizes)
    if reply.missing:
        raise CacheFullError(
            f"{plan.ref}: the node's cache could not keep {len(reply.missing)} blob(s) "
            f"({', '.join(reply.missing[:3])}{', ...' if len(reply.missing) > 3 else ''}): "
            f"{_not_kept(reply)}"
        )


#: What to do about each reason a node gives for not keeping a blob.
_FIXES = {
    "quota": "raise cache.quota_bytes or unpin blobs (imgaccel cache unpin)",
    "too_big": "raise cache.quota_bytes above the blob's size",
    "disk": "free space on the node's cache disk, or lower cache.min_free_percent",
}


def _not_kept(reply: PinReply) -> str:
    """Why the node did not keep the missing blobs, each reason once, with its fix."""
    why: dict[str, str] = {}
    for digest in reply.missing:
        found = reply.not_kept.get(digest)
        if isinstance(found, dict) and found.get("reason") in _FIXES:
            why.setdefault(str(found["reason"]), str(found.get("message", "")))
    if not why:  # an older node, or room was made since
        return (
            "its quota is full of pinned or busy blobs, or keeping them would leave less than "
            "cache.min_free_percent of its disk free (the node's log says which: "
            f"`not caching ...`); {_FIXES['quota']}, or {_FIXES['disk']}"
        )
    return "; ".join(f"{message}: {_FIXES[reason]}" for reason, message in why.items())
