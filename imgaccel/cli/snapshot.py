"""``imgaccel snapshot export|import``: carry a cache's images in one verified bundle."""

from __future__ import annotations

import sqlite3
from pathlib import Path

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
    air-gapped cluster. Exit codes: 0 ok, 1 error (nothing imported), 3 image not cached."""


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
@_CACHE_DIR
def import_(bundle: Path, cache_dir: Path | None) -> None:
    """Verify every digest of BUNDLE, then load it into a cache. A bundle that fails
    verification loads nothing. Safe beside a running node, but that node serves the imported
    blobs from its cache only once restarted (it indexes its blobs at start)."""
    from imgaccel.cache.snapshot import import_bundle
    from imgaccel.errors import ImgaccelError

    try:
        contents = import_bundle(bundle, _cache_dir(cache_dir))
    except ImgaccelError as exc:
        raise Failure(f"{bundle} rejected, nothing imported: {exc}", 1) from exc
    except (OSError, sqlite3.Error) as exc:  # the cache dir cannot be created or written
        raise Failure(f"{bundle}: import failed: {exc}", 1) from exc
    click.echo(f"imported {len(contents.manifests)} manifests and {len(contents.blobs)} blobs")
