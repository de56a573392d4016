"""``GET /v2/<name>/tags/list`` through the node: the origin's list, its pages and its refusals,
against the real distribution registry (and skopeo as the client)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from imgaccel.errors import PaginationInvalid, TagInvalid
from imgaccel.proxy.tags import MAX_PAGE, node_link, pagination
from imgaccel.testing.images import Image, push
from imgaccel.testing.procs import run
from imgaccel.testing.registry import DistributionRegistry
from imgaccel.testing.tokenserver import TokenServer
from imgaccel.upstream.auth import basic_header
from tests.conftest import NodeServer, needs_registry, needs_skopeo
from tests.proxy.conftest import ALICE

TAGS = ["v1", "v2", "v3"]


@pytest.fixture
async def tagged(origin: DistributionRegistry, small_image: Image) -> list[str]:
    """``small_image`` pushed to ``origin`` as test/app with each of ``TAGS``."""
    for tag in TAGS:
        await push(small_image, f"{origin.address}/test/app:{tag}")
    origin.requests.clear()
    return TAGS


async def get_json(url: str, **kwargs: Any) -> tuple[int, Any, Any]:
    """Status, JSON body and headers of a GET."""
    async with aiohttp.ClientSession() as http, http.get(url, **kwargs) as response:
        return response.status, await response.json(content_type=None), response.headers


@needs_registry
@pytest.mark.system
async def test_the_list_is_the_origins_and_head_works(
    origin: DistributionRegistry, tagged: list[str], node_factory: Callable[..., Any]
) -> None:
    node: NodeServer = await node_factory(origin)
    url = f"{node.url}/v2/test/app/tags/list"

    status, body, headers = await get_json(url, params={"ns": origin.address})
    _, direct, _ = await get_json(f"{origin.url}/v2/test/app/tags/list")

    assert status == 200
    assert body == direct == {"name": "test/app", "tags": tagged}
    assert headers["Content-Type"].startswith("application/json")
    async with aiohttp.ClientSession() as http:
        async with http.head(url, params={"ns": origin.address}) as response:
            assert response.status == 200
            assert await response.read() == b""
        # Not cached: a tag pushed since is in the next answer.
        await push_tag(origin, "v4")
        async with http.get(url, params={"ns": origin.address}) as response:
            assert sorted((await response.json())["tags"]) == [*tagged, "v4"]


async def push_tag(origin: DistributionRegistry, tag: str) -> None:
    await run(
        "skopeo",
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        f"docker://{origin.address}/test/app:v1",
        f"docker://{origin.address}/test/app:{tag}",
    )


@needs_registry
@pytest.mark.system
async def test_n_and_last_reach_the_origin(
    origin: DistributionRegistry, tagged: list[str], node_factory: Callable[..., Any]
) -> None:
    node: NodeServer = await node_factory(origin)
    params = {"n": "2", "last": "v1"}

    status, body, _ = await get_json(
        f"{node.url}/v2/test/app/tags/list", params={"ns": origin.address, **params}
    )
    await origin.settle()
    asked = [r.uri for r in origin.requests if "/tags/list" in r.uri]
    _, direct, _ = await get_json(f"{origin.url}/v2/test/app/tags/list", params=params)

    assert status == 200 and body == direct
    assert asked == ["/v2/test/app/tags/list?n=2&last=v1"]


@pytest.fixture
async def paging_origin() -> AsyncIterator[TestServer]:
    """An origin that pages its tag list as distribution 3 does (the distribution 2.8 the tests
    run ignores ``n`` and ``last``): ``TAGS`` after ``last``, ``n`` at a time, with a ``Link``
    to the next page."""

    async def tags(request: web.Request) -> web.Response:
        last, n = request.query.get("last", ""), int(request.query.get("n", "100"))
        after = [tag for tag in TAGS if tag > last]
        headers = {}
        if len(after) > n:
            headers["Link"] = f'</v2/test/app/tags/list?last={after[n - 1]}&n={n}>; rel="next"'
        return web.json_response({"name": "test/app", "tags": after[:n]}, headers=headers)

    app = web.Application()
    app.router.add_get("/v2/test/app/tags/list", tags)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


@pytest.mark.system
async def test_pages_link_back_to_the_node_with_the_registry(
    paging_origin: TestServer, node_factory: Callable[..., Any]
) -> None:
    address = f"127.0.0.1:{paging_origin.port}"
    url = f"http://{address}"
    node: NodeServer = await node_factory(upstreams={address: {"url": url}})

    status, first, headers = await get_json(
        f"{node.url}/v2/test/app/tags/list", params={"ns": address, "n": "2"}
    )

    assert status == 200
    assert first["tags"] == TAGS[:2]
    assert headers["Link"] == f'</v2/test/app/tags/list?last=v2&n=2&ns={address}>; rel="next"'
    path = headers["Link"][1 : headers["Link"].index(">")]
    status, rest, headers = await get_json(f"{node.url}{path}")
    assert status == 200
    assert rest["tags"] == TAGS[2:]
    assert "Link" not in headers


@needs_registry
@pytest.mark.system
@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"n": "-1"}, "PAGINATION_NUMBER_INVALID"),
        ({"n": "two"}, "PAGINATION_NUMBER_INVALID"),
        ({"n": "9" * 5000}, "PAGINATION_NUMBER_INVALID"),
        ({"n": str(MAX_PAGE + 1)}, "PAGINATION_NUMBER_INVALID"),
        ({"last": "a/b"}, "MANIFEST_INVALID"),
        ({"last": "-x"}, "MANIFEST_INVALID"),
        ({"last": "x" * 129}, "MANIFEST_INVALID"),
    ],
)
async def test_bad_pagination_is_a_400_and_never_reaches_the_origin(
    origin: DistributionRegistry,
    node_factory: Callable[..., Any],
    params: dict[str, str],
    code: str,
) -> None:
    node: NodeServer = await node_factory(origin)

    status, body, _ = await get_json(
        f"{node.url}/v2/test/app/tags/list", params={"ns": origin.address, **params}
    )

    assert status == 400
    assert body["errors"][0]["code"] == code
    await origin.settle()
    assert origin.requests == []


@needs_registry
@pytest.mark.system
async def test_a_private_repository_needs_the_clients_credentials(
    token_origin: DistributionRegistry, tokens: TokenServer, node_factory: Callable[..., Any]
) -> None:
    node: NodeServer = await node_factory(token_origin)
    url = f"{node.url}/v2/test/private/tags/list"
    params = {"ns": token_origin.address}

    status, body, headers = await get_json(url, params=params)
    assert status == 401
    assert body["errors"][0]["code"] == "UNAUTHORIZED"
    assert f'realm="{tokens.realm}"' in headers["WWW-Authenticate"]

    auth = {"Authorization": basic_header(*ALICE)}
    status, body, _ = await get_json(url, params=params, headers=auth)
    assert status == 200
    assert body == {"name": "test/private", "tags": ["v1"]}


@needs_registry
@pytest.mark.system
async def test_an_unknown_repository_is_name_unknown_and_a_stopped_origin_unavailable(
    origin: DistributionRegistry, tagged: list[str], node_factory: Callable[..., Any]
) -> None:
    node: NodeServer = await node_factory(origin, upstream_client={"retries": 0})
    params = {"ns": origin.address}

    status, body, _ = await get_json(f"{node.url}/v2/test/nothing/tags/list", params=params)
    assert (status, body["errors"][0]["code"]) == (404, "NAME_UNKNOWN")

    await origin.stop()
    status, body, _ = await get_json(f"{node.url}/v2/test/app/tags/list", params=params)
    assert (status, body["errors"][0]["code"]) == (503, "UNAVAILABLE")


@needs_registry
@pytest.mark.system
async def test_a_registry_outside_registries_is_refused_without_asking_it(
    origin: DistributionRegistry, tagged: list[str], node_factory: Callable[..., Any]
) -> None:
    node: NodeServer = await node_factory(
        origin, registries=["nvcr.io"], default_registry=origin.address
    )

    for params in ({"ns": origin.address}, {}, {"ns": origin.address, "n": "bad"}):
        status, body, _ = await get_json(f"{node.url}/v2/test/app/tags/list", params=params)
        assert (status, body["errors"][0]["code"]) == (403, "DENIED"), params

    await origin.settle()
    assert origin.requests == []


@needs_registry
@needs_skopeo
@pytest.mark.system
async def test_skopeo_lists_tags_through_the_node(
    origin: DistributionRegistry, tagged: list[str], node_factory: Callable[..., Any]
) -> None:
    node: NodeServer = await node_factory(origin, default_registry=origin.address)

    listed = await run(
        "skopeo", "list-tags", "--tls-verify=false", f"docker://{node.address}/test/app"
    )

    assert json.loads(listed.stdout)["Tags"] == tagged
    await origin.settle()
    assert any("/tags/list" in r.uri for r in origin.requests)


def test_pagination_passes_valid_values_on_and_drops_empty_ones() -> None:
    assert pagination({"n": "010", "last": "v1.2_x-y", "ns": "x.io"}) == {
        "n": "10",
        "last": "v1.2_x-y",
    }
    assert pagination({"n": "", "last": ""}) == {}
    with pytest.raises(PaginationInvalid):
        pagination({"n": "１"})  # a digit, but not an ASCII one
    with pytest.raises(TagInvalid):
        pagination({"last": "a" * 200})


@pytest.mark.parametrize(
    ("link", "ns", "expected"),
    [
        (
            '</v2/a/b/tags/list?n=2&last=v2>; rel="next"',
            "r.example:5000",
            '</v2/a/b/tags/list?n=2&last=v2&ns=r.example:5000>; rel="next"',
        ),
        (
            '<https://r.example/v2/a/tags/list?last=v2&n=2>; rel="next"',
            None,
            '</v2/a/tags/list?last=v2&n=2>; rel="next"',
        ),
        ('<https://elsewhere.example/steal>; rel="next"', None, None),
        ("not a link", None, None),
        (None, "r.example", None),
    ],
)
def test_the_origins_link_becomes_a_path_on_the_node(
    link: str | None, ns: str | None, expected: str | None
) -> None:
    assert node_link(link, ns) == expected
