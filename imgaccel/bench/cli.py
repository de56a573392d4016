"""``imgaccel-bench``: run the pull-time benchmark, list its scenarios, clean up after it."""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import sys
import tempfile
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click

from imgaccel.bench.cleanup import remove_leftovers
from imgaccel.bench.progress import Progress
from imgaccel.bench.report import markdown, write_all
from imgaccel.bench.results import Params, Report
from imgaccel.bench.runner import run_bench
from imgaccel.bench.scenarios import SCENARIOS
from imgaccel.testing.procs import is_root

T = TypeVar("T")
REQUIRED_PROGRAMS = ("ip", "tc", "containerd", "ctr", "skopeo")
_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
}


def parse_size(text: str) -> int:
    """``300MB``, ``1.5GB``, ``64MiB`` or plain bytes."""
    m = re.fullmatch(r"\s*([\d.]+)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise click.BadParameter(f"not a size: {text!r} (try 300MB or 1.5GB)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def parse_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro``; SIGTERM cancels it like Ctrl-C does, so cleanup code runs either way."""

    async def guarded() -> T:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await coro

    return asyncio.run(guarded())


def _preflight() -> None:
    if not is_root():
        raise click.ClickException("the benchmark creates network namespaces: run it as root")
    missing = [p for p in REQUIRED_PROGRAMS if shutil.which(p) is None]
    if shutil.which("docker-registry") is None and shutil.which("registry") is None:
        missing.append("docker-registry")
    if missing:
        raise click.ClickException(f"missing programs: {', '.join(missing)}")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """The imgaccel pull-time benchmark (see docs/benchmarks.md)."""


@main.command("run")
@click.option(
    "--nodes",
    default="4",
    show_default=True,
    help="Comma-separated node counts N; every scenario runs once per N.",
)
@click.option("--image-size", default="300MB", show_default=True, help="Image size S.")
@click.option(
    "--origin-mbit",
    type=float,
    default=200.0,
    show_default=True,
    help="The origin registry's egress limit.",
)
@click.option(
    "--node-mbit",
    type=float,
    default=800.0,
    show_default=True,
    help="Each node's limit, both directions.",
)
@click.option(
    "--proxy-mbit",
    type=float,
    default=None,
    help="The central proxy's limit, both directions [default: --node-mbit].",
)
@click.option(
    "--repeat",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Repeats per scenario and N, each from empty caches.",
)
@click.option(
    "--scenarios",
    default=",".join(SCENARIOS),
    show_default=True,
    help="Comma-separated scenarios to run (see `imgaccel-bench list`).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("bench-results"),
    show_default=True,
    help="Where results.{json,md,png} go.",
)
@click.option(
    "--unpack/--no-unpack",
    default=True,
    show_default=True,
    help="--no-unpack: `ctr content fetch`, the transfer only (no unpacking).",
)
@click.option("--quiet", is_flag=True, help="No progress output.")
def run_command(
    nodes: str,
    image_size: str,
    origin_mbit: float,
    node_mbit: float,
    proxy_mbit: float | None,
    repeat: int,
    scenarios: str,
    out: Path,
    unpack: bool,
    quiet: bool,
) -> None:
    """Build the test cluster, run the scenarios side by side, write the report."""
    try:
        counts = tuple(int(n) for n in parse_list(nodes))
    except ValueError:
        raise click.BadParameter(f"not numbers: {nodes!r}", param_hint="--nodes") from None
    names = parse_list(scenarios)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or not counts or min(counts) < 1:
        raise click.UsageError(f"bad --nodes or unknown scenarios {unknown}")
    _preflight()
    params = Params(
        counts,
        parse_size(image_size),
        origin_mbit,
        node_mbit,
        proxy_mbit or node_mbit,
        repeat,
        names,
        unpack,
    )

    def save(report: Report) -> None:  # after every scenario: an interrupted run keeps its data
        write_all(report, out)

    try:
        report = run_async(
            run_bench(params, Progress(quiet=quiet), logs=out / "logs", on_result=save)
        )
    except (KeyboardInterrupt, asyncio.CancelledError):
        click.echo(
            "interrupted; cluster removed; partial results (if any) in " + str(out), err=True
        )
        sys.exit(130)
    paths = write_all(report, out)
    click.echo(markdown(report))
    click.echo(" ".join(str(p) for p in paths.values()), err=True)


@main.command("list")
def list_command() -> None:
    """The scenarios and whether this checkout can run them."""
    for name, scenario in SCENARIOS.items():
        reason = scenario.unavailable()
        click.echo(f"{name:18} {scenario.summary}" + (f"  [{reason}]" if reason else ""))


@main.command("cleanup")
def cleanup_command() -> None:
    """Remove namespaces, links and work directories that killed runs left behind."""
    if not is_root():
        raise click.ClickException("run it as root")
    removed = run_async(remove_leftovers(Path(tempfile.gettempdir())))
    for kind, items in (
        ("namespace", removed.namespaces),
        ("link", removed.links),
        ("work directory", removed.workdirs),
    ):
        for item in items:
            click.echo(f"removed {kind} {item}")
    if not removed:
        click.echo("nothing to clean up")
