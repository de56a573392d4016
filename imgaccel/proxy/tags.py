"""``GET /v2/<name>/tags/list``: the origin's tag list, passed through and never cached.

A tag list changes whenever anyone pushes, and it is small: the node asks the origin each time,
with the client's own credentials (as for a manifest), and relays its answer. The pagination
``Link`` is made relative to the node and keeps the client's ``?ns=``, so a client that follows
it comes back here for the same registry.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

import aiohttp
from aiohttp import web
from yarl import URL

from imgaccel.errors import PaginationInvalid, TagInvalid, UpstreamUnavailable
from imgaccel.oci.reference import is_tag
from imgaccel.proxy.access import refusal
from imgaccel.proxy.state import NODE
from imgaccel.proxy.target import ALLOWLIST, client_auth, target_of

log = logging.getLogger(__name__)

#: The largest tag list relayed: 4 MiB is some 30,000 long tags on one page.
MAX_TAGS_BYTES = 4 * 1024 * 1024
#: The largest page size ``n`` a client may ask for (distribution's own default limit is 1,000).
MAX_PAGE = 100_000
_ERROR_BODY_BYTES = 65536
_LINK_RE = re.compile(r"\s*<([^>]*)>(.*)", re.DOTALL)


async def tags_list(request: web.Request) -> web.Response:
    node = request.app[NODE]
    target = target_of(request, node.settings)
    request.app[ALLOWLIST].check(target.registry)
    query = pagination(request.query)
    async with node.client.open(
        "GET",
        target.registry,
        target.repo,
        "tags/list",
        client_auth=client_auth(request),
        query=query,
        kind="tags",
    ) as answer:
        if answer.status >= 500:
            raise UpstreamUnavailable(f"origin answered {answer.status}")
        if answer.status != 200:
            error = await _read(answer.response, _ERROR_BODY_BYTES, truncate=True)
            raise refusal(answer.status, "tags", answer.challenge, error)
        body = await _read(answer.response, MAX_TAGS_BYTES)
        headers = {
            "Content-Type": answer.headers.get("Content-Type", "application/json"),
            "Docker-Distribution-API-Version": "registry/2.0",
        }
        ns = target.registry if request.query.get("ns") else None
        if (link := node_link(answer.headers.get("Link"), ns)) is not None:
            headers["Link"] = link
    return web.Response(body=body, headers=headers)


def pagination(query: Mapping[str, str]) -> dict[str, str]:
    """The validated ``n`` and ``last`` of a tag list request, to pass to the origin (an empty
    one counts as absent). Raises PaginationInvalid or TagInvalid."""
    found: dict[str, str] = {}
    if n := query.get("n", ""):
        if not (n.isascii() and n.isdigit() and len(n) <= 6 and int(n) <= MAX_PAGE):
            raise PaginationInvalid(
                f"n must be an integer from 0 to {MAX_PAGE}", detail={"n": n[:100]}
            )
        found["n"] = str(int(n))
    if last := query.get("last", ""):
        if not is_tag(last):
            raise TagInvalid("last must be a tag", detail={"last": last[:300]})
        found["last"] = last
    return found


def node_link(link: str | None, ns: str | None) -> str | None:
    """The origin's pagination ``Link`` (``</v2/name/tags/list?n=2&last=b>; rel="next"``) as a
    path on the node, with ``ns`` added when the client named the registry; None for none, or
    one that does not point at a tag list (it is dropped: the client gets the page alone)."""
    if not link or not (match := _LINK_RE.fullmatch(link)):
        return None
    try:
        url = URL(match[1])
    except ValueError:
        url = None
    if url is None or not url.path.startswith("/v2/") or not url.path.endswith("/tags/list"):
        log.info("dropping an origin's tag list Link the node cannot follow: %r", link[:300])
        return None
    relative = URL.build(path=url.path, query=url.query, encoded=True)
    if ns:
        relative = relative.update_query(ns=ns)
    return f"<{relative}>{match[2]}"


async def _read(response: aiohttp.ClientResponse, limit: int, *, truncate: bool = False) -> bytes:
    """The body, at most ``limit`` bytes: a longer one is UpstreamUnavailable, or cut when
    ``truncate`` (an error answer, read for its code: what arrived if reading fails)."""
    if not truncate and (response.content_length or 0) > limit:
        raise UpstreamUnavailable(f"origin sent a tag list larger than {limit} bytes")
    body = bytearray()
    try:
        while chunk := await response.content.read(65536):
            body += chunk
            if len(body) > limit:
                if truncate:
                    return bytes(body[:limit])
                raise UpstreamUnavailable(f"origin sent a tag list larger than {limit} bytes")
    except (aiohttp.ClientError, TimeoutError) as exc:
        if truncate:
            return bytes(body)
        raise UpstreamUnavailable(f"reading a tag list from the origin failed: {exc!r}") from exc
    return bytes(body)
