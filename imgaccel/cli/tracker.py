"""``imgaccel tracker``: run the cluster's tracker (a thin shell over ``imgaccel.tracker``)."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from pydantic import ValidationError

from imgaccel.cli.options import LOG_LEVELS

if TYPE_CHECKING:
    from imgaccel.tracker import TrackerSettings

_F = TypeVar("_F", bound=Callable[..., Any])
_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


def _option(*names: str, **kwargs: Any) -> Callable[[_F], _F]:
    """An option also read from ``IMGACCEL_TRACKER_<NAME>``."""
    env = "IMGACCEL_TRACKER_" + names[0].lstrip("-").replace("-", "_").upper()
    return click.option(*names, envvar=env, show_envvar=True, **kwargs)


@click.command()
@_option(
    "--listen",
    default="0.0.0.0:6970",
    show_default=True,
    help="HOST:PORT to serve on; port 0 picks a free port (printed on start).",
)
@_option(
    "--metrics-listen",
    metavar="HOST:PORT",
    help="Also serve /healthz and /metrics (only those) over plain HTTP here, for kubelet "
    "probes and Prometheus, which have no client certificate.",
)
@_option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/var/lib/imgaccel-tracker"),
    show_default=True,
    help="Directory of the SQLite state; it survives restarts.",
)
@_option("--ca-cert", type=_FILE, help="Cluster CA (PEM): clients must present a cert it signed.")
@_option("--cert", type=_FILE, help="The tracker's certificate (PEM), signed by the cluster CA.")
@_option("--key", type=_FILE, help="The tracker's private key (PEM).")
@_option(
    "--insecure",
    is_flag=True,
    help="Plain HTTP, no client authentication. Tests and development only.",
)
@_option(
    "--announce-interval",
    type=int,
    default=60,
    show_default=True,
    help="Seconds between a peer's announces, and between a node's calls that keep all its "
    "peers alive at once.",
)
@_option(
    "--seed-announce-interval",
    type=click.IntRange(min=1),
    default=3600,
    show_default=True,
    help="Seconds between the announces of a seed whose node makes those calls (its announces "
    "only back them up).",
)
@_option(
    "--peer-ttl",
    type=float,
    help="Seconds of silence after which a peer leaves its swarms [default: 3 x interval].",
)
@_option(
    "--claim-lease",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds a cold-blob fetch claim holds without renew or publish.",
)
@_option(
    "--job-ttl",
    type=click.FloatRange(min=0),
    default=86400.0,
    show_default=True,
    help="Seconds a prewarm job is handed to nodes (also ones that join later) unless it says "
    "otherwise; 0: until cancelled.",
)
@_option("--log-level", type=LOG_LEVELS, default="INFO", show_default=True, help="The log level.")
@_option("--log-json", is_flag=True, help="One JSON object per log line.")
def tracker(
    listen: str,
    metrics_listen: str | None,
    data_dir: Path,
    ca_cert: Path | None,
    cert: Path | None,
    key: Path | None,
    insecure: bool,
    announce_interval: int,
    seed_announce_interval: int,
    peer_ttl: float | None,
    claim_lease: float,
    job_ttl: float,
    log_level: str,
    log_json: bool,
) -> None:
    """Run the cluster's tracker: BitTorrent announces, torrent metainfo, fetch election.

    Nodes announce layers to it with libtorrent, publish and fetch torrents by blob digest,
    and ask it who fetches a cold blob from the origin, so each blob is fetched once per
    cluster. Every --announce-interval a node also says in one call which torrents it still
    holds, which keeps it in all their swarms: its seeds need announce only every
    --seed-announce-interval, so the tracker's load grows with the nodes, not with nodes x
    cached blobs. State lives in SQLite under --data-dir.

    Every client must present a certificate signed by the cluster CA (--ca-cert, with the
    tracker's own --cert/--key). --insecure serves plain HTTP to anyone instead.

    On start it prints `imgaccel tracker listening on http(s)://HOST:PORT` to stderr.
    """
    from imgaccel.logs import setup_logging
    from imgaccel.tracker import TrackerSettings

    try:
        settings = TrackerSettings.model_validate(
            {
                "listen": listen,
                "metrics_listen": metrics_listen,
                "data_dir": data_dir,
                "ca_cert": ca_cert,
                "cert": cert,
                "key": key,
                "insecure": insecure,
                "announce_interval": announce_interval,
                "seed_announce_interval": seed_announce_interval,
                "peer_ttl": peer_ttl,  # None: derived from the interval
                "claim_lease_seconds": claim_lease,
                "job_ttl_seconds": job_ttl,
            }
        )
    except ValidationError as exc:
        raise click.UsageError(_problems(exc)) from None
    setup_logging(log_level, json_format=log_json)
    try:
        asyncio.run(_serve(settings))
    except OSError as exc:  # the port is taken, or a certificate cannot be read
        raise click.ClickException(f"imgaccel tracker could not start: {exc}") from exc


def _problems(exc: ValidationError) -> str:
    return "; ".join(str(error["msg"]).removeprefix("Value error, ") for error in exc.errors())


async def _serve(settings: TrackerSettings) -> None:
    from imgaccel.tracker import running

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with running(settings) as served:
        click.echo(f"imgaccel tracker listening on {served.url}", err=True)
        if served.metrics_url:
            click.echo(f"imgaccel tracker metrics on {served.metrics_url}", err=True)
        await stop.wait()
    logging.getLogger("imgaccel.tracker").info("stopped")
