"""Fixtures of the proxy tests: a token server, registries that check tokens or Basic auth."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from imgaccel.testing.images import Image, push
from imgaccel.testing.registry import DistributionRegistry
from imgaccel.testing.tokenserver import TokenServer

ALICE = ("alice", "alice-pw")
BOB = ("bob", "bob-pw")


@pytest.fixture
async def tokens(tmp_path: Path) -> AsyncIterator[TokenServer]:
    async with TokenServer(
        tmp_path / "tokens",
        users=dict([ALICE, BOB]),
        grants={"alice": {"test/*": ["pull", "push"]}},
        public=["test/public"],
    ) as server:
        yield server


@pytest.fixture
async def token_origin(
    tmp_path: Path, tokens: TokenServer, small_image: Image
) -> AsyncIterator[DistributionRegistry]:
    """A token-auth registry holding ``small_image`` as test/private:v1 and test/public:v1."""
    async with DistributionRegistry(tmp_path / "origin", auth=tokens.registry_auth()) as registry:
        for repo in ("test/private", "test/public"):
            await push(small_image, f"{registry.address}/{repo}:v1", creds=":".join(ALICE))
        registry.requests.clear()
        tokens.requests.clear()
        yield registry


def htpasswd_auth(directory: Path) -> dict[str, Any]:
    """The registry's ``auth:`` section for Basic auth with alice's account only."""
    import bcrypt

    htpasswd = directory / "htpasswd"
    hashed = bcrypt.hashpw(ALICE[1].encode(), bcrypt.gensalt(rounds=4)).decode()
    htpasswd.write_text(f"{ALICE[0]}:{hashed}\n")
    return {"htpasswd": {"realm": "imgaccel-basic", "path": str(htpasswd)}}


@pytest.fixture
async def basic_origin(tmp_path: Path, small_image: Image) -> AsyncIterator[DistributionRegistry]:
    """An htpasswd registry (only alice) holding ``small_image`` as test/app:v1."""
    auth = htpasswd_auth(tmp_path)
    async with DistributionRegistry(tmp_path / "basic-origin", auth=auth) as registry:
        await push(small_image, f"{registry.address}/test/app:v1", creds=":".join(ALICE))
        registry.requests.clear()
        yield registry
