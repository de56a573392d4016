"""``imgaccel status``: what this node's daemon is doing."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import click


@click.command()
@click.option("--node", "node_url", metavar="URL", help="The node daemon. [default: from listen]")
@click.option(
    "--config",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="The node's config file, for its listen address. [default: IMGACCEL_CONFIG]",
)
@click.option("--json", "as_json", is_flag=True, help="The node's status document as JSON.")
def status(node_url: str | None, config: Path | None, as_json: bool) -> None:
    """Summarise the node: cache use, bytes by source, peers, the latest blobs served.

    Reads GET /_imgaccel/status from the node daemon (by default where the node's settings
    say it listens, http://127.0.0.1:65001 unless changed).
    """
    from imgaccel.ops.status import NodeUnreachable, fetch_status, render

    url = (node_url or _default_url(config)).rstrip("/")
    try:
        document = asyncio.run(fetch_status(url))
    except NodeUnreachable as exc:
        raise click.ClickException(f"{exc}; `imgaccel doctor` says what to fix") from None
    click.echo(json.dumps(document, indent=2) if as_json else render(document, url))


def _default_url(config: Path | None) -> str:
    from imgaccel.errors import ConfigError
    from imgaccel.ops.reach import local_url
    from imgaccel.settings import load_settings

    try:
        return local_url(load_settings(config).listen)
    except ConfigError as exc:
        raise click.UsageError(f"{exc} (or give --node URL)") from None
