"""The node API client (``imgaccel/prewarm/node.py``) and ``imgaccel cache`` over it, pointed at
something that is not a node: a clear one-line error and a non-zero exit, never a traceback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from click.testing import CliRunner, Result

from imgaccel.cli.cache import cache


async def run_cache(*args: str) -> Result:
    # In a thread: the CLI runs its own event loop, and the servers run in this one.
    return await asyncio.to_thread(CliRunner().invoke, cache, list(args), catch_exceptions=False)


@pytest.fixture
async def not_a_node() -> AsyncIterator[str]:
    """A web server that answers every path with 200 and a body that is not the admin API's:
    text at ``/text/...``, a JSON object without the expected keys at ``/json/...``."""

    async def answer(request: web.Request) -> web.Response:
        if request.path.startswith("/json/"):
            return web.json_response({"hello": "world"})
        return web.Response(text="<html>hello</html>", content_type="text/html")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    yield str(server.make_url("")).rstrip("/")
    await server.close()


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ("notaurl", "'notaurl' is not a node URL"),
        ("{server}/text", "not an imgaccel node's answer"),
        ("{server}/json", "the answer has no 'blobs'"),
    ],
)
async def test_cache_ls_against_something_else_is_a_one_line_error(
    not_a_node: str, node: str, message: str
) -> None:
    result = await run_cache("ls", "--node", node.format(server=not_a_node))
    assert result.exit_code == 1
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("args", [("gc",), ("pin", "sha256:" + "ab" * 32)])
async def test_changes_against_something_else_are_one_line_errors(
    not_a_node: str, args: Any
) -> None:
    for base in ("text", "json"):
        result = await run_cache(*args, "--node", f"{not_a_node}/{base}")
        assert result.exit_code == 1, result.output
        assert result.output.startswith("Error: ")
