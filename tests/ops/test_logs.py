"""``imgaccel node --log-json``: one JSON object per log line, one line per blob served, one
warning line (no traceback) per request that is not valid HTTP.

The node runs as the real command in a subprocess, so the flag, the logging set-up and the
serving path are the ones an operator's log collector sees.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from imgaccel.testing.images import Image
from imgaccel.testing.procs import terminate
from imgaccel.testing.registry import DistributionRegistry
from tests.conftest import needs_registry

from .conftest import get

pytestmark = [pytest.mark.system, needs_registry]

#: The start-up announcement stays plain text: launchers (bench, tests) parse it.
LISTENING = re.compile(r"^imgaccel node listening on (http://\S+)$")


class NodeProcess:
    def __init__(self, proc: asyncio.subprocess.Process, url: str, lines: list[str]) -> None:
        self.proc, self.url, self.lines = proc, url, lines

    async def stop(self) -> list[str]:
        """Stop the node; every stderr line after the announcement."""
        await terminate(self.proc)
        assert self.proc.stderr is not None
        rest = (await self.proc.stderr.read()).decode()
        return [*self.lines, *rest.splitlines()]


@pytest.fixture
async def json_node(origin: DistributionRegistry, tmp_path: Path) -> AsyncIterator[NodeProcess]:
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "imgaccel", "node", "--log-json", "--listen", "127.0.0.1:0"),
        *("--cache-dir", str(tmp_path / "cache"), "--upstream", f"{origin.address}={origin.url}"),
        stdin=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    before: list[str] = []
    while True:
        raw = await asyncio.wait_for(proc.stderr.readline(), 30)
        assert raw, "the node exited before listening:\n" + "\n".join(before)
        if match := LISTENING.match(raw.decode().strip()):
            break
        before.append(raw.decode().strip())
    node = NodeProcess(proc, match[1], before)
    yield node
    await terminate(proc)


def records(lines: list[str]) -> list[dict[str, Any]]:
    parsed = [json.loads(line) for line in lines if line]
    assert all(isinstance(record, dict) for record in parsed)
    return parsed


async def test_each_blob_served_is_one_json_line_with_source_and_timing(
    origin: DistributionRegistry, pushed: str, json_node: NodeProcess, small_image: Image
) -> None:
    layer = small_image.layers[0]
    url = f"{json_node.url}/v2/test/app/blobs/{layer.digest}?ns={origin.address}"
    assert (await get(url))[0] == 200  # from the origin
    assert (await get(url))[0] == 200  # from the cache

    logged = records(await json_node.stop())  # every line parses: json.loads raises otherwise

    served = [r for r in logged if r.get("digest") == layer.digest]
    assert [(r["source"], r["bytes"]) for r in served] == [
        ("origin", layer.size),
        ("cache", layer.size),
    ]
    for record in served:
        assert record["logger"] == "imgaccel.serve" and record["level"] == "info"
        assert isinstance(record["seconds"], float) and record["seconds"] >= 0
        assert record["ts"].endswith("Z")


#: Requests aiohttp's parser refuses before any handler runs.
MALFORMED = [
    b"GET /v2/ HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 9000 + b"\r\n\r\n",
    b"GET /v2/ HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
]


async def send_raw(url: str, request: bytes) -> bytes:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request)
    await writer.drain()
    answer = await reader.read()  # the server closes after a parse error
    writer.close()
    await writer.wait_closed()
    return answer


async def test_a_malformed_request_is_a_400_and_one_warning_line_without_a_traceback(
    json_node: NodeProcess,
) -> None:
    for request in MALFORMED:
        answer = await send_raw(json_node.url, request)
        assert answer.startswith(b"HTTP/1.0 400 "), answer[:100]
    assert (await get(f"{json_node.url}/v2/"))[0] == 200  # still serving

    logged = records(await json_node.stop())

    bad = [r for r in logged if r["logger"] == "aiohttp.server"]
    assert len(bad) == len(MALFORMED), bad
    for record in bad:
        assert record["level"] == "warning" and "exc" not in record, record
        assert record["msg"].startswith("bad HTTP request from 127.0.0.1 (400): "), record
    assert "Invalid header token" in bad[0]["msg"]
    assert all(r["level"] != "error" for r in logged)
