"""``imgaccel node``: the per-node registry mirror."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import click

from imgaccel.errors import ConfigError

_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "kib": 2**10,
    "m": 10**6,
    "mb": 10**6,
    "mib": 2**20,
    "g": 10**9,
    "gb": 10**9,
    "gib": 2**30,
    "t": 10**12,
    "tb": 10**12,
    "tib": 2**40,
}


class ByteSize(click.ParamType[int]):
    """A byte count: ``1048576``, ``500MiB``, ``200G`` (K/M/G/T are powers of 1000)."""

    name = "SIZE"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().lower()
        number = text.rstrip("abcdefghijklmnopqrstuvwxyz ")
        unit = text[len(number) :].strip()
        try:
            return int(float(number) * _UNITS[unit])
        except (KeyError, ValueError):
            self.fail(f"{value!r} is not a size like 200G, 500MiB or 1048576", param, ctx)


@click.command()
@click.option(
    "--listen", metavar="HOST:PORT", help="Where to serve the mirror. [default: 127.0.0.1:65001]"
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Cache directory. [default: /var/lib/imgaccel as root, else the XDG cache dir]",
)
@click.option(
    "--upstream",
    "upstreams",
    multiple=True,
    metavar="HOST=URL",
    help="Origin for a registry host, e.g. registry.local:5000=http://10.0.0.5:5000 "
    "(repeatable). Unlisted hosts are reached at https://HOST.",
)
@click.option(
    "--quota",
    "quota_bytes",
    type=ByteSize(),
    help="Cache quota, e.g. 200G or 500MiB (0: none). [default: 0]",
)
@click.option("--tracker", metavar="URL", help="The imgaccel tracker, for peer-to-peer.")
@click.option("--p2p-listen", metavar="HOST:PORT", help="Where libtorrent listens for peers.")
@click.option(
    "--config",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="A TOML config file (see the README); flags and IMGACCEL_* override it.",
)
@click.option("--log-level", help="DEBUG, INFO, WARNING or ERROR. [default: INFO]")
@click.option("--log-json", is_flag=True, default=None, help="Log one JSON object per line.")
def node(
    listen: str | None,
    cache_dir: Path | None,
    upstreams: tuple[str, ...],
    quota_bytes: int | None,
    tracker: str | None,
    p2p_listen: str | None,
    config: Path | None,
    log_level: str | None,
    log_json: bool | None,
) -> None:
    """Run the node daemon: an OCI registry mirror with a verified local cache.

    Point containerd at it with `imgaccel containerd-config`, or dockerd with
    `imgaccel docker-config`. With no options it runs on the embedded defaults.
    """
    from imgaccel.logs import setup_logging
    from imgaccel.proxy.app import make_app
    from imgaccel.serve import serve
    from imgaccel.settings import load_settings, parse_upstream_flag, split_listen

    overrides: dict[str, Any] = {}
    if listen:
        overrides["listen"] = listen
    if cache_dir:
        overrides.setdefault("cache", {})["dir"] = str(cache_dir)
    if quota_bytes is not None:
        overrides.setdefault("cache", {})["quota_bytes"] = quota_bytes
    if tracker:
        overrides.setdefault("p2p", {})["tracker_url"] = tracker
    if p2p_listen:
        overrides.setdefault("p2p", {})["listen"] = p2p_listen
    if log_level:
        overrides.setdefault("log", {})["level"] = log_level
    if log_json:
        overrides.setdefault("log", {})["json_format"] = True
    try:
        for flag in upstreams:
            host, url = parse_upstream_flag(flag)
            overrides.setdefault("upstreams", {})[host] = {"url": url}
        settings = load_settings(config, **overrides)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    setup_logging(settings.log.level, settings.log.json_format)
    host, port = split_listen(settings.listen)
    asyncio.run(serve(make_app(settings), host, port, "node"))
