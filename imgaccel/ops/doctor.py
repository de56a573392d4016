"""``imgaccel doctor``: every check of a node's setup, and how the answer is shown.

The checks, in order: containerd's ``hosts.toml`` for each registry and its ``config_path``
(when containerd is on the node with its CRI plugin on), dockerd's ``registry-mirrors`` (when
it has a ``daemon.json``),
the node daemon's ``/healthz``, the tracker's ``/healthz`` with the node's certificate and the
expiry of the tracker's certificate, the node's and the CA's (when peer-to-peer is on, by the
settings or by the running node), the TLS files of each upstream that has some, each origin
as the running node last heard from it, the cache directory, the disk under it, and whether
containerd's content store links into the cache.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from imgaccel.ops import certificates, disk, reach, runtime
from imgaccel.ops.check import Check, Status, skip
from imgaccel.ops.origins import origin_checks
from imgaccel.ops.status import NodeUnreachable, fetch_status
from imgaccel.ops.upstreams import upstream_tls
from imgaccel.upstream.config import UpstreamSettings


@dataclass(frozen=True)
class DoctorInputs:
    """What the checks look at: the node's URL and settings, and the runtimes' files."""

    node_url: str
    registries: tuple[str, ...]
    hosts_dir: Path
    containerd_config: Path
    daemon_json: Path
    tracker_url: str | None
    certs_dir: Path | None
    cache_dir: Path
    quota_bytes: int
    min_free_percent: float = 0.0
    containerd_content_dir: Path | None = None
    upstreams: Mapping[str, UpstreamSettings] = field(default_factory=dict)


async def run_checks(inputs: DoctorInputs) -> list[Check]:
    """Every check, in the order they are shown."""
    node, health = await reach.node_health(inputs.node_url)
    status, why_none = None, "the node did not answer"
    if health is not None:
        try:
            status = await fetch_status(inputs.node_url)
        except NodeUnreachable as exc:
            why_none = str(exc)
    if status is not None and inputs.tracker_url is None:
        inputs = _p2p_of_running_node(inputs, status)
    tracker = await reach.tracker_health(inputs.tracker_url, inputs.certs_dir)
    certs = await _certificate_checks(inputs, tracker) if inputs.tracker_url else []
    used = health.get("cache_bytes") if health else None
    if not isinstance(used, int):
        used = disk.cache_bytes_on_disk(inputs.cache_dir) if inputs.cache_dir.is_dir() else 0
    return [
        *runtime_checks(inputs),
        node,
        tracker,
        *certs,
        *upstream_tls(inputs.upstreams),
        *origin_checks(status, why_none),
        disk.cache_writable(inputs.cache_dir),
        disk.disk_headroom(inputs.cache_dir, inputs.quota_bytes, used, inputs.min_free_percent),
        disk.containerd_sharing(inputs.cache_dir, inputs.containerd_content_dir, _shared(status)),
    ]


def _shared(status: dict[str, Any] | None) -> int | None:
    """The bytes the running node keeps once with containerd, when it said."""
    cache = status.get("cache") if status is not None else None
    shared = cache.get("shared_bytes") if isinstance(cache, dict) else None
    return shared if isinstance(shared, int) else None


async def _certificate_checks(inputs: DoctorInputs, tracker: Check) -> list[Check]:
    """The tracker's certificate (when it answered over TLS: an expired one fails the tracker
    check already), then this node's and the CA's."""
    found = certificates.node_certificates(inputs.certs_dir)
    url = inputs.tracker_url
    if url and url.startswith("https://") and tracker.status is Status.OK:
        der = await reach.tracker_certificate(url, inputs.certs_dir)
        found.insert(0, certificates.tracker_certificate(url, der))
    return found


def _p2p_of_running_node(inputs: DoctorInputs, status: dict[str, Any]) -> DoctorInputs:
    """The tracker and certificates the running node uses (on Kubernetes they are its flags,
    which a ``doctor`` in the same pod does not see), from its status document."""
    p2p = status.get("p2p")
    if not isinstance(p2p, dict) or not p2p.get("tracker"):
        return inputs
    certs = p2p.get("certs_dir")
    return replace(
        inputs, tracker_url=str(p2p["tracker"]), certs_dir=Path(certs) if certs else None
    )


def runtime_checks(inputs: DoctorInputs) -> list[Check]:
    """containerd's files when containerd is installed with its CRI plugin on (what kubelet
    pulls through), dockerd's when it has a daemon.json."""
    has_containerd = inputs.hosts_dir.exists() or inputs.containerd_config.exists()
    cri_off = has_containerd and runtime.cri_disabled(inputs.containerd_config)
    checks: list[Check] = []
    if cri_off:  # dockerd's own containerd (docker-ce): pulls are dockerd's
        detail = (
            f"{inputs.containerd_config} disables the CRI plugin: no pulls go through "
            f"containerd's config_path, so {inputs.hosts_dir} is not checked"
        )
        checks.append(skip("containerd", detail))
    elif has_containerd:
        checks += [
            runtime.containerd_hosts(inputs.hosts_dir, registry, inputs.node_url)
            for registry in inputs.registries
        ]
        checks.append(runtime.containerd_config(inputs.containerd_config, inputs.hosts_dir))
    else:
        detail = f"neither {inputs.hosts_dir} nor {inputs.containerd_config} exists"
        checks.append(skip("containerd", detail))
    docker = runtime.dockerd_mirrors(
        inputs.daemon_json, inputs.node_url, primary=not has_containerd or cri_off
    )
    return [*checks, docker]


def failed(checks: list[Check]) -> bool:
    return any(check.status is Status.FAIL for check in checks)


def render(checks: list[Check]) -> str:
    """One line per check (``ok``, ``warn``, ``FAIL``, ``skip``), each fix indented below it,
    and a summary line."""
    lines: list[str] = []
    for check in checks:
        lines.append(f"{check.status.value:<4}  {check.name}: {check.detail}")
        if check.fix:
            lines.append(f"      fix: {check.fix}")
    counts = {s: sum(c.status is s for c in checks) for s in Status}
    summary = ", ".join(f"{n} {s.value}" for s, n in counts.items() if n)
    lines.append(f"{'FAILED' if failed(checks) else 'healthy'}: {summary}")
    return "\n".join(lines)


def render_json(checks: list[Check]) -> str:
    return json.dumps({"ok": not failed(checks), "checks": [c.as_json() for c in checks]}, indent=2)
