"""Publishing and fetching metainfo by blob digest, long polls, holdings after a restart."""

from __future__ import annotations

import asyncio
import hashlib

from imgaccel import bencode
from tests.conftest import until

from .conftest import TrackerClient, digest_of, torrent_for

DIGEST = digest_of("layer")


async def _put(tracker: TrackerClient, digest: str, body: bytes, node: str = "n1") -> int:
    async with tracker.api("PUT", f"/v1/metainfo/{digest}?node={node}", data=body) as response:
        return response.status


async def test_publish_then_get_returns_the_same_torrent(tracker: TrackerClient) -> None:
    torrent = torrent_for(DIGEST)
    async with tracker.api("PUT", f"/v1/metainfo/{DIGEST}?node=n1", data=torrent) as response:
        assert response.status == 201
        body = await response.json()
    expected = hashlib.sha1(bencode.raw_value(torrent, b"info")).hexdigest()
    assert body == {"digest": DIGEST, "info_hash": expected, "publisher": "n1"}
    async with tracker.api("GET", f"/v1/metainfo/{DIGEST}") as response:
        assert response.status == 200
        assert response.content_type == "application/x-bittorrent"
        assert response.headers["X-Info-Hash"] == expected
        assert await response.read() == torrent
    assert await _put(tracker, DIGEST, torrent, node="n2") == 200  # the same again: fine
    assert await _put(tracker, DIGEST, torrent_for(DIGEST, piece_length=32768)) == 409


async def test_engine_style_names_are_accepted(tracker: TrackerClient) -> None:
    hex_part = DIGEST.removeprefix("sha256:")
    assert await _put(tracker, DIGEST, torrent_for(DIGEST, name=f"sha256-{hex_part}")) == 201
    other = digest_of("other")
    assert await _put(tracker, other, torrent_for(other, name=other.split(":")[1])) == 201


async def test_unknown_digest_is_404_and_bad_input_is_400(tracker: TrackerClient) -> None:
    async with tracker.api("GET", f"/v1/metainfo/{DIGEST}") as response:
        assert response.status == 404
        assert (await response.json())["error"] == "no metainfo for this digest"
    async with tracker.api("GET", "/v1/metainfo/sha256:nothex") as response:
        assert response.status == 400
        assert (await response.json())["errors"][0]["code"] == "DIGEST_INVALID"
    assert await _put(tracker, DIGEST, b"not bencode") == 400
    assert await _put(tracker, DIGEST, bencode.encode({"info": 1})) == 400
    assert await _put(tracker, DIGEST, torrent_for(digest_of("another blob"))) == 400
    async with tracker.api("GET", f"/v1/metainfo/{DIGEST}?wait=forever") as response:
        assert response.status == 400
    assert tracker.state.store.metainfo_count() == 0


async def test_long_poll_answers_when_the_metainfo_is_published(tracker: TrackerClient) -> None:
    async def get() -> tuple[int, bytes]:
        async with tracker.api("GET", f"/v1/metainfo/{DIGEST}?wait=30") as response:
            return response.status, await response.read()

    waiters = [asyncio.create_task(get()) for _ in range(3)]
    await until(lambda: tracker.state.notifier.waiting(f"metainfo:{DIGEST}") == 3)
    torrent = torrent_for(DIGEST)
    assert await _put(tracker, DIGEST, torrent) == 201
    assert await asyncio.gather(*waiters) == [(200, torrent)] * 3


async def test_long_poll_times_out_with_404(tracker: TrackerClient) -> None:
    async with tracker.api("GET", f"/v1/metainfo/{DIGEST}?wait=0.05") as response:
        assert response.status == 404


async def test_holdings_name_what_to_republish(tracker: TrackerClient) -> None:
    known, lost = digest_of("known"), digest_of("lost")
    assert await _put(tracker, known, torrent_for(known)) == 201
    body = {"node": "n1", "digests": [known, lost]}
    async with tracker.api("POST", "/v1/holdings", json=body) as response:
        assert await response.json() == {"unknown": [lost]}
    async with tracker.api("POST", "/v1/holdings", json={"node": "n1", "digests": "x"}) as r:
        assert r.status == 400
    async with tracker.api("POST", "/v1/holdings", data=b"{") as response:
        assert response.status == 400
