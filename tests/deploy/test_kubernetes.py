"""deploy/kubernetes: manifests Kubernetes accepts, and an init container that does its job.

Rendering: pip has no kustomize, so these tests read each ``kustomization.yaml`` themselves
(the manifests use only ``resources``, ``namespace`` and ``images``), check that
every listed file exists and that no manifest is left out, and validate every document
against the Kubernetes 1.29 OpenAPI schemas that ``kubernetes-validate`` ships (offline, strict:
an unknown field is an error). When ``kubectl`` is installed, ``kubectl kustomize`` renders
each kustomization as well.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import click
import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from imgaccel.cache.config import CacheSettings
from imgaccel.cli import main
from imgaccel.cli.node import node as node_command
from imgaccel.cli.options import settings_from
from imgaccel.cli.seeder import seeder as seeder_command
from imgaccel.cli.tracker import tracker as tracker_command
from imgaccel.tracker import TrackerSettings

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
CRDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}
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


#: What kustomize v2 (kubectl 1.14-1.20; Debian 12's kubernetes-client is 1.20) knows of a
#: kustomization; ``labels:`` came with kustomize v4.1 and v2 rejects it ("unknown field").
KUSTOMIZE_V2_FIELDS = {"apiVersion", "kind", "namespace", "resources", "images"}


@pytest.mark.parametrize("path", kustomizations(), ids=lambda p: str(p.relative_to(KUBERNETES)))
def test_kustomization_uses_only_what_old_kubectl_knows(path: Path) -> None:
    assert set(yaml.safe_load(path.read_text())) <= KUSTOMIZE_V2_FIELDS


def test_every_resource_of_the_main_kustomization_is_labelled_part_of_imgaccel() -> None:
    for manifest in resources(KUBERNETES / KUSTOMIZATION):
        for doc in documents(manifest):
            labels = doc["metadata"].get("labels", {})
            assert labels.get("app.kubernetes.io/part-of") == "imgaccel", manifest


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


def _expand(args: list[str], env: dict[str, str]) -> list[str]:
    """kubelet's ``$(VAR)`` expansion of a container's command."""
    for name, value in env.items():
        args = [arg.replace(f"$({name})", value) for arg in args]
    assert not any("$(" in arg for arg in args), args
    return args


def _settings_of(workload: Doc, name: str, command: click.Command, tmp_path: Path) -> Any:
    """The settings the container's command line gives its process: the real click command
    parses the arguments, the ConfigMap is the file named by IMGACCEL_CONFIG (when set), and
    the downward-API variables are what kubelet would put there."""
    item = container(pod_spec(workload), name)
    env = {e["name"]: e.get("value", "") for e in item.get("env", [])}
    fields = {"spec.nodeName": "gpu-node-1", "metadata.name": "imgaccel-seeder-0"}
    for e in item.get("env", []):
        if "valueFrom" in e:
            env[e["name"]] = fields[e["valueFrom"]["fieldRef"]["fieldPath"]]
    args = _expand(item["command"], env)
    assert args[0] == "imgaccel" and args[1] == command.name
    params = command.make_context(command.name, args[2:]).params
    if "IMGACCEL_CONFIG" in env:
        config = find(KUBERNETES / "configmap.yaml", "ConfigMap", "imgaccel-config")
        (tmp_path / "config.toml").write_text(config["data"]["config.toml"])
        params["config"] = tmp_path / "config.toml"
    return settings_from(params)


def _mounts(item: Doc, workload: Doc) -> dict[str, Doc]:
    """mount path -> the volume mounted there (a StatefulSet's claim templates included)."""
    volumes = {v["name"]: v for v in pod_spec(workload)["volumes"]}
    for claim in workload["spec"].get("volumeClaimTemplates", []):
        volumes[claim["metadata"]["name"]] = {"claimTemplate": claim}
    return {m["mountPath"]: volumes[m["name"]] for m in item["volumeMounts"]}


def _ports(item: Doc) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in item["ports"]}


def _port_of(listen: str) -> int:
    return int(listen.rpartition(":")[2])


def _tracker_service_url() -> str:
    service = find(KUBERNETES / "tracker-service.yaml", "Service", "imgaccel-tracker")
    port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "tracker")
    return f"https://{service['metadata']['name']}.{service['metadata']['namespace']}.svc:{port}"


def test_configmap_holds_settings_the_node_accepts(tmp_path: Path) -> None:
    daemonset = find(NODE, "DaemonSet", "imgaccel-node")
    settings = _settings_of(daemonset, "node", node_command, tmp_path)
    spec = pod_spec(daemonset)
    node = container(spec, "node")
    mounts = _mounts(node, daemonset)

    assert _host_path(settings.cache.dir, mounts).is_relative_to("/var/lib")  # the node's disk
    assert mounts[str(settings.p2p.certs_dir)]["secret"]["secretName"] == "imgaccel-node-tls"
    assert settings.p2p.tracker_url == _tracker_service_url()
    assert settings.p2p.node_id == "gpu-node-1"  # the Kubernetes node's name
    ports = _ports(node)
    assert ports["p2p"] == _port_of(settings.p2p.listen)
    assert ports["mirror"] == _port_of(settings.listen)
    assert settings.listen.startswith("127.0.0.1:")  # only containerd on this host
    assert ports["metrics"] == _port_of(settings.metrics_listen)
    for probe in ("livenessProbe", "readinessProbe"):
        assert node[probe]["httpGet"] == {
            "host": "127.0.0.1",
            "path": "/healthz",
            "port": ports["mirror"],
        }


def _volume_above(path: Path, mounts: dict[str, Doc]) -> str:
    """The mount path of the volume ``path`` is on (the deepest mount above it)."""
    above = [m for m in mounts if path.is_relative_to(m)]
    assert above, f"{path} is on no volume of the pod"
    return max(above, key=len)


def _host_path(path: Path, mounts: dict[str, Doc]) -> Path:
    """Where ``path`` of the container is on the host, through its hostPath volume."""
    mount = _volume_above(path, mounts)
    return Path(mounts[mount]["hostPath"]["path"]) / path.relative_to(mount)


def test_the_cache_is_on_one_volume_with_containerds_content_store(tmp_path: Path) -> None:
    """A hard link needs one mount (tests/cache/test_containerd_sharing.py shows the kernel
    refusing it across two): with the cache and containerd's store on two hostPath volumes,
    every layer would be kept twice on the node's disk."""
    daemonset = find(NODE, "DaemonSet", "imgaccel-node")
    settings = _settings_of(daemonset, "node", node_command, tmp_path)
    mounts = _mounts(container(pod_spec(daemonset), "node"), daemonset)
    content = settings.cache.containerd_content_dir

    assert content is not None
    assert _volume_above(settings.cache.dir, mounts) == _volume_above(content, mounts)
    on_host = _host_path(content, mounts)
    assert on_host == CacheSettings.model_fields["containerd_content_dir"].default
    assert not _host_path(settings.cache.dir, mounts).is_relative_to(on_host)


def test_seeder_takes_the_nodes_p2p_flags_with_its_pod_name(tmp_path: Path) -> None:
    statefulset = find(KUBERNETES / "seeder-statefulset.yaml", "StatefulSet", "imgaccel-seeder")
    seeder = _settings_of(statefulset, "seeder", seeder_command, tmp_path / "seeder")
    (tmp_path / "node").mkdir()
    daemonset = find(NODE, "DaemonSet", "imgaccel-node")
    node = _settings_of(daemonset, "node", node_command, tmp_path / "node")
    spec = pod_spec(statefulset)
    item = container(spec, "seeder")

    assert (seeder.p2p.tracker_url, seeder.p2p.listen, seeder.p2p.certs_dir) == (
        node.p2p.tracker_url,
        node.p2p.listen,
        node.p2p.certs_dir,
    )
    assert seeder.p2p.node_id == "imgaccel-seeder-0"  # unique even when two share a node
    assert _mounts(item, statefulset)[str(seeder.p2p.certs_dir)]["secret"]["secretName"] == (
        "imgaccel-node-tls"
    )
    assert "claimTemplate" in _mounts(item, statefulset)[str(seeder.cache.dir)]
    ports = _ports(item)
    assert (ports["seeder"], ports["p2p"]) == (_port_of(seeder.listen), _port_of(seeder.p2p.listen))
    for probe in ("livenessProbe", "readinessProbe"):
        assert item[probe]["httpGet"] == {"path": "/healthz", "port": "seeder"}


def test_tracker_probes_its_plain_health_listener_and_serves_its_certificate() -> None:
    deployment = find(KUBERNETES / "tracker-deployment.yaml", "Deployment", "imgaccel-tracker")
    spec = pod_spec(deployment)
    item = container(spec, "tracker")
    args = item["command"]
    assert args[:2] == ["imgaccel", "tracker"]
    # Every flag takes a value; the TLS files exist only in the pod, so no click parsing here.
    flags = {
        k.removeprefix("--").replace("-", "_"): v
        for k, v in zip(args[2::2], args[3::2], strict=True)
    }
    assert set(flags) <= {p.name for p in tracker_command.params}
    settings = TrackerSettings.model_validate(flags)
    mounts = _mounts(item, deployment)

    assert settings.tls
    for path in (settings.ca_cert, settings.cert, settings.key):
        assert path is not None
        assert mounts[str(path.parent)]["secret"]["secretName"] == "imgaccel-tracker-tls"
    assert str(settings.data_dir) in mounts
    ports = _ports(item)
    assert ports["tracker"] == _port_of(settings.listen)
    assert settings.metrics_listen is not None
    assert ports["metrics"] == _port_of(settings.metrics_listen)
    for probe in ("livenessProbe", "readinessProbe"):
        assert item[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert _tracker_service_url() == "https://imgaccel-tracker.imgaccel.svc:6970"


def test_service_monitors_scrape_ports_their_services_have() -> None:
    services = [doc for _path, doc in all_resources() if doc["kind"] == "Service"]
    monitors = documents(KUBERNETES / "monitoring" / "servicemonitor.yaml")
    assert {m["metadata"]["name"] for m in monitors} == {
        "imgaccel-node",
        "imgaccel-seeder",
        "imgaccel-tracker",
    }
    for monitor in monitors:
        wanted = monitor["spec"]["selector"]["matchLabels"]
        chosen = [s for s in services if wanted.items() <= s["metadata"]["labels"].items()]
        assert len(chosen) == 1, monitor["metadata"]["name"]
        names = {p["name"] for p in chosen[0]["spec"]["ports"]}
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= names


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


def test_a_restart_of_the_node_container_keeps_the_mirror_configured(tmp_path: Path) -> None:
    """kubelet runs preStop also when the liveness probe restarts the node container, and the
    init container does not run again then: whatever stops the container must leave the
    hosts.toml the init container wrote (the uninstall DaemonSet removes it)."""
    hosts = tmp_path / "certs.d"
    hosts.mkdir()
    spec = pod_spec(find(NODE, "DaemonSet", "imgaccel-node"))
    init = container(spec, "containerd-config", init=True)
    node = container(spec, "node")
    _run(_host_command(spec, init["command"], hosts, [init]))
    installed = _snapshot(tmp_path)
    for hook in ("preStop", "postStart"):  # a restart runs both again, the init container not
        command = node.get("lifecycle", {}).get(hook, {}).get("exec", {}).get("command", [])
        if "containerd-config" in command:
            _run(_host_command(spec, command, hosts, [node]))
    assert _snapshot(tmp_path) == installed


def _without_mirror(args: list[str]) -> list[str]:
    if "--mirror" not in args:
        return args
    at = args.index("--mirror")
    return args[:at] + args[at + 2 :]
