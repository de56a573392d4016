"""Pull reports: a pull keeps the layers it fetched however long they take to stream.

The recorder is driven directly (with a fake clock) and through its middleware on a loopback
app whose blob handler holds its response until the test lets it go: a multi-GB layer.
"""

from __future__ import annotations

import asyncio
import json
import types
from collections.abc import AsyncIterator
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from imgaccel.oci.media import OCI_MANIFEST
from imgaccel.proxy.pulls import RECORDER, PullRecorder, record_pulls
from imgaccel.proxy.state import NODE
from imgaccel.settings import Settings

REG, REPO = "registry.test", "team/app"
CONFIG, SMALL, BIG = ("sha256:" + c * 64 for c in "abc")
MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"digest": CONFIG, "size": 10},
        "layers": [{"digest": SMALL, "size": 20}, {"digest": BIG, "size": 5_000_000_000}],
    }
).encode()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def digests(reports: list[dict[str, Any]]) -> list[list[str]]:
    return [report["digests"] for report in reports]


def test_a_blob_in_flight_holds_its_pull_until_it_ends() -> None:
    clock = Clock()
    recorder = PullRecorder(clock)
    recorder.manifest_served(REG, REPO, "v1", MANIFEST)
    big = recorder.blob_started(REG, REPO, BIG)
    clock.now += 600  # ten minutes of streaming, many report intervals

    assert recorder.take(older_than=5) == []
    recorder.blob_ended(big, BIG, served=True)
    assert recorder.take(older_than=5) == []  # just ended: the pull may go on
    clock.now += 5
    assert digests(recorder.take(older_than=5)) == [[BIG]]


def test_a_stuck_request_holds_its_pull_an_hour_at_most() -> None:
    clock = Clock()
    recorder = PullRecorder(clock)
    recorder.manifest_served(REG, REPO, "v1", MANIFEST)
    recorder.blob_ended(recorder.blob_started(REG, REPO, SMALL), SMALL, served=True)
    recorder.blob_started(REG, REPO, BIG)  # never ends

    clock.now += 3599
    assert recorder.take(older_than=5) == []
    clock.now += 1
    assert digests(recorder.take(older_than=5)) == [[SMALL]]


def test_a_failed_blob_request_is_not_fetched() -> None:
    recorder = PullRecorder()
    recorder.manifest_served(REG, REPO, "v1", MANIFEST)
    recorder.blob_ended(recorder.blob_started(REG, REPO, BIG), BIG, served=False)
    assert recorder.take(older_than=0) == []


class Mirror:
    """A ``/v2/`` app with the recorder's middleware; blob GETs of :data:`BIG` wait for
    :attr:`release`."""

    def __init__(self) -> None:
        self.recorder = PullRecorder()
        self.release = asyncio.Event()
        self.streaming = asyncio.Event()
        app = web.Application(middlewares=[record_pulls])
        app[RECORDER] = self.recorder
        app[NODE] = cast(Any, types.SimpleNamespace(settings=Settings(default_registry=REG)))
        app.router.add_get("/v2/{name:[^?#]+}/manifests/{reference}", self.manifest)
        app.router.add_get("/v2/{name:[^?#]+}/blobs/{digest}", self.blob)
        self.app = app

    async def manifest(self, request: web.Request) -> web.Response:
        return web.Response(body=MANIFEST, content_type=OCI_MANIFEST)

    async def blob(self, request: web.Request) -> web.Response:
        if request.match_info["digest"] == BIG:
            self.streaming.set()
            await self.release.wait()
        return web.Response(body=b"layer")


@pytest.fixture
async def mirror() -> AsyncIterator[tuple[Mirror, str]]:
    mirror = Mirror()
    async with TestServer(mirror.app, host="127.0.0.1", port=0) as server:
        yield mirror, str(server.make_url(f"/v2/{REPO}"))


async def test_a_layer_still_streaming_when_reports_are_taken_is_reported(
    mirror: tuple[Mirror, str],
) -> None:
    node, base = mirror
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/manifests/v1") as response:
            assert response.status == 200
        async with http.get(f"{base}/blobs/{SMALL}") as response:
            assert response.status == 200
        big = asyncio.create_task(http.get(f"{base}/blobs/{BIG}"))
        await node.streaming.wait()

        assert node.recorder.take(older_than=0) == []  # the report interval, mid-layer
        node.release.set()
        async with await big as response:
            assert response.status == 200

    assert digests(node.recorder.take(older_than=0)) == [sorted([SMALL, BIG])]


async def test_a_repeated_manifest_get_adds_to_the_pull_it_repeats(
    mirror: tuple[Mirror, str],
) -> None:
    node, base = mirror
    async with aiohttp.ClientSession() as http:
        # containerd retrying, or a second pod: the same manifest, then the blobs it still needs
        for path in ("manifests/v1", f"blobs/{CONFIG}", "manifests/v1", f"blobs/{SMALL}"):
            async with http.get(f"{base}/{path}") as response:
                assert response.status == 200

    assert digests(node.recorder.take(older_than=0)) == [sorted([CONFIG, SMALL])]
