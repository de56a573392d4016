"""``imgaccel seeder``: fetch cold blobs from the origin once for the whole cluster."""

from __future__ import annotations

from typing import Any

import click

from imgaccel.cli.options import node_options, run_service, settings_from


@click.command()
@node_options
def seeder(**options: Any) -> None:
    """Run a seeder: a node with a big disk and good origin connectivity.

    When any node misses a cold blob, the tracker hands it to a seeder, which fetches it from
    the origin once (parallel range requests), publishes its torrent and seeds it; the nodes
    get it from the swarm. Needs --tracker and --certs-dir. It also serves the mirror API.
    It reaches origins through HTTPS_PROXY / HTTP_PROXY / NO_PROXY as the node does.
    """
    from imgaccel.seeder import make_app

    if not options.get("tracker"):
        raise click.UsageError("the seeder needs --tracker URL")
    run_service(settings_from(options), make_app, "seeder")
