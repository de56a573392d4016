"""``HEAD``/``GET /v2/<name>/manifests/<reference>``.

By digest: kept for good once fetched (and verified against the digest). By tag: the tag ->
digest answer is used for ``cache.tag_ttl_seconds``; after that the origin is asked again (a
``HEAD``, so an unchanged tag costs no body). When the origin cannot be reached (or fails: 5xx,
429, a body cut short), the last answer is served stale with a ``Warning`` header and a log line,
to a client the access guard lets read it: the guard serves what was last seen readable without
the client's credentials, and nothing private, while it cannot ask the origin.

The tag cache holds the origin's answer to the full ``MANIFEST_ACCEPT`` (a list or index where
there is one): the registry picks what to send by the client's Accept, so a client whose Accept
does not name the cached type is passed through to the origin with its own Accept, uncached.
"""

from __future__ import annotations

import logging
import time

import aiohttp
from aiohttp import web

from imgaccel.cache.meta import Manifest
from imgaccel.errors import ManifestUnknown, UpstreamError, UpstreamUnavailable
from imgaccel.oci.digest import Digest
from imgaccel.oci.manifest import manifest_digest
from imgaccel.oci.media import MANIFEST_ACCEPT, accepts
from imgaccel.oci.reference import validate_reference
from imgaccel.proxy.access import refusal
from imgaccel.proxy.state import NODE, Node
from imgaccel.proxy.target import ALLOWLIST, Target, client_auth, target_of
from imgaccel.upstream.auth import identity

log = logging.getLogger(__name__)

MAX_MANIFEST_BYTES = 4 * 1024 * 1024
STALE_WARNING = '110 imgaccel "Response is Stale: origin registry unreachable"'


async def manifest(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE]
    started = time.monotonic()
    target = target_of(request, node.settings)
    request.app[ALLOWLIST].check(target.registry)
    reference = validate_reference(request.match_info["reference"])
    auth = client_auth(request)
    accept = client_accept(request.headers.getall("Accept", []))
    extra: dict[str, str] = {}
    if isinstance(reference, Digest):
        found = await _by_digest(node, target, reference, auth, accept)
    else:
        found, extra = await _by_tag(node, target, reference, auth, accept)
    node.metrics.manifest_seconds.observe(time.monotonic() - started)
    headers = {
        "Content-Type": found.media_type,
        "Docker-Content-Digest": str(found.digest),
        "Docker-Distribution-API-Version": "registry/2.0",
        **extra,
    }
    if request.method == "HEAD":
        headers["Content-Length"] = str(len(found.body))
        return web.Response(status=200, headers=headers)
    node.metrics.served(
        "origin" if extra.get("X-Imgaccel-Source") == "origin" else "cache", len(found.body)
    )
    return web.Response(body=found.body, headers=headers)


async def lookup(node: Node, target: Target, reference: str, auth: str | None = None) -> Manifest:
    """A manifest as a client's GET would get it (cache, else origin), for in-process callers
    such as the prefetch worker."""
    parsed = validate_reference(reference)
    if isinstance(parsed, Digest):
        return await _by_digest(node, target, parsed, auth, MANIFEST_ACCEPT)
    return (await _by_tag(node, target, parsed, auth, MANIFEST_ACCEPT))[0]


def client_accept(values: list[str]) -> str:
    """What to ask the origin for. A client that accepts anything (``*/*`` or no header) gets
    every manifest type named: the distribution registry answers a bare ``*/*`` with 404 for an
    OCI manifest."""
    accept = ", ".join(v.strip() for v in values if v.strip())
    if accept.replace(" ", "") in ("", "*/*"):
        return MANIFEST_ACCEPT
    return accept


async def _by_digest(
    node: Node, target: Target, digest: Digest, auth: str | None, accept: str
) -> Manifest:
    cached = node.meta.manifest(digest)
    if cached is not None:
        await node.guard.check(target.registry, target.repo, digest, auth, "manifests")
        node.metrics.cache_hits.labels("manifest").inc()
        return cached
    node.metrics.cache_misses.labels("manifest").inc()
    fetched = await _fetch(node, target, str(digest), auth, accept, digest.algorithm)
    if fetched.digest != digest:
        raise UpstreamUnavailable("origin sent a manifest that does not match its digest")
    return fetched


async def _by_tag(
    node: Node, target: Target, tag: str, auth: str | None, accept: str
) -> tuple[Manifest, dict[str, str]]:
    entry = node.meta.tag(target.registry, target.repo, tag)
    cached = node.meta.manifest(entry.digest) if entry else None
    if cached is not None and not _admits(accept, cached.media_type):
        node.metrics.cache_misses.labels("tag").inc()
        return await _pass_through(node, target, tag, auth, accept)
    if entry is not None and cached is not None:
        if time.time() - entry.fetched_at < node.settings.cache.tag_ttl_seconds:
            await node.guard.check(target.registry, target.repo, entry.digest, auth, "manifests")
            node.metrics.cache_hits.labels("tag").inc()
            return cached, {}
        try:
            if await _still_current(node, target, tag, auth, entry.digest):
                node.metrics.cache_hits.labels("tag").inc()
                return cached, {}
        except (UpstreamError, UpstreamUnavailable) as exc:
            return await _stale(node, target, tag, auth, cached, exc)
    node.metrics.cache_misses.labels("tag").inc()
    missing_key = (target.registry, target.repo, tag)
    if node.not_found.get(missing_key, 0.0) > time.monotonic():
        raise ManifestUnknown("manifest unknown (the origin said so moments ago)")
    try:
        fetched = await _fetch(node, target, tag, auth, MANIFEST_ACCEPT)
    except ManifestUnknown:
        # Negative caching: a missing tag asked for in a loop costs the origin one request.
        # Asked with every manifest type, a 404 holds for any client's Accept.
        now = time.monotonic()
        if len(node.not_found) > 10_000:  # hostile tag names must not grow it without bound
            node.not_found = {k: t for k, t in node.not_found.items() if t > now}
        node.not_found[missing_key] = now + node.settings.cache.not_found_ttl_seconds
        raise
    except (UpstreamError, UpstreamUnavailable) as exc:
        if cached is None:
            raise
        return await _stale(node, target, tag, auth, cached, exc)
    node.not_found.pop(missing_key, None)
    node.meta.put_tag(target.registry, target.repo, tag, fetched.digest)
    if not _admits(accept, fetched.media_type):
        return await _pass_through(node, target, tag, auth, accept)
    return fetched, {"X-Imgaccel-Source": "origin"}


def _admits(accept: str, media_type: str) -> bool:
    """Whether a client asking with ``accept`` would get the tag cache's answer (of type
    ``media_type``, fetched with ``MANIFEST_ACCEPT``) from the origin too."""
    return accept == MANIFEST_ACCEPT or accepts(accept, media_type)


async def _pass_through(
    node: Node, target: Target, tag: str, auth: str | None, accept: str
) -> tuple[Manifest, dict[str, str]]:
    """The origin's answer to a client whose Accept refuses the cached type: a child manifest
    of a list, or a 404 for an index. Neither is the tag's answer for other clients, so it
    is not cached by tag (nor is its 404), and nothing cached is served stale in its place."""
    return await _fetch(node, target, tag, auth, accept), {"X-Imgaccel-Source": "origin"}


async def _stale(
    node: Node, target: Target, tag: str, auth: str | None, cached: Manifest, exc: Exception
) -> tuple[Manifest, dict[str, str]]:
    """The cached answer for a tag the origin failed to revalidate, if this client may read it:
    the tag entry is shared by every client, so the one who cached it may have had credentials
    this one lacks."""
    await node.guard.check(target.registry, target.repo, cached.digest, auth, "manifests")
    log.warning(
        "origin unreachable for %s/%s:%s (%s); serving the cached %s stale",
        target.registry,
        target.repo,
        tag,
        exc,
        cached.digest,
    )
    node.metrics.stale_served.inc()
    return cached, {"Warning": STALE_WARNING}


async def _still_current(
    node: Node, target: Target, tag: str, auth: str | None, digest: Digest
) -> bool:
    """Revalidate a tag with a HEAD; True (and the TTL restarts) when it still names ``digest``."""
    async with node.client.open(
        "HEAD",
        target.registry,
        target.repo,
        f"manifests/{tag}",
        client_auth=auth,
        headers={"Accept": MANIFEST_ACCEPT},
        kind="manifest-head",
    ) as answer:
        if answer.status >= 500:
            raise UpstreamUnavailable(f"origin answered {answer.status}")
        if answer.status != 200 or answer.headers.get("Docker-Content-Digest") != str(digest):
            return False
        node.guard.record_answer(
            target.registry,
            target.repo,
            digest,
            answer,
            auth,
        )
    node.meta.put_tag(target.registry, target.repo, tag, digest)
    return True


async def _fetch(
    node: Node,
    target: Target,
    reference: str,
    auth: str | None,
    accept: str,
    algorithm: str = "sha256",
) -> Manifest:
    """GET a manifest from the origin, once for all concurrent askers with the same identity."""
    key = (target, reference, accept, identity(auth))
    return await node.manifest_flights.run(
        key, lambda: _fetch_once(node, target, reference, auth, accept, algorithm)
    )


async def _fetch_once(
    node: Node, target: Target, reference: str, auth: str | None, accept: str, algorithm: str
) -> Manifest:
    async with node.client.open(
        "GET",
        target.registry,
        target.repo,
        f"manifests/{reference}",
        client_auth=auth,
        headers={"Accept": accept},
        kind="manifest",
    ) as answer:
        if answer.status >= 500:
            raise UpstreamUnavailable(f"origin answered {answer.status}")
        if answer.status != 200:
            error = await _error_body(answer.response)
            raise refusal(answer.status, "manifests", answer.challenge, error)
        body = await _read_body(answer.response)
        media_type = answer.headers.get("Content-Type", "").split(";")[0].strip()
    digest = manifest_digest(body, media_type, algorithm)
    found = Manifest(digest, media_type, body)
    node.meta.put_manifest(found)
    node.guard.record_answer(
        target.registry,
        target.repo,
        digest,
        answer,
        auth,
        verified=True,  # the digest is the body's own hash
    )
    return found


async def _error_body(response: aiohttp.ClientResponse, limit: int = 65536) -> bytes:
    """The start of an origin's error answer, for its error code; what arrived if it fails."""
    body = bytearray()
    try:
        while len(body) < limit and (chunk := await response.content.read(limit - len(body))):
            body += chunk
    except (aiohttp.ClientError, TimeoutError):
        pass
    return bytes(body)


async def _read_body(response: aiohttp.ClientResponse) -> bytes:
    """A manifest body; an origin that fails mid-body is unavailable, like one answering 5xx
    (the caller may then serve stale), never a bare 500 for the client."""
    body = bytearray()
    try:
        while chunk := await response.content.read(65536):
            body += chunk
            if len(body) > MAX_MANIFEST_BYTES:
                raise ManifestUnknown("manifest larger than 4 MiB")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise UpstreamUnavailable(f"reading a manifest from the origin failed: {exc!r}") from exc
    return bytes(body)
