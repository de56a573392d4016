"""The renewal ``imgaccel doctor`` prints (and docs/deploy.md shows) names the Secrets and the
workloads deploy/kubernetes really has: a restart of the wrong name would leave the old
certificate in use."""

from __future__ import annotations

import re

from imgaccel.ops.certificates import NODE_FIX, tracker_fix

from .manifests import all_resources

KINDS = {"ds": "DaemonSet", "sts": "StatefulSet", "deploy": "Deployment"}


def _mounted_secrets() -> dict[str, set[str]]:
    """``Kind/name`` of each workload -> the Secrets its pods mount."""
    found: dict[str, set[str]] = {}
    for _, doc in all_resources():
        if doc["kind"] not in KINDS.values():
            continue
        volumes = doc["spec"]["template"]["spec"].get("volumes", [])
        secrets = {v["secret"]["secretName"] for v in volumes if "secret" in v}
        found[f"{doc['kind']}/{doc['metadata']['name']}"] = secrets
    return found


def _restarted(fix: str) -> set[str]:
    [workloads] = re.findall(r"rollout restart ([^`]+)`", fix)
    return {f"{KINDS[short]}/{name}" for short, name in (w.split("/") for w in workloads.split())}


def test_the_node_renewal_restarts_every_workload_that_mounts_the_node_secret() -> None:
    [secret] = re.findall(r"secret generic (\S+)", NODE_FIX)
    mounting = {workload for workload, secrets in _mounted_secrets().items() if secret in secrets}

    assert (
        mounting
        == _restarted(NODE_FIX)
        == {"DaemonSet/imgaccel-node", "StatefulSet/imgaccel-seeder"}
    )


def test_the_tracker_renewal_restarts_the_tracker_that_mounts_its_secret() -> None:
    fix = tracker_fix("https://imgaccel-tracker.imgaccel.svc:6970")
    [secret] = re.findall(r"secret generic (\S+)", fix)
    mounting = {workload for workload, secrets in _mounted_secrets().items() if secret in secrets}

    assert mounting == _restarted(fix) == {"Deployment/imgaccel-tracker"}
    assert "--dns imgaccel-tracker.imgaccel.svc`" in fix
