"""``imgaccel prewarm``: warm one node's cache, or create and follow a cluster prewarm job."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from imgaccel.prewarm.errors import EXIT_CODES_HELP

#: Seconds ``--wait`` allows a job that targets no node before it fails. Nodes register with the
#: tracker when they ask it for jobs, which every running node does all the time, so a node that
#: matches is counted at once; the grace is for nodes that are starting.
NO_NODE_GRACE = 60.0


_HELP = f"""Fetch images into a node's cache before anyone pulls them.

\b
  imgaccel prewarm IMAGE...                      warm the local node (or --node URL)
  imgaccel prewarm --cluster IMAGE...            a job on the tracker: every node warms them
  imgaccel prewarm status [JOB] [--wait]         cluster jobs and their progress
  imgaccel prewarm cancel JOB                    stop handing a job out; nodes running it stop

A cluster job is handed to every node it targets, also to nodes that join later, until it
expires (--expires-seconds; the tracker's default is a day) or is cancelled.

Each IMAGE is resolved through the node (tag or digest; an OCI index or Docker manifest list
narrows to --platform, to every platform with --all-platforms, or else to the platform of the
machine running this command; a cluster job's nodes each take their own); the config and layers
then take the node's own path (cache, peers, origin) and are pinned for --pin-seconds. Private
images use --username and --password-stdin, else the node's configured credentials (a cluster
job always uses the nodes' configured credentials and prefetch.pin_seconds).

--wait gives up on a job that targets no node (no node the tracker knows has its labels and is
in its percentage) after {NO_NODE_GRACE:g} seconds, with exit code 7; the job stays open for
nodes that join later.

{EXIT_CODES_HELP}
"""


def _http_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``value`` if it is an http:// or https:// URL with a host (a usage error otherwise)."""
    from yarl import URL

    if value is None:
        return None
    try:
        ok = value.lower().startswith(("http://", "https://")) and bool(URL(value).host)
    except ValueError:
        ok = False
    if not ok:
        raise click.BadParameter(
            f"{value!r} is not an http:// or https:// URL (like http://127.0.0.1:65001)"
        )
    return value


@click.command(help=_HELP)
@click.argument("images", nargs=-1, required=True, metavar="IMAGE... | status [JOB] | cancel JOB")
@click.option(
    "--node",
    "node_url",
    default="http://127.0.0.1:65001",
    show_default=True,
    envvar="IMGACCEL_NODE",
    metavar="URL",
    callback=_http_url,
    help="The node daemon to warm.",
)
@click.option("--platform", metavar="OS/ARCH[/VARIANT]", help="The platform to pick from an index.")
@click.option("--all-platforms", is_flag=True, help="Warm every platform of an index.")
@click.option("--username", help="Registry user for private images.")
@click.option("--password-stdin", is_flag=True, help="Read the registry password from stdin.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per image (or job).")
@click.option(
    "--pin-seconds",
    type=float,
    default=86400.0,
    show_default=True,
    help="Pin the warmed blobs against eviction this long.",
)
@click.option("--cluster", is_flag=True, help="Create a prewarm job for the cluster.")
@click.option(
    "--tracker",
    envvar="IMGACCEL_P2P__TRACKER_URL",
    metavar="URL",
    callback=_http_url,
    help="The tracker (--cluster).",
)
@click.option(
    "--certs-dir",
    envvar="IMGACCEL_P2P__CERTS_DIR",
    type=click.Path(file_okay=False, path_type=Path),
    help="ca.crt, node.crt, node.key for an HTTPS tracker.",
)
@click.option(
    "--nodes",
    "labels",
    multiple=True,
    metavar="LABEL=VALUE",
    help="Only nodes with this label (repeatable; all must match).",
)
@click.option("--percent", type=click.IntRange(1, 100), default=100, help="Only N% of the nodes.")
@click.option(
    "--expires-seconds",
    type=click.FloatRange(min=0),
    help="With --cluster: hand the job out this long (0: until cancelled).  "
    "[default: the tracker's job_ttl_seconds, 86400]",
)
@click.option("--wait", is_flag=True, help="With --cluster or status: follow until done.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="With --wait: give up after this long (exit code 8); the job goes on.",
)
@click.pass_context
def prewarm(ctx: click.Context, /, images: tuple[str, ...], **options: Any) -> None:
    if options["platform"] and options["all_platforms"]:
        raise click.UsageError("--platform and --all-platforms exclude each other")
    if options["timeout"] is not None and not options["wait"]:
        raise click.UsageError("--timeout is for --wait")
    mode = "cluster" if options["cluster"] else "local"
    mode = images[0] if images[0] in ("status", "cancel") else mode
    _refuse_ignored(ctx, mode)
    if images[0] == "status":
        _exit(asyncio.run(_status(images[1:], options)))
    if images[0] == "cancel":
        if len(images) != 2:
            raise click.UsageError("cancel takes one JOB id")
        _exit(asyncio.run(_cancel(images[1], options)))
    if options["cluster"]:
        _exit(asyncio.run(_cluster(list(images), options)))
    authorization = _authorization(options)
    _exit(asyncio.run(_local(list(images), options, authorization)))


def _exit(code: int) -> None:
    sys.exit(code)


_ONE_NODE = ("node_url", "username", "password_stdin", "pin_seconds")
_NEW_JOB = ("labels", "percent", "expires_seconds")
#: mode -> (options it would ignore, why); only options given on the command line are refused
#: (IMGACCEL_NODE or IMGACCEL_P2P__TRACKER_URL set in the environment are no mistake).
_REFUSED = {
    "local": (("tracker", *_NEW_JOB, "wait"), "is for --cluster jobs"),
    "cluster": (
        _ONE_NODE,
        "is for warming one node (without --cluster): a cluster job's nodes use their "
        "configured registry credentials and prefetch.pin_seconds",
    ),
    "status": (("platform", "all_platforms", *_ONE_NODE, *_NEW_JOB), "is not for status"),
    "cancel": (("platform", "all_platforms", *_ONE_NODE, *_NEW_JOB, "wait"), "is not for cancel"),
}


def _refuse_ignored(ctx: click.Context, mode: str) -> None:
    """A usage error for an option that ``mode`` would silently ignore."""
    from click.core import ParameterSource

    names, why = _REFUSED[mode]
    for param in ctx.command.params:
        if param.name in names and ctx.get_parameter_source(param.name) == (
            ParameterSource.COMMANDLINE
        ):
            raise click.UsageError(f"{param.opts[0]} {why}")


def _authorization(options: dict[str, Any]) -> str | None:
    if not options["username"]:
        if options["password_stdin"]:
            raise click.UsageError("--password-stdin needs --username")
        return None
    if not options["password_stdin"]:
        raise click.UsageError("--username needs --password-stdin (the password is read there)")
    from imgaccel.upstream.auth import basic_header

    password = sys.stdin.readline().rstrip("\r\n")
    return basic_header(options["username"], password)


# -- one node --------------------------------------------------------------------------------------


async def _local(images: list[str], options: dict[str, Any], authorization: str | None) -> int:
    import aiohttp

    from imgaccel.prewarm.node import NodeAPI

    worst = 0
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=600)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        api = NodeAPI(options["node_url"], http, authorization)
        for image in images:
            code = await _warm_one(api, image, options)
            worst = worst or code
    return worst


async def _warm_one(api: Any, image: str, options: dict[str, Any]) -> int:
    from imgaccel.errors import ImgaccelError
    from imgaccel.oci.reference import ImageRef
    from imgaccel.prewarm.errors import PrewarmError
    from imgaccel.prewarm.node import warm
    from imgaccel.prewarm.plan import ImagePlan, resolve
    from imgaccel.prewarm.platform import Platform

    started, plan = time.monotonic(), None
    try:
        ref = ImageRef.parse(image)
        platform = Platform.parse(options["platform"]) if options["platform"] else None
        plan = await resolve(api, ref, platform, options["all_platforms"])
        with _Bar(plan, options["as_json"]) as bar:
            await warm(api, plan, bar.update, pin_seconds=options["pin_seconds"])
    except (ImgaccelError, ValueError) as exc:
        code = exc.exit_code if isinstance(exc, PrewarmError) else 1
        if isinstance(exc, ImgaccelError) and not isinstance(exc, PrewarmError):
            code = 3 if "invalid" in str(exc).lower() else 1
        _report(image, plan, started, options["as_json"], error=str(exc), code=code)
        return code
    assert isinstance(plan, ImagePlan)
    _report(image, plan, started, options["as_json"])
    return 0


def _report(
    image: str,
    plan: Any,
    started: float,
    as_json: bool,
    error: str | None = None,
    code: int = 0,
) -> None:
    seconds = time.monotonic() - started
    total = plan.total_bytes if plan is not None else 0
    if as_json:
        record = {
            "image": image,
            "status": "error" if error else "ok",
            "platforms": plan.platforms if plan else [],
            "manifests": plan.manifests if plan else [],
            "blobs": len(plan.blobs) if plan else 0,
            "bytes": total,
            "seconds": round(seconds, 3),
        }
        if error:
            record |= {"error": error, "exit_code": code}
        click.echo(json.dumps(record))
    elif error:
        click.echo(f"{image}: error: {error}", err=True)
    else:
        platforms = f" [{', '.join(plan.platforms)}]" if plan.platforms else ""
        click.echo(
            f"{image}{platforms}: warmed {len(plan.blobs)} blobs, {_size(total)} "
            f"in {seconds:.1f}s ({_size(total / max(seconds, 1e-6))}/s)"
        )


class _Bar:
    """A progress bar of one image's bytes on a terminal; a start line otherwise."""

    def __init__(self, plan: Any, quiet: bool) -> None:
        self._plan = plan
        self._tty = not quiet and sys.stderr.isatty()
        self._quiet = quiet
        self._bar: Any = None
        self._started = time.monotonic()
        self._done = 0

    def __enter__(self) -> _Bar:
        label = f"{self._plan.ref} ({len(self._plan.blobs)} blobs)"
        if self._tty:
            self._bar = click.progressbar(
                length=max(self._plan.total_bytes, 1),
                label=label,
                file=sys.stderr,
                show_eta=True,
                show_percent=True,
                item_show_func=lambda _: self._rate(),
            )
            self._bar.__enter__()
        elif not self._quiet:
            click.echo(f"warming {label}, {_size(self._plan.total_bytes)}", err=True)
        return self

    def _rate(self) -> str:
        seconds = max(time.monotonic() - self._started, 1e-6)
        return f"{_size(self._done)} at {_size(self._done / seconds)}/s"

    def update(self, nbytes: int) -> None:
        self._done += nbytes
        if self._bar is not None:
            self._bar.update(nbytes, self._done)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


# -- the cluster -----------------------------------------------------------------------------------

#: A job's end states other than "done": ``status`` and ``--wait`` exit with 7 on them.
_UNFINISHED = ("failed", "cancelled", "expired")


def _jobs_client(options: dict[str, Any], http: Any) -> Any:
    from imgaccel.prewarm.jobs import JobsClient
    from imgaccel.tracker.auth import client_context

    tracker = options["tracker"]
    if not tracker:
        raise click.UsageError(
            "--cluster and status need --tracker URL (or IMGACCEL_P2P__TRACKER_URL)"
        )
    ssl_context = None
    if tracker.lower().startswith("https://"):
        certs = options["certs_dir"]
        if certs is None:
            raise click.UsageError(
                "an https:// tracker needs --certs-dir with the cluster certificate"
            )
        try:
            ssl_context = client_context(certs / "ca.crt", certs / "node.crt", certs / "node.key")
        except OSError as exc:  # also ssl.SSLError: not PEM, or a key that is not the cert's
            raise click.BadParameter(
                f"cannot load ca.crt, node.crt and node.key from {certs}: {exc}",
                param_hint="--certs-dir",
            ) from exc
    return JobsClient(tracker, http, ssl_context)


def _labels(pairs: tuple[str, ...]) -> dict[str, str]:
    labels = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.UsageError(f"--nodes wants LABEL=VALUE, got {pair!r}")
        labels[key] = value
    return labels


async def _cluster(images: list[str], options: dict[str, Any]) -> int:
    import aiohttp

    from imgaccel.oci.reference import ImageRef
    from imgaccel.prewarm.errors import PrewarmError

    try:
        for image in images:
            ImageRef.parse(image)
    except (ValueError, Exception) as exc:
        click.echo(f"invalid image reference: {exc}", err=True)
        return 3
    async with aiohttp.ClientSession() as http:
        jobs = _jobs_client(options, http)
        try:
            job = await jobs.create(
                images,
                platform=options["platform"],
                all_platforms=options["all_platforms"],
                nodes=_labels(options["labels"]),
                percent=options["percent"],
                expires_seconds=options["expires_seconds"],
            )
            _show(job, options["as_json"])
            if options["wait"]:
                return await _follow(jobs, job["id"], options["as_json"], options["timeout"])
        except PrewarmError as exc:
            click.echo(f"error: {exc}", err=True)
            return exc.exit_code
    return 0


async def _status(args: tuple[str, ...], options: dict[str, Any]) -> int:
    import aiohttp

    from imgaccel.prewarm.errors import PrewarmError

    async with aiohttp.ClientSession() as http:
        jobs = _jobs_client(options, http)
        try:
            if not args:
                for job in await jobs.jobs():
                    _show(job, options["as_json"])
                return 0
            if options["wait"]:
                return await _follow(jobs, args[0], options["as_json"], options["timeout"])
            job = await jobs.job(args[0])
            _show(job, options["as_json"])
            return 7 if job["state"] in _UNFINISHED else 0
        except PrewarmError as exc:
            click.echo(f"error: {exc}", err=True)
            return exc.exit_code


async def _cancel(job_id: str, options: dict[str, Any]) -> int:
    import aiohttp

    from imgaccel.prewarm.errors import PrewarmError

    async with aiohttp.ClientSession() as http:
        try:
            job = await _jobs_client(options, http).cancel(job_id)
        except PrewarmError as exc:
            click.echo(f"error: {exc}", err=True)
            return exc.exit_code
    _show(job, options["as_json"])
    return 0


def _show(job: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(job))
        return
    click.echo(
        f"job {job['id']}: {job['state']}, nodes {job['nodes_done']}/{job['nodes_total']} done"
        f"{', ' + str(job['nodes_failed']) + ' failed' if job['nodes_failed'] else ''}, "
        f"{_size(job['bytes_done'])} of {_size(job['bytes_total'])} "
        f"({' '.join(job['images'])})"
    )
    for node, progress in job.get("nodes", {}).items():
        if progress.get("error"):
            click.echo(f"  {node}: {progress['state']}: {progress['error']}")


async def _follow(
    jobs: Any, job_id: str, as_json: bool, timeout: float | None = None, every: float = 1.0
) -> int:
    """Poll the job until it ends (0 done, 7 otherwise); WaitTimedOut after ``timeout``."""
    from imgaccel.prewarm.errors import WaitTimedOut

    tty = not as_json and sys.stderr.isatty()
    deadline = asyncio.timeout(timeout)
    try:
        async with deadline:
            return await _poll(jobs, job_id, as_json, tty, every)
    except TimeoutError:
        if not deadline.expired():
            raise
        if tty:
            click.echo(err=True)
        raise WaitTimedOut(
            f"job {job_id} did not end within --timeout {timeout:g}s; it goes on "
            f"(imgaccel prewarm status {job_id})"
        ) from None


async def _poll(jobs: Any, job_id: str, as_json: bool, tty: bool, every: float) -> int:
    """Poll the job until it is done or failed; a line of nodes done on a terminal."""
    from imgaccel.prewarm.errors import JobFailed

    last, started = "", time.monotonic()
    while True:
        job = await jobs.job(job_id)
        line = f"{job['state']}: {job['nodes_done']}/{job['nodes_total']} nodes, " + _size(
            job["bytes_done"]
        )
        if tty:
            click.echo(f"\r{line}   ", nl=False, err=True)
        elif line != last and not as_json:
            click.echo(line, err=True)
        last = line
        if job["state"] in ("done", *_UNFINISHED):
            if tty:
                click.echo(err=True)
            _show(job, as_json)
            return 7 if job["state"] in _UNFINISHED else 0
        if job["nodes_total"] == 0 and time.monotonic() - started >= NO_NODE_GRACE:
            if tty:
                click.echo(err=True)
            raise JobFailed(
                f"job {job_id} targets no node after {NO_NODE_GRACE:g}s: no node the tracker "
                "knows has its --nodes labels and falls in its --percent; it stays open for "
                f"nodes that join later (imgaccel prewarm cancel {job_id} ends it)"
            )
        await asyncio.sleep(every)
