"""Fixtures for the tracker tests: a fake clock, settings on port 0, a live tracker and a client."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote_from_bytes

import aiohttp
import pytest
import yarl
from aiohttp import web

from imgaccel import bencode
from imgaccel.tracker import TrackerSettings, running, sweep
from imgaccel.tracker.state import STATE, TrackerState


class FakeClock:
    """A wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class TrackerClient:
    """Speaks to a live tracker: raw-byte announces and the JSON API."""

    url: str
    http: aiohttp.ClientSession
    app: web.Application

    @property
    def state(self) -> TrackerState:
        return self.app[STATE]

    def sweep(self) -> None:
        sweep(self.state)

    async def announce(self, **params: bytes | str | int) -> dict[bytes, Any]:
        return await self.bget("/announce", params)

    async def bget(self, path: str, params: dict[str, Any] | list[tuple[str, Any]]) -> Any:
        """GET with a query of raw bytes percent-encoded by hand; the decoded bencoded reply."""
        items = params.items() if isinstance(params, dict) else params
        query = "&".join(f"{k}={_quote(v)}" for k, v in items)
        url = yarl.URL(f"{self.url}{path}?{query}", encoded=True)
        async with self.http.get(url) as response:
            assert response.status == 200
            return bencode.decode(await response.read())

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.http.request(method, f"{self.url}{path}", **kwargs)


def _quote(value: bytes | str | int) -> str:
    raw = value if isinstance(value, bytes) else str(value).encode()
    return quote_from_bytes(raw, safe="")


def info_hash(name: str) -> bytes:
    return hashlib.sha1(name.encode()).digest()


def peer_id(n: int) -> bytes:
    return b"-IA0001-" + n.to_bytes(12, "big")


def digest_of(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def torrent_for(
    digest: str, *, piece_length: int = 16384, name: str | None = None, ca: bytes | None = None
) -> bytes:
    info: dict[str, object] = {
        "length": 1,
        "name": name or digest,
        "piece length": piece_length,
        "pieces": b"\x00" * 20,
    }
    if ca is not None:
        info["ssl-cert"] = ca
    return bencode.encode({"announce": "http://tracker/announce", "info": info})


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings(tmp_path: Path) -> TrackerSettings:
    return TrackerSettings(
        listen="127.0.0.1:0",
        data_dir=tmp_path / "tracker",
        insecure=True,
        announce_interval=60,
        peer_ttl=180,
        claim_lease_seconds=30,
        seeder_ttl=20,
    )


@pytest.fixture
async def tracker(settings: TrackerSettings, clock: FakeClock) -> AsyncIterator[TrackerClient]:
    async with running(settings, clock=clock) as served, aiohttp.ClientSession() as http:
        yield TrackerClient(served.url, http, served.app)
