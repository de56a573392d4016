"""Pull reports carry the sizes of the blobs a pull fetched, where the node knows them: the length
of the blob it served, else the manifest's descriptor. The recorder is driven directly and through
its middleware on a loopback app."""

from __future__ import annotations

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
CONFIG, LAYER, BIG, ODD = ("sha256:" + c * 64 for c in "abcd")


def manifest(*descriptors: dict[str, Any]) -> bytes:
    config, *layers = descriptors
    return json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": layers}
    ).encode()


def served(recorder: PullRecorder, digest: str, size: int | None = None) -> None:
    recorder.blob_ended(recorder.blob_started(REG, REPO, digest), digest, served=True, size=size)


def test_the_descriptors_give_the_sizes_of_the_blobs_fetched() -> None:
    recorder = PullRecorder()
    recorder.manifest_served(
        REG,
        REPO,
        "v1",
        manifest(
            {"digest": CONFIG, "size": 10},
            {"digest": LAYER, "size": 20},
            {"digest": BIG, "size": 9_000_000_000},
        ),
    )
    served(recorder, CONFIG)
    served(recorder, BIG)

    [report] = recorder.take(older_than=0)
    assert report["digests"] == [CONFIG, BIG]
    assert report["sizes"] == {CONFIG: 10, BIG: 9_000_000_000}  # LAYER was not fetched


def test_a_served_length_fills_in_and_overrides_the_descriptor() -> None:
    recorder = PullRecorder()
    recorder.manifest_served(
        REG, REPO, "v1", manifest({"digest": CONFIG}, {"digest": LAYER, "size": 20})
    )
    served(recorder, CONFIG, size=11)  # the descriptor had no size
    served(recorder, LAYER, size=21)
    recorder.manifest_served(  # the same pull asks again: the served lengths stay
        REG, REPO, "v1", manifest({"digest": CONFIG, "size": 1}, {"digest": LAYER, "size": 2})
    )

    [report] = recorder.take(older_than=0)
    assert report["sizes"] == {CONFIG: 11, LAYER: 21}


def test_descriptor_sizes_that_are_not_sizes_are_not_reported() -> None:
    recorder = PullRecorder()
    digests = ["sha256:" + f"{n:x}" * 64 for n in range(1, 6)]
    recorder.manifest_served(
        REG,
        REPO,
        "v1",
        manifest(
            {"digest": digests[0], "size": -1},
            {"digest": digests[1], "size": 2**63},
            {"digest": digests[2], "size": True},
            {"digest": digests[3], "size": 1.5},
            {"digest": digests[4], "size": 5},
        ),
    )
    for digest in digests:
        served(recorder, digest)

    [report] = recorder.take(older_than=0)
    assert report["sizes"] == {digests[4]: 5}


class Mirror:
    """A ``/v2/`` app with the recorder's middleware, serving one manifest and blobs."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.recorder = PullRecorder()
        app = web.Application(middlewares=[record_pulls])
        app[RECORDER] = self.recorder
        app[NODE] = cast(Any, types.SimpleNamespace(settings=Settings(default_registry=REG)))
        app.router.add_get("/v2/{name:[^?#]+}/manifests/{reference}", self.manifest)
        app.router.add_get("/v2/{name:[^?#]+}/blobs/{digest}", self.blob)
        self.app = app

    async def manifest(self, request: web.Request) -> web.Response:
        return web.Response(body=self.body, content_type=OCI_MANIFEST)

    async def blob(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Range"):
            return web.Response(status=206, body=b"la")
        response = web.StreamResponse()
        response.content_length = 5
        await response.prepare(request)
        await response.write(b"layer")
        return response


@pytest.fixture
async def served_through() -> AsyncIterator[Any]:
    servers: list[TestServer] = []

    async def start(body: bytes) -> tuple[Mirror, str]:
        mirror = Mirror(body)
        server = TestServer(mirror.app, host="127.0.0.1", port=0)
        await server.start_server()
        servers.append(server)
        return mirror, str(server.make_url(f"/v2/{REPO}"))

    yield start
    for server in servers:
        await server.close()


async def test_the_length_of_a_blob_served_is_reported(served_through: Any) -> None:
    mirror, base = await served_through(
        manifest({"digest": CONFIG, "size": 3}, {"digest": LAYER, "size": 4})
    )
    async with aiohttp.ClientSession() as http:
        for path in ("manifests/v1", f"blobs/{CONFIG}"):
            async with http.get(f"{base}/{path}") as response:
                assert response.status == 200
                await response.read()
        async with http.get(f"{base}/blobs/{LAYER}", headers={"Range": "bytes=0-1"}) as response:
            assert response.status == 206  # a part: neither fetched nor a size

    [report] = mirror.recorder.take(older_than=0)
    assert report["digests"] == [CONFIG]
    assert report["sizes"] == {CONFIG: 5}  # what was served, not what the manifest said


async def test_a_manifest_whose_sizes_are_not_numbers_is_served_and_not_a_pull(
    served_through: Any,
) -> None:
    mirror, base = await served_through(
        manifest({"digest": CONFIG, "size": "ten"}, {"digest": ODD, "size": 4})
    )
    async with aiohttp.ClientSession() as http, http.get(f"{base}/manifests/v1") as response:
        assert response.status == 200
    assert mirror.recorder.take(older_than=0) == []
