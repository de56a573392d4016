"""URLs yarl or aiohttp refuse with a bare ValueError, and header values ``int()`` misreads,
become the upstream error path (UpstreamError: the mirror's 502/503), not an exception that
reaches the web layer as a 500.

The origin is a hand-written aiohttp app on port 0: a real registry never sends these.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from imgaccel.errors import UpstreamError
from imgaccel.upstream.blobs import parse_content_length
from imgaccel.upstream.client import UpstreamClient
from imgaccel.upstream.config import UpstreamClientSettings, UpstreamSettings

#: Locations of redirects to URLs the HTTP client cannot even send to.
BAD_LOCATIONS = {
    "port": "http://127.0.0.1:99999/x",  # yarl: ValueError "Port out of range"
    "empty-label": "http://a..b/x",  # the IDNA codec: UnicodeError "label empty or too long"
    "long-label": f"http://{'a' * 64}.example/x",
}


class Origin:
    def __init__(self) -> None:
        self.busy = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v2/", self.base)
        app.router.add_get("/v2/x/redirect/{to}", self.redirect)
        app.router.add_get("/v2/x/busy", self.busy_once)
        return app

    async def base(self, request: web.Request) -> web.Response:
        return _found(BAD_LOCATIONS["empty-label"])

    async def redirect(self, request: web.Request) -> web.Response:
        return _found(BAD_LOCATIONS[request.match_info["to"]])

    async def busy_once(self, request: web.Request) -> web.Response:
        self.busy += 1
        if self.busy == 1:
            return web.Response(status=503, headers={"Retry-After": "\u00b2"})
        return web.Response(text="ok")


def _found(location: str) -> web.Response:
    return web.Response(status=302, headers={"Location": location})  # HTTPFound checks it


@pytest.fixture
async def origin() -> AsyncIterator[tuple[Origin, str]]:
    fake = Origin()
    async with TestServer(fake.app(), host="127.0.0.1", port=0) as server:
        yield fake, str(server.make_url("")).rstrip("/")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _client(http: aiohttp.ClientSession, url: str | None) -> UpstreamClient:
    settings = UpstreamClientSettings(retries=1, backoff_seconds=0)
    return UpstreamClient(
        http, lambda host: UpstreamSettings(url=url or f"http://{host}"), settings
    )


@pytest.mark.parametrize("to", sorted(BAD_LOCATIONS))
async def test_a_redirect_to_an_unusable_url_is_an_upstream_error(
    origin: tuple[Origin, str], http: aiohttp.ClientSession, to: str
) -> None:
    client = _client(http, origin[1])
    with pytest.raises(UpstreamError, match="failed"):
        async with client.open("GET", "origin", "x", f"redirect/{to}"):
            pass


@pytest.mark.parametrize("host", ["a..b", f"{'a' * 64}.example"])
async def test_a_host_the_idna_codec_refuses_is_an_upstream_error(
    http: aiohttp.ClientSession, host: str
) -> None:
    with pytest.raises(UpstreamError, match="failed"):
        async with _client(http, None).open("GET", host, "x", "manifests/latest"):
            pass


async def test_the_challenge_of_an_origin_redirecting_nowhere_is_none(
    origin: tuple[Origin, str], http: aiohttp.ClientSession
) -> None:
    assert await _client(http, origin[1]).challenge("origin") is None


async def test_a_retry_after_that_is_not_ascii_digits_is_ignored(
    origin: tuple[Origin, str], http: aiohttp.ClientSession
) -> None:
    async with _client(http, origin[1]).open("GET", "origin", "x", "busy") as answer:
        assert answer.status == 200
    assert origin[0].busy == 2


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("0", 0),
        ("12345", 12345),
        ("9" * 18, 10**18 - 1),
        (None, None),
        ("", None),
        ("\u00b2", None),  # isdigit() is true, int() raises
        ("\u0661\u0662", None),  # Arabic-Indic: int() reads 12
        ("+5", None),
        ("-5", None),
        (" 5", None),
        ("1_000", None),
        ("5, 5", None),
        ("1" * 19, None),
        ("7" * 5000, None),  # beyond int()'s 4300 digits
    ],
)
def test_content_length_is_ascii_digits_only(text: str | None, size: int | None) -> None:
    assert parse_content_length(text) == size
