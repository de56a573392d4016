"""Compatibility with real clients and real image formats: a pull through the node is the pull
the origin would give, and containerd never quietly falls back to the origin for it.

The origin is the CNCF distribution registry; images are pushed to it with its own HTTP API (or
skopeo), in the shapes real builders make: buildkit's index with attestation manifests
(``unknown/unknown``), a Docker manifest list, zstd and uncompressed layers, a layer repeated,
an OCI 1.1 artifact with the empty config and a ``subject``, odd tags and nested names, legacy
signed schema 1 manifests, sha512 digests. Where real origins differ from it, it is put behind
a front that does what they do (gzip for a client that accepts it). "Went through the node" is
proven from the origin's request log: nothing there carries containerd's User-Agent.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import io
import json
import logging
import tarfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from imgaccel.cache.snapshot import export_bundle, import_bundle
from imgaccel.oci.digest import Digest
from imgaccel.oci.manifest import manifest_digest
from imgaccel.oci.media import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    DOCKER_V1_SIGNED,
    OCI_INDEX,
    OCI_MANIFEST,
)
from imgaccel.proxy.app import make_app
from imgaccel.proxy.state import NODE
from imgaccel.serve import listening
from imgaccel.settings import load_settings
from imgaccel.testing.containerd import Containerd
from imgaccel.testing.images import build_image
from imgaccel.testing.procs import run
from imgaccel.testing.registry import DistributionRegistry
from tests.conftest import (
    NodeServer,
    needs_containerd,
    needs_registry,
    needs_skopeo,
    until,
    write_hosts,
)

pytestmark = [pytest.mark.system, needs_registry, needs_containerd, needs_skopeo]

#: What containerd 1.6 sends when it resolves a reference (one header).
CONTAINERD_ACCEPT = f"{DOCKER_MANIFEST}, {DOCKER_LIST}, {OCI_MANIFEST}, {OCI_INDEX}, */*"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
EMPTY_JSON = "application/vnd.oci.empty.v1+json"


# -- building images with the registry's own API -------------------------------------------------


def layer_tar(name: str, content: bytes) -> tuple[bytes, str]:
    """An uncompressed layer with one file, and its diff_id."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mode = len(content), 0o644
        tar.addfile(info, io.BytesIO(content))
    data = raw.getvalue()
    return data, f"sha256:{hashlib.sha256(data).hexdigest()}"


def compress(data: bytes, media_type: str) -> bytes:
    if media_type.endswith("+gzip") or media_type == DOCKER_GZIP:
        return gzip.compress(data, mtime=0)
    if media_type.endswith("+zstd"):
        import zstandard

        return bytes(zstandard.ZstdCompressor().compress(data))
    return data


@dataclass
class Pusher:
    """Pushes blobs and manifests to one repository of a distribution registry."""

    http: aiohttp.ClientSession
    registry: DistributionRegistry
    repo: str

    async def blob(self, data: bytes) -> dict[str, Any]:
        digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
        async with self.http.post(f"{self.registry.url}/v2/{self.repo}/blobs/uploads/") as r:
            assert r.status == 202, await r.text()
            location = r.headers["Location"]
        url = location if "://" in location else f"{self.registry.url}{location}"
        async with self.http.put(url, params={"digest": digest}, data=data) as r:
            assert r.status == 201, await r.text()
        return {"digest": digest, "size": len(data)}

    async def manifest(self, reference: str, document: dict[str, Any]) -> dict[str, Any]:
        body = json.dumps(document).encode()
        media_type = document["mediaType"]
        url = f"{self.registry.url}/v2/{self.repo}/manifests/{reference}"
        async with self.http.put(url, data=body, headers={"Content-Type": media_type}) as r:
            assert r.status == 201, await r.text()
            return {
                "mediaType": media_type,
                "digest": r.headers["Docker-Content-Digest"],
                "size": len(body),
            }

    async def image(
        self, arch: str, layer_types: list[str], *, repeat: bool = False, docker: bool = False
    ) -> dict[str, Any]:
        """An image manifest with one small layer per entry of ``layer_types``."""
        layers, diff_ids = [], []
        for i, media_type in enumerate(layer_types):
            tar, diff_id = layer_tar(f"{self.repo}-{arch}-{i}", f"{arch} {i}".encode())
            pushed = await self.blob(compress(tar, media_type))
            layers.append({"mediaType": media_type, **pushed})
            diff_ids.append(diff_id)
        if repeat:
            layers.append(layers[0])
            diff_ids.append(diff_ids[0])
        config = {
            "architecture": arch,
            "os": "linux",
            "config": {"Cmd": ["/bin/true"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
        config_blob = await self.blob(json.dumps(config).encode())
        return {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST if docker else OCI_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG if docker else OCI_CONFIG, **config_blob},
            "layers": layers,
        }

    async def attestation(self, subject: dict[str, Any]) -> dict[str, Any]:
        """An attestation manifest as buildkit makes them, for the index entry ``subject``."""
        statement = json.dumps({"_type": "https://in-toto.io/Statement/v0.1"}).encode()
        layer = await self.blob(statement)
        config = {
            "architecture": "unknown",
            "os": "unknown",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]},
        }
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, **await self.blob(json.dumps(config).encode())},
            "layers": [{"mediaType": "application/vnd.in-toto+json", **layer}],
        }
        pushed = await self.manifest(f"att-{subject['digest'][7:19]}", manifest)
        return {
            **pushed,
            "platform": {"architecture": "unknown", "os": "unknown"},
            "annotations": {
                "vnd.docker.reference.digest": subject["digest"],
                "vnd.docker.reference.type": "attestation-manifest",
            },
        }


async def push_buildkit_index(pusher: Pusher, tag: str) -> dict[str, Any]:
    """linux/amd64 and linux/arm64 (gzip, zstd and plain tar layers, one repeated) and an
    attestation manifest for each, in one OCI index, as ``docker buildx`` pushes them."""
    entries = []
    for arch in ("amd64", "arm64"):
        image = await pusher.image(arch, [OCI_GZIP, OCI_ZSTD, OCI_TAR], repeat=True)
        pushed = await pusher.manifest(f"{tag}-{arch}", image)
        entries.append({**pushed, "platform": {"architecture": arch, "os": "linux"}})
    entries += [await pusher.attestation(entry) for entry in list(entries)]
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    return await pusher.manifest(tag, index)


# -- asking the node and the origin the same question ----------------------------------------------

Answer = tuple[object, ...]


async def answer(
    http: aiohttp.ClientSession, method: str, url: str, headers: dict[str, str]
) -> Answer:
    """What a client can tell about a response: status, the headers a registry client reads,
    the body's hash; for an error, the status and the OCI error code."""
    async with http.request(method, url, headers=headers) as r:
        body = await r.read()
        if r.status >= 400:
            return r.status, json.loads(body)["errors"][0]["code"] if body else None
        return (
            r.status,
            r.headers.get("Content-Type"),
            r.headers.get("Docker-Content-Digest"),
            r.headers.get("Content-Length"),
            r.headers.get("Content-Range"),
            hashlib.sha256(body).hexdigest() if method == "GET" else None,
        )


async def assert_same_answers(
    http: aiohttp.ClientSession,
    node: NodeServer,
    origin: DistributionRegistry,
    path: str,
    headers: dict[str, str],
) -> Answer:
    """HEAD and GET of ``/v2/<path>`` answered alike by the node (uncached, then cached) and by
    the origin."""
    at_origin = {
        m: await answer(http, m, f"{origin.url}/v2/{path}", headers) for m in ("HEAD", "GET")
    }
    for attempt in ("first", "again"):
        for method in ("GET", "HEAD") if attempt == "first" else ("HEAD", "GET"):
            url = f"{node.url}/v2/{path}?ns={origin.address}"
            got = await answer(http, method, url, headers)
            assert got == at_origin[method], f"{method} {path} {headers} ({attempt})"
    return at_origin["GET"]


def containerd_requests(origin: DistributionRegistry) -> list[str]:
    """What containerd itself asked the origin: a fallback around the mirror."""
    return [f"{r.method} {r.uri}" for r in origin.requests if "containerd" in r.user_agent]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


# -- the image shapes real builders push ----------------------------------------------------------


async def test_buildkit_indexes_and_docker_lists_are_pulled_through_the_node_on_every_path(
    origin: DistributionRegistry,
    node: NodeServer,
    containerd: Containerd,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    index = await push_buildkit_index(Pusher(http, origin, "team/app-x/build_kit.v2"), "v1.0_rc-1")
    docker = Pusher(http, origin, "team/docker")
    entries = []
    for arch in ("amd64", "arm64"):
        image = await docker.image(arch, [DOCKER_GZIP], docker=True)
        pushed = await docker.manifest(f"v-{arch}", image)
        entries.append({**pushed, "platform": {"architecture": arch, "os": "linux"}})
    await docker.manifest(
        "T" * 128, {"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": entries}
    )
    hosts = write_hosts(tmp_path / "hosts", origin.address, node.url)
    buildkit = f"{origin.address}/team/app-x/build_kit.v2"

    await containerd.pull(f"{buildkit}:v1.0_rc-1", hosts_dir=hosts)
    await containerd.pull(f"{buildkit}@{index['digest']}", hosts_dir=hosts, platform="linux/arm64")
    await containerd.ctr(
        "content", "fetch", "--all-platforms", "--hosts-dir", str(hosts), f"{buildkit}:v1.0_rc-1"
    )
    await containerd.pull(
        f"{origin.address}/team/docker:{'T' * 128}", hosts_dir=hosts, platform="linux/arm64"
    )
    await containerd.ctr(
        "content",
        "fetch",
        "--all-platforms",
        "--hosts-dir",
        str(hosts),
        f"{origin.address}/team/docker:{'T' * 128}",
    )

    await origin.settle()
    assert containerd_requests(origin) == []
    listed = (await containerd.ctr("images", "ls", "-q")).stdout.decode().split()
    assert f"{buildkit}:v1.0_rc-1" in listed


async def test_headers_and_bytes_match_the_origin_for_every_manifest_and_blob(
    origin: DistributionRegistry, node: NodeServer, http: aiohttp.ClientSession
) -> None:
    pusher = Pusher(http, origin, "team/app-x/build_kit.v2")
    index = await push_buildkit_index(pusher, "v1")
    accept = {"Accept": CONTAINERD_ACCEPT}
    repo = pusher.repo
    await assert_same_answers(http, node, origin, f"{repo}/manifests/v1", accept)
    async with http.get(f"{origin.url}/v2/{repo}/manifests/v1", headers=accept) as r:
        children = [entry["digest"] for entry in (await r.json())["manifests"]]
    blobs = set()
    for digest in [index["digest"], *children]:
        await assert_same_answers(http, node, origin, f"{repo}/manifests/{digest}", accept)
        async with http.get(f"{origin.url}/v2/{repo}/manifests/{digest}", headers=accept) as r:
            document = await r.json()
        blobs |= {d["digest"] for d in [document.get("config"), *document.get("layers", [])] if d}
    for digest in sorted(blobs):
        # containerd resumes a blob with "bytes=N-"; the first request may be a resume too.
        for headers in ({"Range": "bytes=7-"}, {}, {"Range": "bytes=0-0"}):
            await assert_same_answers(http, node, origin, f"{repo}/blobs/{digest}", headers)


async def test_an_artifact_with_the_empty_config_and_a_subject_is_fetched_through_the_node(
    origin: DistributionRegistry,
    node: NodeServer,
    containerd: Containerd,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    pusher = Pusher(http, origin, "team/app")
    subject = await pusher.manifest("v1", await pusher.image("amd64", [OCI_GZIP]))
    artifact = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.signature",
        "config": {"mediaType": EMPTY_JSON, **await pusher.blob(b"{}")},
        "layers": [{"mediaType": "application/vnd.example.sig.v1", **await pusher.blob(b"sig")}],
        "subject": {
            "mediaType": OCI_MANIFEST,
            "digest": subject["digest"],
            "size": subject["size"],
        },
    }
    # cosign's tag scheme: the referrers API is not a pull path (containerd does not ask it).
    tag = subject["digest"].replace(":", "-") + ".sig"
    pushed = await pusher.manifest(tag, artifact)
    hosts = write_hosts(tmp_path / "hosts", origin.address, node.url)

    await containerd.ctr(
        "content", "fetch", "--hosts-dir", str(hosts), f"{origin.address}/team/app:{tag}"
    )

    await origin.settle()
    assert containerd_requests(origin) == []
    accept = {"Accept": CONTAINERD_ACCEPT}
    got = await assert_same_answers(http, node, origin, f"team/app/manifests/{tag}", accept)
    assert got[2] == pushed["digest"]


# -- origins that differ from the distribution registry --------------------------------------------


def gzip_front(origin: DistributionRegistry) -> TestServer:
    """The origin behind a front that gzips every GET body whose client accepts gzip, as a
    CDN or an nginx with ``gzip_types *`` does (registry.access.redhat.com does it, and the
    Workers runtime of Cloudflare's serverless registry). Go's HTTP client, and so containerd,
    asks for gzip and decodes it; the digest is of the bytes stored, not the ones sent."""

    async def forward(request: web.Request) -> web.Response:
        skip = {"host", "accept-encoding", "content-length"}
        headers = {k: v for k, v in request.headers.items() if k.lower() not in skip}
        async with (
            aiohttp.ClientSession(auto_decompress=False) as http,
            http.request(
                request.method,
                f"{origin.url}{request.path_qs}",
                headers=headers,
                allow_redirects=False,
            ) as upstream,
        ):
            body = await upstream.read()
            sent = {
                k: v
                for k, v in upstream.headers.items()
                if k.lower() not in ("content-length", "transfer-encoding", "date")
            }
        if request.method == "HEAD":
            sent["Content-Length"] = upstream.headers.get("Content-Length", "0")
            return web.Response(status=upstream.status, headers=sent)
        encodings = request.headers.get("Accept-Encoding", "")
        if upstream.status == 200 and "gzip" in encodings and "Range" not in request.headers:
            body, sent["Content-Encoding"] = gzip.compress(body), "gzip"
        return web.Response(status=upstream.status, body=body, headers=sent)

    app = web.Application()
    app.router.add_route("*", "/{path:.*}", forward)
    return TestServer(app, host="127.0.0.1", port=0)


async def test_an_origin_that_gzips_for_clients_asking_for_it_is_pulled_through_the_node(
    origin: DistributionRegistry,
    node_factory: Any,
    containerd: Containerd,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    pusher = Pusher(http, origin, "team/app")
    await pusher.manifest("v1", await pusher.image("amd64", [OCI_GZIP]))
    front = gzip_front(origin)
    await front.start_server()
    try:
        address = f"127.0.0.1:{front.port}"
        url = f"http://{address}/v2/team/app/manifests/v1"
        async with http.get(url, headers={"Accept": OCI_MANIFEST}) as r:  # aiohttp asks gzip
            assert r.headers["Content-Encoding"] == "gzip"
        node: NodeServer = await node_factory(upstreams={address: {"url": f"http://{address}"}})
        hosts = write_hosts(tmp_path / "hosts", address, node.url)

        await containerd.pull(f"{address}/team/app:v1", hosts_dir=hosts)

        await origin.settle()
        assert containerd_requests(origin) == []
        accept = {"Accept": CONTAINERD_ACCEPT, "Accept-Encoding": "identity"}
        async with http.get(
            f"{node.url}/v2/team/app/manifests/v1?ns={address}", headers=accept
        ) as r:
            assert r.headers.get("Content-Encoding") is None
            assert json.loads(await r.read())["mediaType"] == OCI_MANIFEST
    finally:
        await front.close()


@dataclass
class Schema1Registry(DistributionRegistry):
    """A distribution registry that accepts Docker's legacy signed schema 1 manifests."""

    def config_text(self) -> str:
        config = json.loads(super().config_text())
        config["compatibility"] = {"schema1": {"enabled": True}}
        return json.dumps(config)


@pytest.fixture
async def schema1_origin(tmp_path: Path) -> AsyncIterator[DistributionRegistry]:
    """A registry holding team/legacy:v1 as a signed schema 1 manifest (skopeo converts and
    signs it; schema 1 needs the config's history)."""
    layout = tmp_path / "layout"
    image = build_image(layout, [3000], seed=11)
    config = json.loads(image.blob_path(image.config.digest).read_bytes())
    config["history"] = [{"created": "2020-01-01T00:00:00Z", "created_by": "ADD layer"}]
    config_bytes = json.dumps(config).encode()
    config_digest = hashlib.sha256(config_bytes).hexdigest()
    (layout / "blobs" / "sha256" / config_digest).write_bytes(config_bytes)
    manifest = json.loads(image.blob_path(image.manifest.digest).read_bytes())
    manifest["config"].update(digest=f"sha256:{config_digest}", size=len(config_bytes))
    manifest_bytes = json.dumps(manifest).encode()
    manifest_digest = hashlib.sha256(manifest_bytes).hexdigest()
    (layout / "blobs" / "sha256" / manifest_digest).write_bytes(manifest_bytes)
    entry = {
        "mediaType": OCI_MANIFEST,
        "digest": f"sha256:{manifest_digest}",
        "size": len(manifest_bytes),
    }
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))
    async with Schema1Registry(tmp_path / "schema1-origin") as registry:
        await run(
            "skopeo",
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            "--format",
            "v2s1",
            f"oci:{layout}",
            f"docker://{registry.address}/team/legacy:v1",
        )
        registry.requests.clear()
        yield registry


async def test_a_schema1_image_is_named_by_its_payload_digest_and_pulled_by_it_through_the_node(
    schema1_origin: DistributionRegistry,
    node_factory: Any,
    containerd: Containerd,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    origin = schema1_origin
    node: NodeServer = await node_factory(origin)
    accept = {"Accept": CONTAINERD_ACCEPT}
    tag_url = "/v2/team/legacy/manifests/v1"
    async with http.head(f"{origin.url}{tag_url}", headers=accept) as r:
        assert r.headers["Content-Type"] == DOCKER_V1_SIGNED
        digest = r.headers["Docker-Content-Digest"]  # of the payload, without the signatures
    for method in ("GET", "HEAD", "GET"):
        async with http.request(
            method, f"{node.url}{tag_url}?ns={origin.address}", headers=accept
        ) as r:
            assert r.status == 200
            assert r.headers["Docker-Content-Digest"] == digest
    hosts = write_hosts(tmp_path / "hosts", origin.address, node.url)

    await containerd.pull(f"{origin.address}/team/legacy@{digest}", hosts_dir=hosts)
    await containerd.pull(f"{origin.address}/team/legacy:v1", hosts_dir=hosts)

    await origin.settle()
    assert containerd_requests(origin) == []
    # A snapshot carries it by that name too (its import checks every manifest's digest).
    bundle = tmp_path / "legacy.tar.zst"
    image = f"{origin.address}/team/legacy:v1"
    await asyncio.to_thread(export_bundle, node.settings.cache.dir, [image], bundle)
    imported = await asyncio.to_thread(import_bundle, bundle, tmp_path / "elsewhere")
    assert list(imported.manifests) == [digest]


async def test_the_origins_own_4xx_reaches_the_client_as_it_is(
    origin: DistributionRegistry, node: NodeServer, http: aiohttp.ClientSession
) -> None:
    # The registry cannot give a Docker schema 2 image to a client accepting OCI manifests only:
    # 400 MANIFEST_INVALID (it tries a schema 1 conversion). No origin failure: not a 503.
    pusher = Pusher(http, origin, "team/docker")
    await pusher.manifest("v1", await pusher.image("amd64", [DOCKER_GZIP], docker=True))
    await pusher.manifest("v2", await pusher.image("arm64", [DOCKER_GZIP], docker=True))
    oci_only = {"Accept": OCI_MANIFEST}

    got = await assert_same_answers(http, node, origin, "team/docker/manifests/v1", oci_only)
    assert got == (400, "MANIFEST_INVALID")
    # ... and as well once the tag is cached (for a client that accepts the type).
    accept = {"Accept": CONTAINERD_ACCEPT}
    await assert_same_answers(http, node, origin, "team/docker/manifests/v2", accept)
    got = await assert_same_answers(http, node, origin, "team/docker/manifests/v2", oci_only)
    assert got == (400, "MANIFEST_INVALID")


def signed_schema1(payload: bytes, protected: object) -> bytes:
    """``payload`` (a JSON object) with a signature block spliced in before its last ``\\n}``,
    the way libtrust signs it."""
    return (
        payload[:-2]
        + b',\n   "signatures": '
        + json.dumps([{"protected": protected}]).encode()
        + payload[-2:]
    )


def protected_header(length: int, tail: bytes) -> str:
    encode = base64.urlsafe_b64encode
    header = {"formatLength": length, "formatTail": encode(tail).decode().rstrip("=")}
    return encode(json.dumps(header).encode()).decode().rstrip("=")


SCHEMA1_PAYLOAD = b'{\n   "schemaVersion": 1,\n   "name": "team/legacy"\n}'


@pytest.mark.parametrize(
    ("protected", "named_by_payload"),
    [
        (protected_header(len(SCHEMA1_PAYLOAD) - 2, b"\n}"), True),
        ("not base64!", False),
        (protected_header(10_000, b"\n}"), False),  # longer than the body
        ({"formatLength": 3}, False),
        (base64.urlsafe_b64encode(b"[1]").decode(), False),
    ],
)
def test_a_schema1_manifest_is_named_by_its_payload_only_when_its_signature_block_reads(
    protected: object, named_by_payload: bool
) -> None:
    body = signed_schema1(SCHEMA1_PAYLOAD, protected)
    expected = Digest.of(SCHEMA1_PAYLOAD if named_by_payload else body)
    assert manifest_digest(body, DOCKER_V1_SIGNED) == expected
    assert manifest_digest(body, OCI_MANIFEST) == Digest.of(body)  # other types: the body
    assert manifest_digest(body, DOCKER_V1_SIGNED, "sha512") == Digest.of(
        SCHEMA1_PAYLOAD if named_by_payload else body, "sha512"
    )


async def test_a_blob_named_by_sha512_is_served_like_the_origin_serves_it(
    origin: DistributionRegistry, node: NodeServer, http: aiohttp.ClientSession
) -> None:
    data = bytes(range(256)) * 40
    digest = Digest.of(data, "sha512")
    async with http.post(f"{origin.url}/v2/team/app/blobs/uploads/") as r:
        location = r.headers["Location"]
    url = location if "://" in location else f"{origin.url}{location}"
    async with http.put(url, params={"digest": str(digest)}, data=data) as r:
        assert r.status == 201, await r.text()
    path = f"team/app/blobs/{digest}"
    for headers in ({}, {"Range": "bytes=100-"}, {}, {"Range": "bytes=100-"}):  # then cached
        at_origin = await answer(http, "GET", f"{origin.url}/v2/{path}", headers)
        url = f"{node.url}/v2/{path}?ns={origin.address}"
        got = await answer(http, "GET", url, headers)
        # The registry names the blob by its own sha256 in Docker-Content-Digest; the node by
        # the digest it was asked for. Clients check the bytes against the descriptor.
        assert got[2] == str(digest) and at_origin[2] == str(Digest.of(data))
        assert got[:2] + got[3:] == at_origin[:2] + at_origin[3:]
    unknown = f"team/app/blobs/{Digest.of(b'nothing', 'sha512')}"
    assert await assert_same_answers(http, node, origin, unknown, {}) == (404, "BLOB_UNKNOWN")


async def test_a_client_that_leaves_while_the_node_asks_the_origin_is_not_an_error(
    origin: DistributionRegistry,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    # containerd cancels its other fetches when one fails (a pod deleted, a pull timed out):
    # an INFO line, as for a client leaving mid-blob, not aiohttp's ERROR and a traceback. The
    # node is served as `imgaccel node` serves it: aiohttp's TestServer would cancel the handler.
    pusher = Pusher(http, origin, "team/app")
    digests = [(await pusher.blob(bytes([i]) * 5000))["digest"] for i in range(3)]
    settings = load_settings(
        None, upstreams={origin.address: {"url": origin.url}}, cache={"dir": str(tmp_path)}
    )
    app = make_app(settings)
    with caplog.at_level(logging.INFO):
        async with listening(app, "127.0.0.1", 0) as url:
            port = int(url.rpartition(":")[2])
            for digest in digests:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                path = f"/v2/team/app/blobs/{digest}?ns={origin.address}"
                writer.write(f"GET {path} HTTP/1.1\r\nHost: node\r\n\r\n".encode())
                await writer.drain()
                writer.close()  # before the origin answered the node
                await writer.wait_closed()
            store = app[NODE].store
            # Each handler got its fill (and tried to answer) before the fill was committed.
            await until(lambda: all(Digest.parse(d) in store for d in digests))
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
    assert any("went away" in r.getMessage() for r in caplog.records)
