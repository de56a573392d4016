"""Options shared by the commands that run a node (``node``, ``seeder``), and their settings."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from imgaccel.errors import ConfigError, ImgaccelError

F = TypeVar("F", bound=Callable[..., Any])

#: What ``--log-level`` takes, in any case (``log.level`` in a config file is checked as it is set).
LOG_LEVELS = click.Choice(("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), case_sensitive=False)

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


_OPTIONS: list[Callable[[F], F]] = [
    click.option(
        "--listen",
        metavar="HOST:PORT",
        help="Where to serve the mirror. [default: 127.0.0.1:65001]",
    ),
    click.option(
        "--metrics-listen",
        metavar="HOST:PORT",
        help="Also serve /metrics and /healthz (only those) here, e.g. 0.0.0.0:9465.",
    ),
    click.option(
        "--cache-dir",
        type=click.Path(file_okay=False, path_type=Path),
        help="Cache directory. [default: /var/lib/imgaccel as root, else the XDG cache dir]",
    ),
    click.option(
        "--upstream",
        "upstreams",
        multiple=True,
        metavar="HOST=URL",
        help="Origin for a registry host, e.g. registry.local:5000=http://10.0.0.5:5000 "
        "(repeatable). Unlisted hosts are reached at https://HOST.",
    ),
    click.option(
        "--quota",
        "quota_bytes",
        type=ByteSize(),
        help="Cache quota, e.g. 200G or 500MiB (0: none). [default: 0]",
    ),
    click.option("--tracker", metavar="URL", help="The imgaccel tracker (turns peer-to-peer on)."),
    click.option(
        "--p2p-listen",
        metavar="HOST:PORT",
        help="Where libtorrent listens for peers (TLS). [default: 0.0.0.0:6881]",
    ),
    click.option(
        "--certs-dir",
        type=click.Path(file_okay=False, path_type=Path),
        help="ca.crt, node.crt and node.key of the cluster (`imgaccel certs`); "
        "needed with --tracker.",
    ),
    click.option("--node-id", help="This node's name at the tracker. [default: host name]"),
    click.option(
        "--config",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        help="A TOML config file (see the README); flags and IMGACCEL_* override it.",
    ),
    click.option("--log-level", type=LOG_LEVELS, help="The log level. [default: INFO]"),
    click.option("--log-json", is_flag=True, default=None, help="Log one JSON object per line."),
]


def node_options(function: F) -> F:
    """Decorate a command with every node option (in --help order)."""
    for option in reversed(_OPTIONS):
        function = option(function)
    return function


_NESTED = {
    "cache_dir": ("cache", "dir"),
    "quota_bytes": ("cache", "quota_bytes"),
    "tracker": ("p2p", "tracker_url"),
    "p2p_listen": ("p2p", "listen"),
    "certs_dir": ("p2p", "certs_dir"),
    "node_id": ("p2p", "node_id"),
    "log_level": ("log", "level"),
    "log_json": ("log", "json_format"),
}


def settings_from(options: dict[str, Any]) -> Any:
    """The node settings for these command-line options (a clear usage error when invalid)."""
    from imgaccel.settings import load_settings, parse_upstream_flag

    overrides: dict[str, Any] = {}
    for name, value in options.items():
        if value is None or name in ("config", "upstreams"):
            continue
        if name in _NESTED:
            section, key = _NESTED[name]
            overrides.setdefault(section, {})[key] = (
                str(value) if isinstance(value, Path) else value
            )
        else:
            overrides[name] = value
    try:
        for flag in options.get("upstreams", ()):
            host, url = parse_upstream_flag(flag)
            overrides.setdefault("upstreams", {})[host] = {"url": url}
        return load_settings(options.get("config"), **overrides)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc


def run_service(settings: Any, make_app: Callable[[Any], Any], name: str) -> None:
    """Set up logging and serve ``make_app(settings)`` until SIGINT/SIGTERM."""
    import asyncio

    from imgaccel.address import split_listen
    from imgaccel.logs import setup_logging
    from imgaccel.serve import serve

    host, port = split_listen(settings.listen)
    more = [split_listen(address) for address in getattr(settings, "registry_listen", {})]
    try:
        setup_logging(settings.log.level, settings.log.json_format)
        app = make_app(settings)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    try:
        asyncio.run(serve(app, host, port, name, more=more))
    except (ImgaccelError, OSError) as exc:
        raise click.ClickException(f"imgaccel {name} could not start: {exc}") from exc


class Failure(click.ClickException):
    """A one-line error that ends the command with exit status ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        # click declares exit_code a class variable (a ClassVar in click 8.5's types): set per
        # instance, which is where click's main loop reads it.
        setattr(self, "exit_code", code)  # noqa: B010
