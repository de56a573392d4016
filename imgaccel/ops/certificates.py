"""Are the cluster certificates good for a while yet? This node's ``node.crt`` and ``ca.crt``
(``p2p.certs_dir``) and the certificate the tracker presents.

Nothing renews them, and an expired one fails quietly: peers and the tracker refuse it at the
TLS handshake and every node falls back to the origin. So each check FAILs when its certificate
is expired or not yet valid, and warns within :data:`~imgaccel.p2p.certs.EXPIRY_WARNING` (30
days), with the renewal as the fix.
"""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

from yarl import URL

from imgaccel.ops.check import Check, fail, ok, skip, warn
from imgaccel.p2p.certs import CA_CERT, NODE_CERT, Validity

_SECRET = (
    "`kubectl -n imgaccel create secret generic {secret} --from-file={out} --dry-run=client "
    "-o yaml | kubectl apply -f -` and `kubectl -n imgaccel rollout restart {workloads}`"
)
NODE_FIX = (
    "renew it: `imgaccel certs issue --ca-dir ./imgaccel-ca --out ./node`, then "
    + _SECRET.format(
        secret="imgaccel-node-tls", out="./node", workloads="ds/imgaccel-node sts/imgaccel-seeder"
    )
    + " (without Kubernetes: copy ./node into p2p.certs_dir and restart the node)"
)
CA_FIX = (
    "make a new CA (`imgaccel certs init --dir ./imgaccel-ca-new`), issue the node's and the "
    "tracker's certificates from it, replace both Secrets and restart the tracker, the seeders "
    "and the nodes: docs/deploy.md, 'Renewing certificates'"
)


def tracker_fix(url: str) -> str:
    """How to renew the certificate of the tracker at ``url`` (named as the nodes reach it)."""
    host = URL(url).host or "imgaccel-tracker.imgaccel.svc"
    return (
        f"renew it: `imgaccel certs issue --ca-dir ./imgaccel-ca --out ./tracker --dns {host}`, "
        "then "
        + _SECRET.format(
            secret="imgaccel-tracker-tls", out="./tracker", workloads="deploy/imgaccel-tracker"
        )
    )


def node_certificates(certs_dir: Path | None, now: dt.datetime | None = None) -> list[Check]:
    """``node certificate`` (what this node presents) and ``cluster CA`` (what it trusts)."""
    files = (("node certificate", NODE_CERT, NODE_FIX), ("cluster CA", CA_CERT, CA_FIX))
    checks: list[Check] = []
    for name, file, fix in files:
        path = None if certs_dir is None else certs_dir / file
        if path is None or not path.is_file():
            checks.append(skip(name, f"no {file} (p2p.certs_dir unset or empty)"))
            continue
        try:
            validity = Validity.of(path.read_bytes())
        except (OSError, ValueError) as exc:
            checks.append(fail(name, f"{path}: {exc}", fix))
            continue
        checks.append(judge(name, str(path), validity, fix, now))
    return checks


def tracker_certificate(url: str, der: bytes | None, now: dt.datetime | None = None) -> Check:
    """``tracker certificate``: the one the tracker presented (DER), None if it gave none."""
    name = "tracker certificate"
    if der is None:
        return skip(name, f"{url} presented no certificate to check")
    validity = Validity.of(ssl.DER_cert_to_PEM_cert(der).encode("ascii"))
    return judge(name, url, validity, tracker_fix(url), now)


def judge(
    name: str, where: str, validity: Validity, fix: str, now: dt.datetime | None = None
) -> Check:
    """FAIL when not valid now, warn when it ends within 30 days, else ok."""
    now = now or dt.datetime.now(dt.UTC)
    detail = f"{where}: {validity.describe(now)}"
    if not validity.valid(now):
        return fail(name, f"{detail}; peer-to-peer is off: pulls go to the origin", fix)
    if validity.needs_renewal(now):
        return warn(name, f"{detail}; peer-to-peer stops when it ends", fix)
    return ok(name, detail)
