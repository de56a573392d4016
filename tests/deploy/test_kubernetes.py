"""deploy/kubernetes: manifests Kubernetes accepts, and an init container that does its job.

Rendering: pip has no kustomize, so these tests read each ``kustomization.yaml`` themselves
(the manifests use only ``resources``, ``namespace``, ``labels`` and ``images``), check that
every listed file exists and that no manifest is left out, and validate every document
against the Kubernetes 1.29 OpenAPI schemas that ``kubernetes-validate`` ships (offline, strict:
an unknown field is an error). When ``kubectl`` is installed, ``kubectl kustomize`` renders
each kustomization as well.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from imgaccel.cli import main
from imgaccel.settings import load_settings

from .manifests import (
    KUBERNETES,
    KUSTOMIZATION,
    Doc,
    all_resources,
    container,
    documents,
    find,
    kustomizations,
    pod_spec,
    resources,
)

K8S_VERSION = "1.29"
#: Custom resources the schemas do not cover, and the operator that defines each.
CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
NODE = KUBERNETES / "node-daemonset.yaml"
UNINSTALL = KUBERNETES / "uninstall" / "uninstall-daemonset.yaml"
HOST_CERTS_D = "/etc/containerd/certs.d"


@pytest.mark.parametrize("path", kustomizations(), ids=lambda p: str(p.relative_to(KUBERNETES)))
def test_kustomization_lists_every_manifest_beside_it(path: Path) -> None:
    listed = resources(path)
    assert all(p.is_file() for p in listed), [str(p) for p in listed if not p.is_file()]
    present = {p for p in path.parent.glob("*.yaml") if p.name != KUSTOMIZATION}
    assert present == set(listed)
    namespace = yaml.safe_load(path.read_text())["namespace"]
    for manifest in listed:
        for doc in documents(manifest):
            assert doc["metadata"].get("namespace", namespace) == namespace, manifest


@pytest.mark.parametrize(
    ("path", "doc"),
    list(all_resources()),
    ids=lambda v: str(v.relative_to(KUBERNETES)) if isinstance(v, Path) else v["kind"],
)
def test_manifest_is_valid_kubernetes(path: Path, doc: Doc) -> None:
    if (doc["apiVersion"], doc["kind"]) in CRDS:
        with pytest.raises(kubernetes_validate.SchemaNotFoundError):
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        assert doc["metadata"]["name"] and doc["spec"]
        return
    assert kubernetes_validate.validate(doc, K8S_VERSION, strict=True) == K8S_VERSION


def test_a_typo_fails_validation() -> None:
    """The validator is not a rubber stamp: strict mode rejects unknown fields."""
    daemonset = find(NODE, "DaemonSet", "imgaccel-node")
    daemonset["spec"]["template"]["spec"]["hostNetwerk"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(daemonset, K8S_VERSION, strict=True)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
@pytest.mark.parametrize("path", kustomizations(), ids=lambda p: str(p.relative_to(KUBERNETES)))
def test_kubectl_kustomize_renders(path: Path) -> None:
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(path.parent)], capture_output=True, check=True, timeout=60
    ).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d is not None]
    assert len(docs) == sum(len(documents(p)) for p in resources(path))


def test_configmap_holds_settings_the_node_accepts(tmp_path: Path) -> None:
    config = find(KUBERNETES / "configmap.yaml", "ConfigMap", "imgaccel-config")
    (tmp_path / "config.toml").write_text(config["data"]["config.toml"])
    settings = load_settings(tmp_path / "config.toml")
    node = container(pod_spec(find(NODE, "DaemonSet", "imgaccel-node")), "node")
    env = {item["name"]: item["value"] for item in node["env"]}
    mounts = {m["mountPath"] for m in node["volumeMounts"]}
    assert env["IMGACCEL_CONFIG"] in mounts
    assert str(settings.cache.dir) in mounts  # the hostPath cache
    port = int(settings.listen.rpartition(":")[2])
    assert node["livenessProbe"]["httpGet"] == {
        "host": "127.0.0.1",
        "path": "/healthz",
        "port": port,
    }
    assert settings.p2p.tracker_url == "https://imgaccel-tracker.imgaccel.svc:6970"


def test_node_daemonset_is_shaped_for_gpu_nodes() -> None:
    daemonset = find(NODE, "DaemonSet", "imgaccel-node")
    spec = pod_spec(daemonset)
    assert spec["hostNetwork"] is True
    assert spec["dnsPolicy"] == "ClusterFirstWithHostNet"  # to resolve the tracker Service
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]
    assert daemonset["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] == "10%"
    for item in [*spec["containers"], *spec["initContainers"]]:
        assert item["resources"]["requests"] and item["resources"]["limits"], item["name"]


def _host_command(
    spec: Doc, command: list[str], hosts_dir: Path, containers: list[Doc]
) -> list[str]:
    """``command`` with the host's certs.d mount path replaced by ``hosts_dir``."""
    volume = next(
        v["name"] for v in spec["volumes"] if v.get("hostPath", {}).get("path") == HOST_CERTS_D
    )
    mount = next(
        m["mountPath"] for c in containers for m in c["volumeMounts"] if m["name"] == volume
    )
    assert command[0] == "imgaccel"
    assert command[command.index("--hosts-dir") + 1] == mount
    return [str(hosts_dir) if arg == mount else arg for arg in command[1:]]


def _run(args: list[str]) -> str:
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _snapshot(root: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


def test_init_container_installs_idempotently_and_uninstall_restores(tmp_path: Path) -> None:
    hosts = tmp_path / "certs.d"
    (hosts / "registry.internal").mkdir(parents=True)  # a node's own config stays untouched
    (hosts / "registry.internal" / "hosts.toml").write_text('server = "http://registry.internal"\n')
    before = _snapshot(tmp_path)

    spec = pod_spec(find(NODE, "DaemonSet", "imgaccel-node"))
    init = container(spec, "containerd-config", init=True)
    install = _host_command(spec, init["command"], hosts, [init])
    _run(install)
    installed = _snapshot(tmp_path)
    assert installed != before
    assert "unchanged" in _run(install)
    assert _snapshot(tmp_path) == installed

    uninstall_spec = pod_spec(find(UNINSTALL, "DaemonSet", "imgaccel-uninstall"))
    remove = container(uninstall_spec, "containerd-config-remove", init=True)
    uninstall = _host_command(uninstall_spec, remove["command"], hosts, [remove])
    assert uninstall == [*_without_mirror(install), "--remove"]  # the same registries
    _run(uninstall)
    assert _snapshot(tmp_path) == before


def test_prestop_removes_what_the_init_container_added(tmp_path: Path) -> None:
    hosts = tmp_path / "certs.d"
    hosts.mkdir()
    spec = pod_spec(find(NODE, "DaemonSet", "imgaccel-node"))
    init = container(spec, "containerd-config", init=True)
    node = container(spec, "node")
    _run(_host_command(spec, init["command"], hosts, [init]))
    _run(_host_command(spec, node["lifecycle"]["preStop"]["exec"]["command"], hosts, [node]))
    assert _snapshot(tmp_path) == {"certs.d": None}


def _without_mirror(args: list[str]) -> list[str]:
    if "--mirror" not in args:
        return args
    at = args.index("--mirror")
    return args[:at] + args[at + 2 :]
