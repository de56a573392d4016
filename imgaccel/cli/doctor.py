"""``imgaccel doctor``: check this node's setup and say exactly what to fix."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import click

from imgaccel.cli.options import ByteSize
from imgaccel.hostconfig import DEFAULT_HOSTS_DIR

_DIR = click.Path(file_okay=False, path_type=Path)
_FILE = click.Path(dir_okay=False, path_type=Path)


@click.command()
@click.option("--node", "node_url", metavar="URL", help="The node daemon. [default: from listen]")
@click.option(
    "--registry",
    "registries",
    multiple=True,
    default=("docker.io",),
    show_default=True,
    help="Registry whose hosts.toml must point at the node (repeatable).",
)
@click.option(
    "--hosts-dir",
    type=_DIR,
    default=DEFAULT_HOSTS_DIR,
    show_default=True,
    help="containerd's certs.d (its config_path).",
)
@click.option(
    "--containerd-config",
    type=_FILE,
    default=Path("/etc/containerd/config.toml"),
    show_default=True,
    help="containerd's config.toml.",
)
@click.option(
    "--daemon-json",
    type=_FILE,
    default=Path("/etc/docker/daemon.json"),
    show_default=True,
    help="dockerd's daemon.json (checked when present).",
)
@click.option(
    "--config",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="The node's config file. [default: IMGACCEL_CONFIG]",
)
@click.option("--tracker", metavar="URL", help="The tracker. [default: p2p.tracker_url]")
@click.option("--certs-dir", type=_DIR, help="Cluster certificates. [default: p2p.certs_dir]")
# Any path: a cache "dir" that is a file is something to report, not a usage error.
@click.option(
    "--cache-dir", type=click.Path(path_type=Path), help="The node's cache. [default: cache.dir]"
)
@click.option(
    "--containerd-content-dir",
    type=click.Path(path_type=Path),
    help="containerd's content store, to try a hard link into the cache. "
    "[default: cache.containerd_content_dir]",
)
@click.option("--quota", "quota_bytes", type=ByteSize(), help="[default: cache.quota_bytes]")
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of lines.")
def doctor(**options: Any) -> None:
    """Check this node's setup: runtime config, daemon, tracker, TLS files, cache dir, disk,
    and whether the cache can keep blobs once with containerd's content store.

    One line per check (ok, warn, FAIL, skip), each problem with the exact fix. Settings
    come from the node's config file and IMGACCEL_* (as `imgaccel node` reads them); the
    flags override them. Exit status: 0 when nothing FAILed, 1 otherwise.

    In the node's pod: kubectl -n imgaccel exec POD -c node -- imgaccel doctor
    --hosts-dir /host/etc/containerd/certs.d
    """
    from imgaccel.ops import doctor as checks

    inputs = _inputs(options)
    found = asyncio.run(checks.run_checks(inputs))
    click.echo(checks.render_json(found) if options["as_json"] else checks.render(found))
    sys.exit(1 if checks.failed(found) else 0)


def _inputs(options: dict[str, Any]) -> Any:
    from imgaccel.errors import ConfigError
    from imgaccel.ops.doctor import DoctorInputs
    from imgaccel.ops.reach import local_url
    from imgaccel.settings import load_settings

    p2p = {
        k: str(v)
        for k, v in (("tracker_url", options["tracker"]), ("certs_dir", options["certs_dir"]))
        if v is not None
    }
    try:
        settings = load_settings(options["config"], **({"p2p": p2p} if p2p else {}))
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    quota = options["quota_bytes"]
    return DoctorInputs(
        node_url=(options["node_url"] or local_url(settings.listen)).rstrip("/"),
        registries=tuple(options["registries"]),
        hosts_dir=options["hosts_dir"],
        containerd_config=options["containerd_config"],
        daemon_json=options["daemon_json"],
        tracker_url=settings.p2p.tracker_url,
        certs_dir=settings.p2p.certs_dir,
        cache_dir=options["cache_dir"] or settings.cache.dir,
        quota_bytes=settings.cache.quota_bytes if quota is None else quota,
        min_free_percent=settings.cache.min_free_percent,
        containerd_content_dir=(
            options["containerd_content_dir"] or settings.cache.containerd_content_dir
        ),
        upstreams=settings.upstreams,
    )
