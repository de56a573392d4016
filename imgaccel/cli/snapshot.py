"""``imgaccel snapshot export|import``: carry a cache's images in one verified bundle."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import click

from imgaccel.cli.options import Failure

_CACHE_DIR = click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="IMGACCEL_CACHE__DIR",
    help="The node's cache directory (export: it must exist). "
    "[default: /var/lib/imgaccel as root, else XDG cache]",
)


def _cache_dir(value: Path | None) -> Path:
    from imgaccel.cache.config import default_cache_dir

    return value or default_cache_dir()


@click.group()
def snapshot() -> None:
    """Bundles of cached images, e.g. to bake caches into node images or carry them into an
    air-gapped cluster. Exit codes: 0 ok, 1 error (nothing imported), 3 image not cached,
    4 imported, but the node named by --node was not told (unreachable, refused, or it runs
    on another cache directory)."""


@snapshot.command("export")
@click.argument("images", nargs=-1, required=True)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The bundle to write (FILE.tar.zst).",
)
@_CACHE_DIR
def export(images: tuple[str, ...], output: Path, cache_dir: Path | None) -> None:
    """Write the cached, verified blobs and manifests of IMAGE... into one bundle. Reads the
    cache without changing it: safe while the node runs."""
    from imgaccel.cache.snapshot import NotCached, export_bundle
    from imgaccel.errors import ImgaccelError

    try:
        contents = export_bundle(_cache_dir(cache_dir), list(images), output)
    except NotCached as exc:
        raise Failure(str(exc), 3) from exc
    except (ImgaccelError, sqlite3.Error) as exc:  # sqlite3: a meta.db it cannot read
        raise Failure(str(exc), 1) from exc
    size = sum(contents.blobs.values())
    click.echo(
        f"{output}: {len(contents.manifests)} manifests, {len(contents.blobs)} blobs ({size} bytes)"
    )


@snapshot.command("import")
@click.argument("bundle", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="The node's cache directory. [default: cache.dir of the node's settings]",
)
@click.option(
    "--config",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="The node's config file, for cache.dir, cache.min_free_percent and cache.quota_bytes "
    "(IMGACCEL_* override it). [default: IMGACCEL_CONFIG]",
)
@click.option(
    "--node",
    "node_url",
    metavar="URL",
    help="The node running on this cache, e.g. http://127.0.0.1:65001: after the import, tell "
    "it to index the new blobs (POST /_imgaccel/rescan), so its quota counts them at once "
    "and, with peer-to-peer on, it offers them to peers.",
)
def import_(
    bundle: Path, cache_dir: Path | None, config: Path | None, node_url: str | None
) -> None:
    """Verify every digest of BUNDLE, then load it into a cache. A bundle that fails
    verification loads nothing. Safe beside a running node, which serves the imported
    manifests and tags at once, and each imported blob from its cache when first asked for it;
    give --node so that it also indexes them all and counts them against its quota now
    (evicting least recently used blobs if they do not fit), or restart it. A node with
    peer-to-peer on seeds the blobs it indexed and publishes their torrents to the tracker
    (reading each blob once, in the background), as it does for blobs it fetched.

    Room is checked from the bundle's index before anything is written, and a bundle that
    does not fit is refused (exit 1, the cache unchanged): the blobs the cache does not hold
    yet must leave cache.min_free_percent of its filesystem free (default 25: the share kept
    for containerd), and with a quota (cache.quota_bytes) all the bundle's blobs must fit in
    it beside the blobs pinned now. (A node indexing them evicts least recently used blobs,
    imported ones too, never pinned ones, to stay under its quota: a bundle that cannot fit
    would be partly deleted as soon as it is indexed.) A disk that fills up anyway ends the
    import the same way: nothing committed, its staging directory removed. These settings are
    the node's (--config, IMGACCEL_*); to bake a cache into a node image, set for instance
    IMGACCEL_CACHE__MIN_FREE_PERCENT=0."""
    from imgaccel.cache.snapshot import NoRoom, import_bundle
    from imgaccel.errors import ConfigError, ImgaccelError
    from imgaccel.settings import load_settings

    try:
        settings = load_settings(config).cache
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    directory = cache_dir or settings.dir
    try:
        contents = import_bundle(
            bundle,
            directory,
            min_free_percent=settings.min_free_percent,
            quota_bytes=settings.quota_bytes,
        )
    except NoRoom as exc:
        raise Failure(f"{bundle} not imported, the cache is unchanged: {exc}", 1) from exc
    except ImgaccelError as exc:
        raise Failure(f"{bundle} rejected, nothing imported: {exc}", 1) from exc
    except (OSError, sqlite3.Error) as exc:  # the cache dir cannot be created or written
        raise Failure(f"{bundle}: import failed: {exc}", 1) from exc
    click.echo(f"imported {len(contents.manifests)} manifests and {len(contents.blobs)} blobs")
    if node_url is not None:
        _tell_node(node_url, directory)


def _tell_node(node_url: str, cache_dir: Path) -> None:
    """Have the node at ``node_url`` index what was imported into ``cache_dir``."""
    answer = _rescan(node_url)
    served = answer.get("cache_dir")
    if not isinstance(served, str) or "indexed" not in answer:
        raise Failure(f"{node_url}: the answer to the rescan is not an imgaccel node's", 4)
    if not _same_dir(Path(served), cache_dir):
        raise Failure(
            f"imported into {cache_dir}, but the node at {node_url} runs on {served}: it indexed "
            "none of it (give --cache-dir the node's cache directory)",
            4,
        )
    quota = answer.get("quota_bytes") or "no quota"
    sharing = answer.get("sharing")
    click.echo(
        f"node {node_url}: indexed {len(answer['indexed'])} new blobs "
        f"({answer.get('indexed_bytes')} bytes); {answer.get('used_bytes')} bytes used of "
        f"{quota}, {answer.get('evicted')} blobs evicted"
        + (f"; sharing {sharing} with peers" if sharing else "")
    )


def _rescan(node_url: str) -> dict[str, Any]:
    import asyncio

    import aiohttp

    from imgaccel.prewarm.errors import PrewarmError
    from imgaccel.prewarm.node import NodeAPI

    async def call() -> dict[str, Any]:
        async with aiohttp.ClientSession() as http:
            api = NodeAPI(node_url, http)
            return await api.admin("POST", f"{api.base_url}/_imgaccel/rescan")

    try:
        return asyncio.run(call())
    except PrewarmError as exc:
        raise Failure(
            f"imported, but the node was not told: {exc}. It serves each imported blob when "
            "first asked for it, and counts them all against its quota once told (POST "
            "/_imgaccel/rescan, or this import again with --node) or restarted",
            4,
        ) from exc


def _same_dir(served: Path, imported: Path) -> bool:
    """Whether the node's cache directory (as it names it) is ``imported``. A name this host
    does not resolve (the node in a container that mounts it elsewhere) is given the benefit
    of the doubt, with a warning."""
    try:
        return os.path.samefile(served, imported)
    except OSError:
        click.echo(
            f"warning: cannot tell whether the node's cache {served} is {imported}", err=True
        )
        return True
