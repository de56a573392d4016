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
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from imgaccel.cache.meta import MetaStore
from imgaccel.errors import (
    BlobUnknown,
    Denied,
    ManifestUnknown,
    RegistryError,
    Unauthorized,
    UpstreamError,
    UpstreamUnavailable,
)
from imgaccel.oci.digest import Digest
from imgaccel.upstream.auth import identity
from imgaccel.upstream.client import UpstreamClient

log = logging.getLogger(__name__)


def refusal(status: int, kind: str, challenge: str | None) -> RegistryError:
    """The client-facing error for an origin's refusal of a blob or manifest request."""
    if status == 401:
        headers = {"WWW-Authenticate": challenge} if challenge else {}
        return Unauthorized("authentication required", headers=headers)
    if status == 403:
        return Denied("requested access to the resource is denied")
    if status == 404:
        return (
            BlobUnknown("blob unknown to registry")
            if kind == "blobs"
            else ManifestUnknown("manifest unknown")
        )
    return UpstreamUnavailable(f"origin registry answered {status}")


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
        self._public: dict[tuple[str, str], float] = {}

    def record(
        self,
        registry: str,
        repo: str,
        digest: Digest,
        *,
        used_client_auth: bool,
        client_auth: str | None,
    ) -> None:
        """The origin just served ``digest`` from ``repo``; remember what that tells us."""
        self._meta.add_content(registry, repo, digest)
        self._meta.set_public(registry, repo, not used_client_auth)
        expires = self._clock() + self._ttl
        if used_client_auth:
            self._public.pop((registry, repo), None)
            self._granted[(registry, repo, identity(client_auth))] = expires
        else:
            self._public[(registry, repo)] = expires

    def _allowed_locally(
        self, registry: str, repo: str, digest: Digest, client_auth: str | None
    ) -> bool:
        if not self._meta.has_content(registry, repo, digest):
            return False
        now = self._clock()
        if self._public.get((registry, repo), now) > now:
            return True
        expires = self._granted.get((registry, repo, identity(client_auth)))
        return expires is not None and expires > now

    async def check(
        self, registry: str, repo: str, digest: Digest, client_auth: str | None, kind: str
    ) -> None:
        """Return if the client may read ``digest`` through ``repo``; raise the refusal if not."""
        if self._allowed_locally(registry, repo, digest, client_auth):
            return
        try:
            await self._ask_origin(registry, repo, digest, client_auth, kind)
        except (UpstreamError, UpstreamUnavailable) as exc:
            if not (
                self._meta.has_content(registry, repo, digest)
                and self._meta.is_public(registry, repo)
            ):
                raise
            log.warning(
                "origin unreachable to re-check %s/%s (%s); serving it as last seen: public",
                registry,
                repo,
                exc,
            )

    async def _ask_origin(
        self, registry: str, repo: str, digest: Digest, client_auth: str | None, kind: str
    ) -> None:
        async with self._client.open(
            "HEAD", registry, repo, f"{kind}/{digest}", client_auth=client_auth, kind="access-check"
        ) as answer:
            if answer.status == 200:
                self.record(
                    registry,
                    repo,
                    digest,
                    used_client_auth=answer.used_client_auth,
                    client_auth=client_auth,
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

    def is_public(self, registry: str, repo: str) -> bool:
        """Whether the origin last served ``repo`` without the client's credentials."""
        return bool(self._meta.is_public(registry, repo))
