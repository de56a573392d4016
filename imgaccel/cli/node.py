"""``imgaccel node``: the per-node registry mirror."""

from __future__ import annotations

from typing import Any

import click

from imgaccel.cli.options import node_options, run_service, settings_from


@click.command()
@node_options
def node(**options: Any) -> None:
    """Run the node daemon: an OCI registry mirror with a verified local cache.

    Each layer is served from the cache, else from peers (with --tracker), else from the
    origin. Point containerd at it with `imgaccel containerd-config`, or dockerd with
    `imgaccel docker-config`. With no options it runs on the embedded defaults.

    Behind an HTTP proxy, give it the HTTPS_PROXY, HTTP_PROXY and NO_PROXY that containerd
    has: it reaches origins through them by the same rules (or set an upstream's `proxy`).
    `imgaccel status` shows which origins it reaches; `imgaccel doctor` checks the setup.
    """
    from imgaccel.proxy.app import make_app

    run_service(settings_from(options), make_app, "node")
