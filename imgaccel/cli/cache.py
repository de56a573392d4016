"""``imgaccel cache ls|pin|unpin|gc``: a running node's cache, through its admin API.

Through the node (``/_imgaccel/...``) rather than on the cache directory: the LRU index and the
pins that eviction obeys live in the running node's memory, so only the node can change them
without racing its own eviction and reads.
"""

from __future__ import annotations

import asyncio
import datetime
import json
from typing import Any

import click

from imgaccel.cli.options import ByteSize, Failure

_NODE = click.option(
    "--node",
    "node_url",
    default="http://127.0.0.1:65001",
    show_default=True,
    envvar="IMGACCEL_NODE",
    help="The node daemon.",
)


@click.group()
def cache() -> None:
    """Show and manage a node's cache: blobs, pins, garbage collection."""


def _call(
    node_url: str, method: str, path: str, expect: tuple[str, ...] = (), **kwargs: Any
) -> dict[str, Any]:
    """The node's JSON answer, which must have the keys ``expect``; a one-line error else."""
    import aiohttp

    from imgaccel.prewarm.errors import PrewarmError
    from imgaccel.prewarm.node import NodeAPI

    async def call() -> dict[str, Any]:
        async with aiohttp.ClientSession() as http:
            api = NodeAPI(node_url, http)
            return await api.admin(method, f"{api.base_url}{path}", **kwargs)

    try:
        answer = asyncio.run(call())
    except PrewarmError as exc:
        raise Failure(str(exc), exc.exit_code) from exc
    if missing := [key for key in expect if key not in answer]:
        raise click.ClickException(
            f"{method} {node_url}{path}: the answer has no {missing[0]!r} (not an imgaccel node?)"
        )
    return answer


@cache.command("ls")
@_NODE
@click.option("--pinned", is_flag=True, help="Only pinned blobs.")
@click.option("--json", "as_json", is_flag=True, help="The node's JSON answer.")
def ls(node_url: str, pinned: bool, as_json: bool) -> None:
    """List cached blobs, least recently used first, with their pins."""
    listing = _call(node_url, "GET", "/_imgaccel/cache", ("blobs", "used_bytes", "quota_bytes"))
    blobs = [b for b in listing["blobs"] if b["pinned_until"] or not pinned]
    if as_json:
        click.echo(json.dumps({**listing, "blobs": blobs}))
        return
    for blob in blobs:
        pin = ""
        if blob["pinned_until"]:
            until = datetime.datetime.fromtimestamp(blob["pinned_until"]).isoformat(
                timespec="seconds"
            )
            pin = f"  pinned until {until} ({blob['reason'] or 'manual'})"
        click.echo(f"{blob['digest']}  {blob['size']:>14}{pin}")
    quota = listing["quota_bytes"] or "no quota"
    click.echo(f"{len(blobs)} blobs, {listing['used_bytes']} bytes used of {quota}")


@cache.command()
@click.argument("digests", nargs=-1, required=True)
@_NODE
@click.option("--seconds", type=float, default=86400.0, show_default=True, help="Pin this long.")
def pin(digests: tuple[str, ...], node_url: str, seconds: float) -> None:
    """Keep DIGEST... against eviction (they must be cached)."""
    missing: list[str] = []
    for start in range(0, len(digests), 10):  # the node takes bodies of at most 1 KiB
        batch = list(digests[start : start + 10])
        body = {"digests": batch, "seconds": seconds, "reason": "manual"}
        missing += _call(node_url, "POST", "/_imgaccel/pins", ("missing",), json=body)["missing"]
    for digest in missing:
        click.echo(f"{digest}: not cached, not pinned", err=True)
    if missing:
        raise SystemExit(1)


@cache.command()
@click.argument("digests", nargs=-1, required=True)
@_NODE
@click.option(
    "--reason",
    help="Drop only the pin made for this reason (as `cache ls` shows it: manual, hot, "
    "prewarm, prewarm job ID); the blob stays pinned for its others. Default: every pin.",
)
def unpin(digests: tuple[str, ...], node_url: str, reason: str | None) -> None:
    """Let DIGEST... be evicted again."""
    from imgaccel.errors import DigestInvalid
    from imgaccel.oci.digest import Digest

    try:
        parsed = [Digest.parse(d) for d in digests]
    except DigestInvalid as exc:
        raise click.BadParameter(f"not a digest: {exc}") from exc
    params = {"reason": reason} if reason else {}
    for digest in parsed:
        _call(node_url, "DELETE", f"/_imgaccel/pins/{digest}", params=params)


@cache.command()
@_NODE
@click.option(
    "--target",
    type=ByteSize(),
    help="Delete down to this size. [default: the node's quota; with no quota, delete nothing]",
)
def gc(node_url: str, target: int | None) -> None:
    """Drop expired pins, then delete least recently used unpinned blobs down to --target (or
    the node's quota). A node without a quota deletes nothing unless --target is given."""
    body = {} if target is None else {"target_bytes": target}
    answer = _call(node_url, "POST", "/_imgaccel/gc", ("removed", "used_bytes"), json=body)
    click.echo(f"removed {len(answer['removed'])} blobs; {answer['used_bytes']} bytes used")
