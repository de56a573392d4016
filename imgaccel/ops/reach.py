"""Do the node daemon and the tracker answer? ``/healthz`` of each, the tracker with this node's
cluster certificate (it takes no request without one)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL

from imgaccel.address import split_listen
from imgaccel.ops.certificates import tracker_fix
from imgaccel.ops.check import Check, fail, ok, skip
from imgaccel.p2p.certs import CA_CERT, NODE_CERT, NODE_KEY
from imgaccel.tracker.auth import client_context

TIMEOUT = aiohttp.ClientTimeout(total=5)


def local_url(listen: str) -> str:
    """The URL to reach a node listening on ``listen`` from the same host."""
    host, port = split_listen(listen)
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def node_health(url: str) -> tuple[Check, dict[str, Any] | None]:
    """The node's ``/healthz``, and its answer (cache size and blob count) when it gave one."""
    name = "node daemon"
    fix = (
        "start it: `systemctl start imgaccel-node` (then `journalctl -u imgaccel-node`), or on "
        "Kubernetes `kubectl -n imgaccel get pods -o wide -l app.kubernetes.io/component=node` "
        "and read the logs of this node's pod"
    )
    try:
        async with (
            aiohttp.ClientSession(timeout=TIMEOUT) as session,
            session.get(f"{url}/healthz") as resp,
        ):
            answer = await resp.json(content_type=None) if resp.status == 200 else None
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return fail(name, f"nothing answers at {url}: {_reason(exc)}", fix), None
    if not isinstance(answer, dict) or answer.get("status") != "ok":
        detail = f"{url}/healthz did not answer like an imgaccel node (another program there?)"
        return fail(name, detail, fix), None
    detail = f"imgaccel {answer.get('version', '?')} answers at {url}"
    return ok(name, detail), answer


async def tracker_health(url: str | None, certs_dir: Path | None) -> Check:
    """The tracker's ``/healthz``, over mTLS with ``certs_dir``'s node certificate."""
    name = "tracker"
    if not url:
        return skip(name, "no tracker configured (p2p.tracker_url, --tracker): peer-to-peer off")
    try:
        context = _client_tls(url, certs_dir)
    except (OSError, ssl.SSLError, ValueError) as exc:
        return fail(name, f"cannot use the cluster certificates: {exc}", _CERTS_FIX)
    try:
        async with (
            aiohttp.ClientSession(timeout=TIMEOUT) as session,
            session.get(f"{url.rstrip('/')}/healthz", ssl=context or True) as resp,
        ):
            status = resp.status
    except aiohttp.ClientConnectorCertificateError as exc:
        detail = f"{url}: the tracker's certificate does not verify: {exc.certificate_error}"
        return fail(name, detail, tracker_fix(url))
    except aiohttp.ClientSSLError as exc:
        detail = f"TLS with {url} failed ({_reason(exc)}): is node.crt from the tracker's CA?"
        return fail(name, detail, _CERTS_FIX)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return fail(name, f"cannot reach {url}: {_reason(exc)}", _unreachable_fix(url))
    if status != 200:
        return fail(name, f"{url}/healthz answered {status}", _unreachable_fix(url))
    return ok(name, f"{url} answers" + (" (mTLS with this node's certificate)" if context else ""))


async def tracker_certificate(url: str, certs_dir: Path | None) -> bytes | None:
    """The certificate (DER) an ``https://`` tracker presents in a handshake with this node's
    certificate; None when there is none to have (``tracker_health`` says why)."""
    try:
        context = _client_tls(url, certs_dir)
    except (OSError, ssl.SSLError, ValueError):
        return None
    parsed = URL(url)
    if context is None or parsed.host is None:
        return None
    try:
        async with asyncio.timeout(TIMEOUT.total):
            _, writer = await asyncio.open_connection(parsed.host, parsed.port, ssl=context)
    except (OSError, TimeoutError):
        return None
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return der if isinstance(der, bytes) else None


def _client_tls(url: str, certs_dir: Path | None) -> ssl.SSLContext | None:
    if not url.startswith("https://"):
        return None
    if certs_dir is None:
        raise ValueError("an https:// tracker needs p2p.certs_dir (--certs-dir)")
    for file in (CA_CERT, NODE_CERT, NODE_KEY):
        if not (certs_dir / file).is_file():
            raise ValueError(f"{certs_dir / file} is missing")
    return client_context(certs_dir / CA_CERT, certs_dir / NODE_CERT, certs_dir / NODE_KEY)


_CERTS_FIX = (
    "issue one from the cluster CA: `imgaccel certs issue --ca-dir ./imgaccel-ca --out DIR`, "
    "then put ca.crt, node.crt and node.key in p2p.certs_dir (Secret imgaccel-node-tls)"
)


def _unreachable_fix(url: str) -> str:
    return (
        f"is the tracker running (`kubectl -n imgaccel get deploy imgaccel-tracker`) and does "
        f"{url} resolve from this host? hostNetwork pods need dnsPolicy ClusterFirstWithHostNet"
    )


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
