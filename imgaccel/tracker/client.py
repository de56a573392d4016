"""A typed client of the tracker's JSON API, for nodes and seeders.

Imports nothing from the tracker's server side, so the node can use it without pulling the
tracker in. Pass an ``ssl`` context with the node's cluster certificate
(:func:`imgaccel.tracker.auth.client_context`) unless the tracker runs ``--insecure``.

How a node uses it on a cache miss for ``digest``::

    torrent = await tracker.get_metainfo(digest)            # someone published it? use P2P
    if torrent is None:
        claim = await tracker.claim(digest, registry=..., repository=...)
        if claim.fetch:                                     # we fetch from the origin
            ...fetch, verify, renew() meanwhile, then publish(digest, torrent)
            ...or release(digest) on failure
        else:                                               # a node or a seeder fetches
            torrent = await tracker.get_metainfo(digest, wait=claim.lease_seconds)
            # None: the holder gave up or died; claim again (or fetch from the origin)

At start, and every ten minutes while it runs, a node calls ``holdings(all digests it has)``
and re-publishes the ones the answer names, because a tracker that lost its state would not
know them. Every announce interval (a minute) it calls ``alive(port, info-hashes)`` with
every torrent it seeds or downloads: one call that keeps its peers in all those swarms, where
libtorrent would announce each torrent on its own.

Every call is bounded by the client's ``timeout`` (a long poll by its wait plus that). After a
call found the tracker unreachable or silent, the first ``get_metainfo`` of a cache miss fails at
once for ``down_seconds`` instead of waiting out the timeout again on every miss.
"""

from __future__ import annotations

import json
import ssl
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from imgaccel.errors import ImgaccelError


class TrackerError(ImgaccelError):
    """The tracker refused a request or could not be reached."""


@dataclass(frozen=True, slots=True)
class ClaimReply:
    """The election's answer: fetch the blob yourself, or wait for ``holder`` to publish."""

    fetch: bool
    holder: str | None = None
    lease_seconds: float = 0.0
    published: bool = False


@dataclass(frozen=True, slots=True)
class Work:
    """A blob a seeder should fetch: where it comes from."""

    digest: str
    registry: str
    repository: str


@dataclass(frozen=True, slots=True)
class Publication:
    """What the tracker holds for a digest after a publish (``created``, ``same``, ``conflict``)."""

    outcome: str
    info_hash: str


_OUTCOMES = {201: "created", 200: "same", 409: "conflict"}
_DEFAULT_TIMEOUT = 30.0


class TrackerClient:
    """Calls of one node (or seeder) ``node`` to the tracker at ``base_url``.

    ``timeout`` bounds each call (None: the total timeout of ``http``, else 30 s); a long poll
    gets its wait on top. ``down_seconds`` is how long a tracker that failed to answer is not
    asked on a cache miss (see the module docstring)."""

    def __init__(
        self,
        base_url: str,
        http: aiohttp.ClientSession,
        *,
        node: str,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float | None = None,
        down_seconds: float = 5.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.node = node
        self.timeout = timeout if timeout is not None else (http.timeout.total or _DEFAULT_TIMEOUT)
        self.down_seconds = down_seconds
        self._http = http
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._down_until = 0.0  # monotonic: no cache-miss lookups before this

    async def get_metainfo(self, digest: str, *, wait: float = 0.0) -> bytes | None:
        """The .torrent published for ``digest``; None when unknown (after ``wait`` seconds).
        Without a wait, fails at once while the tracker is known to be down."""
        if wait <= 0 and time.monotonic() < self._down_until:
            raise TrackerError(f"tracker {self.base_url} did not answer just now; not asked")
        params = {"wait": str(wait)} if wait > 0 else {}
        timeout = aiohttp.ClientTimeout(total=wait + self.timeout)
        status, body = await self._call(
            "GET", f"/v1/metainfo/{digest}", params=params, timeout=timeout, ok=(200, 404)
        )
        return body if status == 200 else None

    async def publish(self, digest: str, torrent: bytes) -> Publication:
        status, body = await self._call(
            "PUT",
            f"/v1/metainfo/{digest}",
            data=torrent,
            params={"node": self.node},
            ok=(200, 201, 409),
        )
        return Publication(_OUTCOMES[status], _json(body)["info_hash"])

    async def claim(
        self,
        digest: str,
        *,
        role: str = "node",
        registry: str | None = None,
        repository: str | None = None,
    ) -> ClaimReply:
        payload = {"node": self.node, "role": role, "registry": registry, "repository": repository}
        _, body = await self._call("POST", f"/v1/claims/{digest}", json=_compact(payload))
        reply = _json(body)
        return ClaimReply(
            bool(reply["fetch"]),
            reply.get("holder"),
            float(reply.get("lease_seconds", 0.0)),
            bool(reply.get("published")),
        )

    async def renew(self, digest: str) -> bool:
        """Extend our lease; False when the claim is no longer ours (stop, or claim again)."""
        status, _ = await self._call(
            "POST", f"/v1/claims/{digest}/renew", json={"node": self.node}, ok=(200, 409)
        )
        return status == 200

    async def release(self, digest: str) -> None:
        """Give up our claim (the fetch failed) so that another node can fetch at once."""
        await self._call(
            "DELETE", f"/v1/claims/{digest}", params={"node": self.node}, ok=(204, 409)
        )

    async def holdings(self, digests: list[str]) -> list[str]:
        """Report what we hold; the digests the tracker has no metainfo for (re-publish them)."""
        _, body = await self._call(
            "POST", "/v1/holdings", json={"node": self.node, "digests": digests}
        )
        return list(_json(body)["unknown"])

    async def alive(
        self,
        port: int,
        info_hashes: list[str],
        ip: str | None = None,
        *,
        downloading: list[str] | None = None,
    ) -> tuple[float, list[str]]:
        """Say that this node's peers (at ``ip``, else our address, and ``port``) still hold
        the torrents of ``info_hashes`` (hex); (seconds within which to say it again, the
        info-hashes the tracker has no peer of ours in: announce those again). With
        ``downloading`` (those of ``info_hashes`` not whole yet), the tracker puts the node in
        the swarms of the rest as a seed, where it has no peer yet."""
        payload = _compact({"node": self.node, "port": port, "ip": ip, "info_hashes": info_hashes})
        if downloading is not None:
            payload["downloading"] = downloading
        _, body = await self._call("POST", "/v1/alive", json=payload)
        reply = _json(body)
        return float(reply["interval"]), [str(h) for h in reply["unknown"]]

    async def left(
        self, port: int, info_hashes: list[str], ip: str | None = None, *, stopping: bool = True
    ) -> int:
        """Say that this node's peers leave the swarms of ``info_hashes`` at once (libtorrent
        would announce "stopped" for each): it stops, or (``stopping=False``) it evicted those
        blobs; how many peers the tracker removed."""
        payload = _compact({"node": self.node, "port": port, "ip": ip, "info_hashes": info_hashes})
        if not stopping:
            payload["stopping"] = False
        _, body = await self._call("POST", "/v1/left", json=payload)
        return int(_json(body)["removed"])

    async def heartbeat(self) -> float:
        """Register as a seeder; the seconds within which to heartbeat (or poll work) again."""
        _, body = await self._call("POST", "/v1/seeders", json={"node": self.node})
        return float(_json(body)["ttl_seconds"])

    async def work(self, *, wait: float = 0.0) -> list[Work]:
        """A seeder's queued blobs to fetch, long-polling up to ``wait`` seconds."""
        params = {"node": self.node, "wait": str(wait)}
        _, body = await self._call(
            "GET",
            "/v1/seeders/work",
            params=params,
            timeout=aiohttp.ClientTimeout(total=wait + self.timeout),
        )
        return [Work(**item) for item in _json(body)["work"]]

    async def _call(
        self, method: str, path: str, *, ok: tuple[int, ...] = (200,), **kwargs: Any
    ) -> tuple[int, bytes]:
        url = f"{self.base_url}{path}"
        kwargs.setdefault("timeout", aiohttp.ClientTimeout(total=self.timeout))
        try:
            async with self._http.request(method, url, ssl=self._ssl, **kwargs) as response:
                body = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._down_until = time.monotonic() + self.down_seconds
            raise TrackerError(f"tracker {method} {path}: {exc!r}") from exc
        self._down_until = 0.0
        if response.status not in ok:
            raise TrackerError(f"tracker {method} {path}: {response.status} {body[:300]!r}")
        return response.status, body


def _compact(payload: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in payload.items() if value is not None}


def _json(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except ValueError as exc:
        raise TrackerError(f"tracker answered non-JSON: {body[:200]!r}") from exc
    if not isinstance(value, dict):
        raise TrackerError("tracker answered JSON that is not an object")
    return value
