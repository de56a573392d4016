"""Do the node daemon and the tracker answer? ``/healthz`` of each, the tracker with this node's
cluster certificate (it takes no request without one)."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path
from typing import Any

import aiohttp
from cryptography import x509

from imgaccel.address import split_listen
from imgaccel.ops.check import Check, fail, ok, skip, warn
from imgaccel.p2p.certs import CA_CERT, NODE_CERT, NODE_KEY
from imgaccel.tracker.auth import client_context

TIMEOUT = aiohttp.ClientTimeout(total=5)
#: A certificate closer than this to its end is worth a warning.
EXPIRY_WARNING = dt.timedelta(days=30)


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
        return fail(name, detail, _TRACKER_CERT_FIX)
    except aiohttp.ClientSSLError as exc:
        detail = f"TLS with {url} failed ({_reason(exc)}): is node.crt from the tracker's CA?"
        return fail(name, detail, _CERTS_FIX)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return fail(name, f"cannot reach {url}: {_reason(exc)}", _unreachable_fix(url))
    if status != 200:
        return fail(name, f"{url}/healthz answered {status}", _unreachable_fix(url))
    return ok(name, f"{url} answers" + (" (mTLS with this node's certificate)" if context else ""))


def _client_tls(url: str, certs_dir: Path | None) -> ssl.SSLContext | None:
    if not url.startswith("https://"):
        return None
    if certs_dir is None:
        raise ValueError("an https:// tracker needs p2p.certs_dir (--certs-dir)")
    for file in (CA_CERT, NODE_CERT, NODE_KEY):
        if not (certs_dir / file).is_file():
            raise ValueError(f"{certs_dir / file} is missing")
    return client_context(certs_dir / CA_CERT, certs_dir / NODE_CERT, certs_dir / NODE_KEY)


def certificate(certs_dir: Path | None, now: dt.datetime | None = None) -> Check:
    """This node's cluster certificate is valid now and not about to expire."""
    name = "node certificate"
    if certs_dir is None or not (certs_dir / NODE_CERT).is_file():
        return skip(name, "no node.crt (p2p.certs_dir unset or empty)")
    try:
        cert = x509.load_pem_x509_certificate((certs_dir / NODE_CERT).read_bytes())
    except (OSError, ValueError) as exc:
        return fail(name, f"{certs_dir / NODE_CERT}: {exc}", _CERTS_FIX)
    now = now or dt.datetime.now(dt.UTC)
    left = cert.not_valid_after_utc - now
    if left <= dt.timedelta(0):
        return fail(name, f"{certs_dir / NODE_CERT} expired {-left.days} days ago", _CERTS_FIX)
    if left < EXPIRY_WARNING:
        return warn(name, f"{certs_dir / NODE_CERT} expires in {left.days} days", _CERTS_FIX)
    return ok(name, f"{certs_dir / NODE_CERT} valid for {left.days} more days")


_CERTS_FIX = (
    "issue one from the cluster CA: `imgaccel certs issue --ca-dir ./imgaccel-ca --out DIR`, "
    "then put ca.crt, node.crt and node.key in p2p.certs_dir (Secret imgaccel-node-tls)"
)
_TRACKER_CERT_FIX = (
    "issue the tracker's certificate from this cluster CA and for the name nodes use: "
    "`imgaccel certs issue --ca-dir ./imgaccel-ca --out tracker --dns <tracker host>`"
)


def _unreachable_fix(url: str) -> str:
    return (
        f"is the tracker running (`kubectl -n imgaccel get deploy imgaccel-tracker`) and does "
        f"{url} resolve from this host? hostNetwork pods need dnsPolicy ClusterFirstWithHostNet"
    )


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
