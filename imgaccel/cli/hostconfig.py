"""``imgaccel containerd-config`` and ``imgaccel docker-config``: point a runtime at the node.

Thin shells over ``imgaccel.hostconfig``: parse flags, call, print one line per file touched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path

import click

from imgaccel.errors import ConfigError
from imgaccel.hostconfig import DEFAULT_HOSTS_DIR, DEFAULT_MIRROR, Change, containerd, docker


def _run(edits: Iterable[Callable[[], Change]]) -> None:
    """Run each edit, print what it did; a bad file or flag is one error line, not a traceback."""
    try:
        for edit in edits:
            click.echo(edit().describe())
    except (ConfigError, OSError) as exc:
        raise click.ClickException(str(exc)) from None


def parse_origins(origins: Iterable[str], registries: Iterable[str]) -> dict[str, str]:
    """``HOST=URL`` flags as a mapping; every HOST must be one of ``registries``."""
    parsed: dict[str, str] = {}
    for item in origins:
        host, sep, url = item.partition("=")
        if not sep or not host or not url:
            raise click.BadParameter(f"{item!r} is not HOST=URL", param_hint="--origin")
        if host not in registries:
            raise click.BadParameter(
                f"{host} is not among --registry ({', '.join(registries)})", param_hint="--origin"
            )
        parsed[host] = url
    return parsed


@click.command("containerd-config")
@click.option(
    "--hosts-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_HOSTS_DIR,
    show_default=True,
    help="containerd's config_path (the CRI plugin's registry.config_path).",
)
@click.option(
    "--registry",
    "registries",
    multiple=True,
    default=("docker.io",),
    show_default=True,
    help="Registry host to pull through the mirror (repeatable; _default: every registry "
    "without a directory of its own, containerd 1.7+ and late 1.6).",
)
@click.option(
    "--mirror",
    default=DEFAULT_MIRROR,
    show_default=True,
    help="URL of the imgaccel node.",
)
@click.option(
    "--origin",
    "origins",
    multiple=True,
    metavar="HOST=URL",
    help="Fallback server for HOST (repeatable), e.g. plain http for a local registry. "
    "Default: the one an earlier run recorded, else https://registry-1.docker.io for "
    "docker.io and https://HOST otherwise.",
)
@click.option("--remove", is_flag=True, help="Take back exactly what an earlier run added.")
def containerd_config(
    hosts_dir: Path,
    registries: tuple[str, ...],
    mirror: str,
    origins: tuple[str, ...],
    remove: bool,
) -> None:
    """Write DIR/REGISTRY/hosts.toml so containerd pulls through the imgaccel node.

    The mirror becomes the first [host] (capabilities pull, resolve; containerd adds
    ?ns=REGISTRY); the origin stays as `server`, which containerd uses when the mirror fails.
    For HOST:PORT, an existing DIR/HOST_PORT_ is used instead, as containerd does. An existing
    hosts.toml keeps its server and tables and is restored by --remove. containerd re-reads
    these files at every pull: no restart. Running it twice changes nothing.
    """
    origin_for = parse_origins(origins, registries)
    if remove:
        # Reverse order: the first registry configured is the one that recorded making DIR.
        _run(partial(containerd.remove, hosts_dir, r) for r in reversed(registries))
    else:
        _run(
            partial(containerd.configure, hosts_dir, r, mirror, origin_for.get(r))
            for r in registries
        )


@click.command("docker-config")
@click.option(
    "--daemon-json",
    type=click.Path(dir_okay=False, path_type=Path),
    default=docker.DEFAULT_DAEMON_JSON,
    show_default=True,
    help="dockerd's configuration file.",
)
@click.option(
    "--mirror", default=DEFAULT_MIRROR, show_default=True, help="URL of the imgaccel node."
)
@click.option("--remove", is_flag=True, help="Take the mirror out of registry-mirrors again.")
def docker_config(daemon_json: Path, mirror: str, remove: bool) -> None:
    """Add the imgaccel node to dockerd's registry-mirrors in daemon.json.

    NOTE: dockerd uses registry-mirrors for Docker Hub images only; images from any other
    registry bypass the mirror (use containerd-config for those). Every other key is kept;
    running it twice changes nothing. dockerd reads the file at start or on SIGHUP
    (systemctl reload docker).
    """
    edit = docker.remove if remove else docker.configure
    _run([partial(edit, daemon_json, mirror)])
