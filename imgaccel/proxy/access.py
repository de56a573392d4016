"""Who may read what from the cache.

Content of a public repository (the origin served it without the client's credentials) is served
to anyone who asks for it *through that repository*. Content of a private repository is served only
to a client whose credentials the origin accepts for that repository: the answer is asked of the
origin (a ``HEAD`` with the client's credentials) and remembered for a short TTL. A repository's
being public is remembered for the same TTL, then asked again, so one made private at the origin
stops being served to everyone; while the origin cannot be reached, content last seen public is
still served (the mirror works offline) and private content is not. A digest that was never seen
in the requested repository is always checked with the origin, so knowing a private layer's
digest is not enough to read it through a public repository.

The cache is keyed by digest alone, so an origin's answer about a digest counts only from a
registry known to hold its bytes: one the digest was fetched from and verified against (its
provenance, kept in the metadata store), or the one a fill of it is streaming from right now
(whose bytes are verified before the last one is released). Anyone can run a registry that answers
``HEAD`` with 200 for every digest; believing it would hand a layer someone pulled from a private
registry to whoever names it through ``?ns=``. For a registry outside the provenance the request
is a cache miss for that registry: the node GETs the digest from it, with the client's
credentials, and hashes the body. Only when the bytes are the digest is the registry added to the
provenance and the cached copy served; else the client gets that origin's refusal, or
``BLOB_UNKNOWN`` / ``MANIFEST_UNKNOWN``. That never refuses a pull the origin would serve, never
serves bytes the origin does not have, and costs one download per new (registry, digest) pair.
The one shortcut: a digest known public (verified from a registry that served it with no
credentials) is anyone's already, so any registry's ``HEAD`` is enough for it.

"Public" means served with no credentials at all. The node's own configured credentials make a
repository readable by every client of this node (online and, as last seen, offline), but not
public: that word travels to other nodes (the torrent's ``imgaccel-anonymous`` list) and snapshots.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable

import aiohttp

from imgaccel.cache.fill import Fill
from imgaccel.cache.meta import MetaStore
from imgaccel.errors import (
    BlobUnknown,
    Denied,
    ManifestUnknown,
    MetaUnwritable,
    NameUnknown,
    OriginRefused,
    RegistryError,
    Unauthorized,
    UpstreamError,
    UpstreamUnavailable,
)
from imgaccel.oci.digest import Digest
from imgaccel.oci.media import MANIFEST_ACCEPT
from imgaccel.proxy.singleflight import SingleFlight
from imgaccel.upstream.auth import identity
from imgaccel.upstream.blobs import batches, parse_content_length
from imgaccel.upstream.client import Answer, UpstreamClient

log = logging.getLogger(__name__)

#: Remembered access answers kept before the expired ones are dropped.
_PRUNE_AT = 10_000


def refusal(
    status: int, kind: str, challenge: str | None, body: bytes | None = None
) -> RegistryError:
    """The client-facing error for an origin's refusal of a blob, manifest or tag list
    (``kind`` ``"tags"``) request.

    ``body`` is the start of the origin's error answer to a GET, when the caller read it: any
    other 4xx but a rate limit is then the origin's word on the request, relayed with its status
    and code. Without it (a HEAD, which may be refused alone), such a status is an origin failure.
    """
    if status == 401:
        headers = {"WWW-Authenticate": challenge} if challenge else {}
        return Unauthorized("authentication required", headers=headers)
    if status == 403:
        return Denied("requested access to the resource is denied")
    if status == 404:
        if kind == "tags":
            return NameUnknown("repository name not known to registry")
        return (
            BlobUnknown("blob unknown to registry")
            if kind == "blobs"
            else ManifestUnknown("manifest unknown")
        )
    if body is not None and 400 <= status < 500 and status != 429:  # 429: may serve stale
        return OriginRefused(status, *_origin_error(status, body))
    return UpstreamUnavailable(f"origin registry answered {status}")


def _origin_error(status: int, body: bytes) -> tuple[str, str]:
    """The code and message of the first error in a registry error body, else generic ones."""
    try:
        first = json.loads(body)["errors"][0]
        return str(first["code"])[:100], str(first.get("message", ""))[:1000]
    except (ValueError, KeyError, IndexError, TypeError, RecursionError, AttributeError):
        return "UNSUPPORTED", f"origin registry answered {status}"


class AccessGuard:
    """Decides whether a client may read cached content (see the module docstring)."""

    def __init__(
        self,
        meta: MetaStore,
        client: UpstreamClient,
        ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._meta = meta
        self._client = client
        self._ttl = ttl_seconds
        self._clock = clock
        self._granted: dict[tuple[str, str, str], float] = {}
        # Repositories any client of this node may read (public, or the node's credentials do).
        self._open: dict[tuple[str, str], float] = {}
        # Digest -> the registry its fill in progress streams from, that fill (once started),
        # and whether the registry sent it to no credentials at all.
        self._filling: dict[Digest, tuple[str, asyncio.Future[Fill], bool]] = {}
        self._verifying: SingleFlight[tuple[str, str, str, str, str], None] = SingleFlight()

    def record(
        self,
        registry: str,
        repo: str,
        digest: Digest,
        *,
        anonymous: bool,
        used_client_auth: bool,
        client_auth: str | None,
        verified: bool = False,
        filling: asyncio.Future[Fill] | None = None,
    ) -> None:
        """The origin just served (or granted) ``digest`` from ``repo``; remember what that
        tells us. ``anonymous``: no credentials at all were sent; neither that nor
        ``used_client_auth``: the node's own were. ``verified``: the registry's bytes were
        checked against ``digest``; ``filling``: they are going into that fill, which checks
        them (the registry vouches for the digest while it runs, and for good once verified).
        """
        self._meta.add_content(registry, repo, digest, verified=False)
        self._meta.set_public(registry, repo, anonymous, node_credentials=not used_client_auth)
        if verified:
            self._meta.add_origin(registry, digest, anonymous)
        if filling is not None:
            self._track(registry, digest, filling, anonymous)
        now = self._clock()
        if len(self._granted) + len(self._open) > _PRUNE_AT:  # tokens rotate: keys pile up
            self._granted = {key: t for key, t in self._granted.items() if t > now}
            self._open = {key: t for key, t in self._open.items() if t > now}
        expires = now + self._ttl
        if used_client_auth:
            self._open.pop((registry, repo), None)
            self._granted[(registry, repo, identity(client_auth))] = expires
        else:
            self._open[(registry, repo)] = expires

    def record_answer(
        self,
        registry: str,
        repo: str,
        digest: Digest,
        answer: Answer,
        client_auth: str | None,
        *,
        verified: bool = False,
        filling: asyncio.Future[Fill] | None = None,
    ) -> None:
        """:meth:`record` what the origin's 200 ``answer`` says of the credentials it took."""
        self.record(
            registry,
            repo,
            digest,
            anonymous=answer.anonymous,
            used_client_auth=answer.used_client_auth,
            client_auth=client_auth,
            verified=verified,
            filling=filling,
        )

    def _track(
        self, registry: str, digest: Digest, ready: asyncio.Future[Fill], anonymous: bool
    ) -> None:
        entry = (registry, ready, anonymous)
        self._filling[digest] = entry

        def forget(_: object = None) -> None:
            if self._filling.get(digest) is entry:
                del self._filling[digest]

        def started(ready: asyncio.Future[Fill]) -> None:
            if ready.cancelled() or ready.exception() is not None:
                forget()
            else:  # once it ends; a fill that verified is provenance already (fill_verified)
                ready.result().done.add_done_callback(forget)

        ready.add_done_callback(started)

    def fill_verified(self, fill: Fill) -> None:
        """``fill`` verified: the registry it streams from (the ``filling`` of :meth:`record`)
        is provenance for its digest from now on. The fetcher calls this before it commits the
        fill, not once the fill has ended: from the commit on the store has the blob, and a
        request that finds it there counts that registry's word only from its provenance (not
        knowing it yet, it would fetch the blob from the origin again)."""
        tracked = self._filling.get(fill.digest)
        if tracked is None:
            return
        registry, ready, anonymous = tracked
        if not _alive(ready) or ready.result() is not fill:
            return
        try:
            self._meta.add_origin(registry, fill.digest, anonymous)
        except MetaUnwritable as exc:  # the blob is served all the same: failing it helps nobody
            log.warning("%s from %s verified, but not recorded: %s", fill.digest, registry, exc)

    def vouched_by_cluster(self, registry: str, digest: Digest) -> None:
        """A node of the cluster verified ``digest`` from ``registry`` (the torrent's
        ``imgaccel-origins``; the tracker takes torrents only from nodes with the cluster's
        certificate): ``registry`` is provenance here too."""
        self._meta.add_origin(registry, digest, anonymous=False)

    def origins_of(self, digest: Digest) -> frozenset[str]:
        """The registries ``digest`` is known to have been verified from."""
        return self._meta.origins_of(digest)

    def vouches(self, registry: str, digest: Digest, *, joining_fill: bool = False) -> bool:
        """Whether ``registry``'s word about ``digest`` counts (see the module docstring).

        ``joining_fill``: the request is to be served from the fill of ``digest`` streaming
        from ``registry`` now, whose bytes are checked before the last one is released; that
        registry's word counts for such a request alone. Its bytes are not verified yet, so it
        never vouches for a cached manifest or blob of the same digest, nor offline: a registry
        sending a slow blob ``D`` would otherwise unlock a cached private manifest ``D``."""
        if joining_fill:
            filling = self._filling.get(digest)
            if filling is not None and filling[0] == registry and _alive(filling[1]):
                return True
        return self._meta.fetched_from(registry, digest) or self._meta.known_public(digest)

    def _allowed_locally(
        self,
        registry: str,
        repo: str,
        digest: Digest,
        client_auth: str | None,
        joining_fill: bool,
    ) -> bool:
        if not self._meta.has_content(registry, repo, digest):
            return False
        now = self._clock()
        if self._open.get((registry, repo), now) > now:
            allowed = True
        else:
            expires = self._granted.get((registry, repo, identity(client_auth)))
            allowed = expires is not None and expires > now
        # A meta.db from before provenance may hold an unverified registry's approval.
        return allowed and self.vouches(registry, digest, joining_fill=joining_fill)

    async def check(
        self,
        registry: str,
        repo: str,
        digest: Digest,
        client_auth: str | None,
        kind: str,
        *,
        joining_fill: bool = False,
    ) -> None:
        """Return if the client may read ``digest`` through ``repo``; raise the refusal if not.
        ``joining_fill``: see :meth:`vouches`."""
        if self._allowed_locally(registry, repo, digest, client_auth, joining_fill):
            return
        try:
            if self.vouches(registry, digest, joining_fill=joining_fill):
                await self._ask_origin(registry, repo, digest, client_auth, kind)
            else:
                await self._verify_at_origin(registry, repo, digest, client_auth, kind)
        except (UpstreamError, UpstreamUnavailable) as exc:
            if not (
                self._meta.has_content(registry, repo, digest)
                and self._meta.open_to_node(registry, repo)
                and self.vouches(registry, digest)
            ):
                raise
            log.warning(
                "origin unreachable to re-check %s/%s (%s); serving it as last seen: "
                "readable without the client's credentials",
                registry,
                repo,
                exc,
            )

    async def _ask_origin(
        self, registry: str, repo: str, digest: Digest, client_auth: str | None, kind: str
    ) -> None:
        async with self._client.open(
            "HEAD",
            registry,
            repo,
            f"{kind}/{digest}",
            client_auth=client_auth,
            headers=_accept(kind),
            kind="access-check",
        ) as answer:
            if answer.status == 200:
                self.record_answer(
                    registry,
                    repo,
                    digest,
                    answer,
                    client_auth,
                )
                return
            log.info(
                "origin refused %s %s/%s for %s: %d",
                kind,
                registry,
                repo,
                identity(client_auth),
                answer.status,
            )
            raise refusal(answer.status, kind, answer.challenge)

    async def _verify_at_origin(
        self, registry: str, repo: str, digest: Digest, client_auth: str | None, kind: str
    ) -> None:
        """The cache miss for a registry not known to hold ``digest``: GET it from there (once
        for concurrent askers with the same credentials) and believe the 200 only if the body
        is the digest."""
        key = (registry, repo, str(digest), kind, identity(client_auth))
        await self._verifying.run(
            key, lambda: self._fetch_and_hash(registry, repo, digest, client_auth, kind)
        )

    async def _fetch_and_hash(
        self, registry: str, repo: str, digest: Digest, client_auth: str | None, kind: str
    ) -> None:
        async with self._client.open(
            "GET",
            registry,
            repo,
            f"{kind}/{digest}",
            client_auth=client_auth,
            headers=_accept(kind),
            kind="access-verify",
        ) as answer:
            if answer.status != 200:
                raise refusal(answer.status, kind, answer.challenge)
            if parse_content_length(answer.headers.get("Content-Length")) is None:
                # Without a length the body could go on forever; a registry always sends one.
                raise UpstreamUnavailable(f"origin sent {kind} {digest} without Content-Length")
            hasher = digest.hasher()
            try:
                async for batch in batches(answer.response):  # a blob may be GBs: off the loop
                    await asyncio.to_thread(hasher.update, batch)
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise UpstreamUnavailable(
                    f"reading {kind} {digest} from {registry}: {exc}"
                ) from exc
        if hasher.hexdigest() != digest.hex:
            log.warning(
                "%s answered for %s in %s with other bytes: not serving it the cached copy",
                registry,
                digest,
                repo,
            )
            raise refusal(404, kind, None)
        self.record_answer(
            registry,
            repo,
            digest,
            answer,
            client_auth,
            verified=True,
        )

    def is_public(self, registry: str, repo: str) -> bool:
        """Whether the origin last served ``repo`` with no credentials at all."""
        return bool(self._meta.is_public(registry, repo))


def _alive(ready: asyncio.Future[Fill]) -> bool:
    """Whether a fill started and has not failed (it is running, or verified)."""
    if not ready.done() or ready.cancelled() or ready.exception() is not None:
        return False
    return ready.result().error is None


def _accept(kind: str) -> dict[str, str]:
    """Every manifest type: the registry answers MANIFEST_UNKNOWN for a manifest whose type the
    request does not accept (an OCI manifest or index, to a request without Accept)."""
    return {"Accept": MANIFEST_ACCEPT} if kind == "manifests" else {}
