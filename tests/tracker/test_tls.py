"""Only holders of a cluster certificate may announce or use the API."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from imgaccel.p2p.certs import issue, make_ca
from imgaccel.tracker import TrackerSettings, running
from imgaccel.tracker.auth import client_context

from .conftest import digest_of, info_hash, peer_id, torrent_for


@dataclass
class Cluster:
    url: str
    certs: Path

    def context(self, name: str | None) -> ssl.SSLContext:
        """A client context trusting the cluster CA, presenting ``name``'s cert if given."""
        cert = key = None
        if name is not None:
            cert, key = self.certs / f"{name}.crt", self.certs / f"{name}.key"
        return client_context(self.certs / "ca.crt", cert, key)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    certs = tmp_path / "certs"
    ca = make_ca()
    ca.write(certs, "ca.crt", "ca.key")
    issue(ca).write(certs, "tracker.crt", "tracker.key")
    issue(ca).write(certs, "node.crt", "node.key")
    issue(make_ca("other")).write(certs, "stranger.crt", "stranger.key")
    settings = TrackerSettings(
        listen="127.0.0.1:0",
        data_dir=tmp_path / "state",
        ca_cert=certs / "ca.crt",
        cert=certs / "tracker.crt",
        key=certs / "tracker.key",
    )
    async with running(settings) as served:
        assert served.url.startswith("https://127.0.0.1:")
        yield Cluster(served.url, certs)


def _announce_url(base: str) -> str:
    return (
        f"{base}/announce?info_hash={info_hash('x').hex()[:20]}"
        f"&peer_id={peer_id(1).hex()[:20]}&port=7001&left=0"
    )


async def _get(url: str, context: ssl.SSLContext) -> int:
    async with aiohttp.ClientSession() as http, http.get(url, ssl=context) as response:
        await response.read()
        return response.status


async def test_cluster_cert_may_announce_and_use_the_api(cluster: Cluster) -> None:
    context = cluster.context("node")
    async with aiohttp.ClientSession() as http:
        async with http.get(_announce_url(cluster.url), ssl=context) as response:
            assert b"interval" in await response.read()
        async with http.post(
            f"{cluster.url}/v1/claims/{digest_of('b')}", json={"node": "n"}, ssl=context
        ) as response:
            assert (await response.json())["fetch"] is True


@pytest.mark.parametrize("who", [None, "stranger"])
@pytest.mark.parametrize("path", ["announce", "api", "metrics"])
async def test_without_a_cluster_cert_nothing_is_served(
    cluster: Cluster, who: str | None, path: str
) -> None:
    url = {
        "announce": _announce_url(cluster.url),
        "api": f"{cluster.url}/v1/metainfo/{digest_of('b')}",
        "metrics": f"{cluster.url}/metrics",
    }[path]
    with pytest.raises((aiohttp.ClientError, ssl.SSLError)):
        await _get(url, cluster.context(who))


async def test_plain_http_to_the_tls_port_gets_nothing(cluster: Cluster) -> None:
    with pytest.raises(aiohttp.ClientError):
        await _get(
            _announce_url(cluster.url.replace("https", "http")), ssl.create_default_context()
        )


async def test_only_ssl_torrents_of_this_cluster_are_published(cluster: Cluster) -> None:
    digest = digest_of("blob")
    url = f"{cluster.url}/v1/metainfo/{digest}"
    ca_pem = (cluster.certs / "ca.crt").read_bytes()
    other_ca = (cluster.certs / "stranger.crt").read_bytes()
    async with aiohttp.ClientSession() as http:
        for torrent, status in [
            (torrent_for(digest), 400),  # not an SSL torrent: its peers could not announce
            (torrent_for(digest, ca=other_ca), 400),
            (torrent_for(digest, ca=ca_pem), 201),
        ]:
            async with http.put(url, data=torrent, ssl=cluster.context("node")) as response:
                assert response.status == status, await response.text()
