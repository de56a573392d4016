"""``imgaccel doctor`` on a node set up right, and on each way a setup goes wrong.

The node is the real app on a loopback port, the tracker a real mTLS tracker; containerd's
and dockerd's files are written by the product's own ``containerd-config``/``docker-config``
code into temp dirs. Each broken setup must FAIL (exit 1) on exactly the check that is wrong,
with a fix that names the command or setting to change.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import shutil
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from imgaccel.cli import main
from imgaccel.hostconfig import containerd, docker
from imgaccel.ops import disk, runtime
from imgaccel.ops.check import Status
from imgaccel.ops.units import human_bytes
from imgaccel.p2p.certs import CA_CERT, NODE_CERT, NODE_KEY, KeyPair, issue
from imgaccel.testing.registry import RegistryTLS
from imgaccel.tracker import Served, TrackerSettings, running
from tests.conftest import NodeServer, needs_registry
from tests.p2p.dated_certs import dated_pair, days_from_now

from .conftest import get, write_certs

REGISTRIES = ("docker.io", "ghcr.io")


@dataclass
class Setup:
    """A node's files and endpoints, as flags for ``imgaccel doctor``."""

    root: Path
    node_url: str
    tracker_url: str
    certs_dir: Path
    cache_dir: Path
    quota: str = "1MiB"
    extra: list[str] = field(default_factory=list)

    @property
    def hosts_dir(self) -> Path:
        return self.root / "certs.d"

    @property
    def containerd_config(self) -> Path:
        return self.root / "containerd" / "config.toml"

    @property
    def daemon_json(self) -> Path:
        return self.root / "docker" / "daemon.json"

    @property
    def content_dir(self) -> Path:
        return self.root / "containerd-root" / "io.containerd.content.v1.content"

    def args(self) -> list[str]:
        registries = [arg for r in REGISTRIES for arg in ("--registry", r)]
        return [
            "doctor",
            *("--node", self.node_url, "--hosts-dir", str(self.hosts_dir)),
            *("--containerd-config", str(self.containerd_config)),
            *("--daemon-json", str(self.daemon_json)),
            *("--tracker", self.tracker_url, "--certs-dir", str(self.certs_dir)),
            *("--cache-dir", str(self.cache_dir), "--quota", self.quota),
            *("--containerd-content-dir", str(self.content_dir)),
            *registries,
            *self.extra,
        ]


async def doctor(setup: Setup, *more: str) -> Result:
    # The CLI runs its own event loop: keep it off this test's loop, which serves the node.
    return await asyncio.to_thread(CliRunner().invoke, main, [*setup.args(), *more])


def lines_of(result: Result, status: str) -> list[str]:
    return [line for line in result.output.splitlines() if line.startswith(f"{status} ")]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def setup(
    node_factory: Callable[..., Any], tls_tracker: Served, cluster_ca: KeyPair, tmp_path: Path
) -> Setup:
    node: NodeServer = await node_factory()
    good = Setup(
        tmp_path / "host",
        node.url,
        tls_tracker.url,
        write_certs(tmp_path / "node-certs", cluster_ca),
        Path(node.settings.cache.dir),
    )
    for registry in REGISTRIES:
        containerd.configure(good.hosts_dir, registry, node.url)
    good.containerd_config.parent.mkdir(parents=True)
    good.containerd_config.write_text(
        'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\n'
        f'config_path = "{good.hosts_dir}"\n'
    )
    docker.configure(good.daemon_json, node.url)
    blob = good.content_dir / "blobs" / "sha256" / ("ab" * 32)  # a blob containerd pulled
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"layer")
    blob.chmod(0o444)
    return good


async def test_a_good_setup_is_all_ok(setup: Setup) -> None:
    result = await doctor(setup)

    assert result.exit_code == 0, result.output
    checks = [line for line in result.output.splitlines() if not line.startswith(" ")][:-1]
    # The node has sent no origin request yet: nothing to say of its origins.
    skipped = "skip  origins: the node has sent no origin request since it started"
    assert skipped in checks
    checks.remove(skipped)
    assert checks and all(line.startswith("ok ") for line in checks), result.output
    names = {line.split(":")[0].removeprefix("ok").strip() for line in checks}
    assert names == {
        "containerd hosts.toml (docker.io)",
        "containerd hosts.toml (ghcr.io)",
        "containerd config_path",
        "dockerd registry-mirrors",
        "node daemon",
        "tracker",
        "tracker certificate",
        "node certificate",
        "cluster CA",
        "cache dir writable",
        "disk headroom",
        "containerd sharing",
    }
    assert result.output.splitlines()[-1].startswith("healthy: 12 ok")
    assert "1 skip" in result.output.splitlines()[-1]


async def test_json_output_lists_every_check(setup: Setup) -> None:
    setup.node_url = f"http://127.0.0.1:{closed_port()}"
    result = await doctor(setup, "--json")

    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["ok"] is False
    by_name = {c["name"]: c for c in report["checks"]}
    assert by_name["node daemon"]["status"] == "FAIL"
    assert "systemctl start imgaccel-node" in by_name["node daemon"]["fix"]
    assert by_name["tracker"]["status"] == "ok"


async def test_missing_hosts_toml_fails_and_its_fix_repairs_it(setup: Setup) -> None:
    containerd.remove(setup.hosts_dir, "ghcr.io")
    result = await doctor(setup)

    assert result.exit_code == 1
    [failed] = lines_of(result, "FAIL")
    assert failed.startswith("FAIL  containerd hosts.toml (ghcr.io):")
    assert "missing" in failed
    fix = result.output.splitlines()[result.output.splitlines().index(failed) + 1]
    command = fix.split("fix: ", 1)[1].split()
    assert command[:2] == ["imgaccel", "containerd-config"]

    assert CliRunner().invoke(main, command[1:]).exit_code == 0
    assert (await doctor(setup)).exit_code == 0


async def test_hosts_toml_without_a_host_table_fails(setup: Setup) -> None:
    (setup.hosts_dir / "docker.io" / "hosts.toml").write_text(
        'server = "https://registry-1.docker.io"\n'
    )
    result = await doctor(setup)

    assert result.exit_code == 1
    [failed] = lines_of(result, "FAIL")
    assert "containerd hosts.toml (docker.io)" in failed and "no [host] table" in failed


async def test_hosts_toml_pointing_elsewhere_fails(setup: Setup) -> None:
    (setup.hosts_dir / "docker.io" / "hosts.toml").write_text(
        'server = "https://registry-1.docker.io"\n[host."http://10.0.0.9:5000"]\n'
        'capabilities = ["pull", "resolve"]\n'
    )
    result = await doctor(setup)

    assert result.exit_code == 1
    [failed] = lines_of(result, "FAIL")
    assert f"sends pulls to http://10.0.0.9:5000, not to the node at {setup.node_url}" in failed


async def test_the_mirror_behind_another_host_is_a_warning(setup: Setup) -> None:
    path = setup.hosts_dir / "docker.io" / "hosts.toml"
    path.write_text(f'[host."http://10.0.0.9:5000"]\n[host."{setup.node_url}"]\n')
    result = await doctor(setup)

    assert result.exit_code == 0
    [warned] = lines_of(result, "warn")
    assert "tries http://10.0.0.9:5000 before the node" in warned


async def test_containerd_without_config_path_fails(setup: Setup) -> None:
    setup.containerd_config.write_text('version = 2\n[plugins."io.containerd.grpc.v1.cri"]\n')
    result = await doctor(setup)

    assert result.exit_code == 1
    [failed] = lines_of(result, "FAIL")
    assert "does not set config_path" in failed
    assert f'config_path = "{setup.hosts_dir}"' in result.output


async def test_dockerd_without_the_mirror_is_a_warning_beside_containerd(setup: Setup) -> None:
    setup.daemon_json.write_text('{"log-driver": "journald"}\n')
    result = await doctor(setup)

    assert result.exit_code == 0
    [warned] = lines_of(result, "warn")
    assert "dockerd registry-mirrors" in warned
    assert f"imgaccel docker-config --daemon-json {setup.daemon_json}" in result.output


async def test_node_down_fails(setup: Setup) -> None:
    setup.node_url = f"http://127.0.0.1:{closed_port()}"
    for registry in REGISTRIES:  # the runtime config points at the (down) node
        containerd.configure(setup.hosts_dir, registry, setup.node_url)
    docker.configure(setup.daemon_json, setup.node_url)
    result = await doctor(setup)

    assert result.exit_code == 1
    [failed] = lines_of(result, "FAIL")
    assert failed.startswith(f"FAIL  node daemon: nothing answers at {setup.node_url}")


async def test_tracker_down_fails(setup: Setup) -> None:
    setup.tracker_url = f"https://127.0.0.1:{closed_port()}"
    result = await doctor(setup)

    assert result.exit_code == 1
    [failed] = lines_of(result, "FAIL")
    assert failed.startswith(f"FAIL  tracker: cannot reach {setup.tracker_url}")


async def test_a_certificate_of_another_cluster_fails_at_the_tracker(
    setup: Setup, tmp_path: Path
) -> None:
    from imgaccel.p2p.certs import make_ca

    setup.certs_dir = write_certs(tmp_path / "other-cluster", make_ca("other"))
    result = await doctor(setup)

    assert result.exit_code == 1
    [failed] = lines_of(result, "FAIL")
    assert failed.startswith("FAIL  tracker:")
    assert "imgaccel certs issue" in result.output


def _dated_certs(root: Path, ca: KeyPair, pair: KeyPair) -> Path:
    root.mkdir(parents=True)
    (root / CA_CERT).write_bytes(ca.cert_pem)
    pair.write(root, NODE_CERT, NODE_KEY)
    return root


async def test_a_node_certificate_ending_in_10_days_warns_with_the_renewal(
    setup: Setup, cluster_ca: KeyPair, tmp_path: Path
) -> None:
    setup.certs_dir = _dated_certs(tmp_path / "soon", cluster_ca, issue(cluster_ca, days=10))
    result = await doctor(setup)

    assert result.exit_code == 0, result.output
    [warned] = lines_of(result, "warn")
    assert warned.startswith(f"warn  node certificate: {setup.certs_dir / NODE_CERT}: CN=*, ")
    lines = result.output.splitlines()
    fix = lines[lines.index(warned) + 1].strip()
    assert fix.startswith("fix: renew it: `imgaccel certs issue --ca-dir ./imgaccel-ca --out ")
    assert "kubectl -n imgaccel rollout restart ds/imgaccel-node sts/imgaccel-seeder" in fix


async def test_an_expired_node_certificate_fails(
    setup: Setup, cluster_ca: KeyPair, tmp_path: Path
) -> None:
    expired = dated_pair(cluster_ca, days_from_now(-400), days_from_now(-3))
    setup.certs_dir = _dated_certs(tmp_path / "expired", cluster_ca, expired)
    result = await doctor(setup)

    assert result.exit_code == 1
    failed = lines_of(result, "FAIL")
    assert any(line.startswith("FAIL  tracker: ") for line in failed)  # refused at the handshake
    assert any(
        line.startswith(f"FAIL  node certificate: {setup.certs_dir / NODE_CERT}: CN=*, expired ")
        for line in failed
    ), result.output


@contextlib.asynccontextmanager
async def _tracker_presenting(pair: KeyPair, ca: KeyPair, root: Path) -> AsyncIterator[str]:
    certs = _dated_certs(root / "tls", ca, pair)
    settings = TrackerSettings(
        listen="127.0.0.1:0",
        data_dir=root / "data",
        ca_cert=certs / CA_CERT,
        cert=certs / NODE_CERT,
        key=certs / NODE_KEY,
    )
    async with running(settings) as served:
        yield served.url


async def test_a_tracker_certificate_ending_in_10_days_warns(
    setup: Setup, cluster_ca: KeyPair, tmp_path: Path
) -> None:
    async with _tracker_presenting(issue(cluster_ca, days=10), cluster_ca, tmp_path) as url:
        setup.tracker_url = url
        result = await doctor(setup)

    assert result.exit_code == 0, result.output
    [warned] = lines_of(result, "warn")
    assert warned.startswith(f"warn  tracker certificate: {url}: CN=*, valid until ")
    assert "--out ./tracker --dns 127.0.0.1" in result.output
    assert "rollout restart deploy/imgaccel-tracker" in result.output


async def test_an_expired_tracker_certificate_fails_the_tracker_with_the_renewal(
    setup: Setup, cluster_ca: KeyPair, tmp_path: Path
) -> None:
    expired = dated_pair(cluster_ca, days_from_now(-400), days_from_now(-3))
    async with _tracker_presenting(expired, cluster_ca, tmp_path) as url:
        setup.tracker_url = url
        result = await doctor(setup)

    assert result.exit_code == 1
    [failed] = lines_of(result, "FAIL")
    assert failed.startswith(f"FAIL  tracker: {url}: the tracker's certificate does not verify")
    assert "certificate has expired" in failed
    assert "secret generic imgaccel-tracker-tls" in result.output


def upstreams_config(path: Path, upstreams: dict[str, dict[str, Any]]) -> Path:
    """A node config file with these ``upstreams`` tables (paths and booleans as TOML)."""
    lines: list[str] = []
    for host, table in upstreams.items():
        lines.append(f'[upstreams."{host}"]')
        lines += [f"{key} = {json.dumps(value)}" for key, value in table.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


async def test_upstream_tls_files_that_load_are_ok(setup: Setup, tmp_path: Path) -> None:
    tls = RegistryTLS.make(tmp_path / "harbor-tls")
    harbor = {
        "url": "https://harbor.corp.example",
        "ca_file": str(tls.ca),
        "client_cert": str(tls.client_cert),
        "client_key": str(tls.client_key),
    }
    config = upstreams_config(tmp_path / "node.toml", {"harbor.corp.example": harbor})
    result = await doctor(setup, "--config", str(config))

    assert result.exit_code == 0, result.output
    [line] = [line for line in result.output.splitlines() if "upstream TLS" in line]
    assert line == (
        f"ok    upstream TLS (harbor.corp.example): ca_file {tls.ca}, client_cert "
        f"{tls.client_cert}, client_key {tls.client_key} load"
    )


async def test_upstream_tls_files_that_would_stop_the_node_fail_with_the_fix(
    setup: Setup, tmp_path: Path
) -> None:
    tls = RegistryTLS.make(tmp_path / "tls")
    missing = tmp_path / "gone" / "ca.crt"
    upstreams: dict[str, dict[str, Any]] = {
        "missing.example": {"url": "https://missing.example", "ca_file": str(missing)},
        "mismatched.example": {  # the registry's own key, not the client certificate's
            "url": "https://mismatched.example",
            "client_cert": str(tls.client_cert),
            "client_key": str(tls.key),
        },
        "unverified.example": {
            "url": "https://unverified.example",
            "ca_file": str(tls.ca),
            "tls_verify": False,
        },
    }
    config = upstreams_config(tmp_path / "node.toml", upstreams)
    result = await doctor(setup, "--config", str(config), "--json")

    assert result.exit_code == 1, result.output
    checks = {c["name"]: c for c in json.loads(result.output)["checks"]}
    gone = checks["upstream TLS (missing.example)"]
    assert gone["status"] == "FAIL" and f"cannot read ca_file {missing}" in gone["detail"]
    assert 'correct upstreams."missing.example"' in gone["fix"]
    pair = checks["upstream TLS (mismatched.example)"]
    assert pair["status"] == "FAIL"
    assert f"client_key {tls.key} is not the key of client_cert {tls.client_cert}" in pair["detail"]
    assert "the key of client_cert" in pair["fix"]
    unused = checks["upstream TLS (unverified.example)"]
    assert unused["status"] == "warn" and "tls_verify is false" in unused["detail"]
    assert 'upstreams."unverified.example".tls_verify = true' in unused["fix"]


async def test_a_cache_path_that_is_a_file_fails(setup: Setup, tmp_path: Path) -> None:
    setup.cache_dir = tmp_path / "not-a-dir"
    setup.cache_dir.write_text("")
    result = await doctor(setup)

    assert result.exit_code == 1
    [failed] = lines_of(result, "FAIL")
    assert failed == f"FAIL  cache dir writable: {setup.cache_dir} is not a directory"


async def test_a_cache_dir_that_takes_no_writes_fails(setup: Setup) -> None:
    # The tests run as root, who writes through any mode bits; sysfs takes no new files even
    # from root (it is mounted read-only in containers).
    setup.cache_dir = Path("/sys/kernel")
    result = await doctor(setup)

    assert result.exit_code == 1
    failed = lines_of(result, "FAIL")  # and the disk under it, which has no free space
    assert any(
        line.startswith("FAIL  cache dir writable: cannot write to /sys/kernel") for line in failed
    )
    assert "writable volume" in result.output


async def test_a_quota_bigger_than_the_disk_fails_with_no_free_space_kept(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMGACCEL_CACHE__MIN_FREE_PERCENT", "0")
    setup.quota = "100000T"
    result = await doctor(setup)

    assert result.exit_code == 1
    [failed] = lines_of(result, "FAIL")
    assert "disk headroom" in failed and "the disk fills up before the quota" in failed
    assert "--quota" in result.output


async def test_a_quota_bigger_than_the_disk_is_cut_short_by_the_free_space_kept(
    setup: Setup,
) -> None:
    """The node keeps cache.min_free_percent (25 % by default) free: the disk does not fill up,
    the quota is just never reached."""
    setup.quota = "100000T"
    result = await doctor(setup)

    assert result.exit_code == 0, result.output
    [warned] = lines_of(result, "warn")
    assert "disk headroom" in warned and "stops short of its quota" in warned
    assert "cache.min_free_percent keeps 25%" in warned


@needs_registry
async def test_without_tracker_settings_it_checks_the_tracker_the_running_node_uses(
    p2p_node: Callable[..., Any], plain_tracker: str, tmp_path: Path
) -> None:
    # On Kubernetes the tracker and certificates are the node's flags, which a doctor in the
    # same pod does not see: it asks the node.
    node = await p2p_node("d1")
    args = ["doctor", "--node", node.url, "--json", "--cache-dir", str(node.settings.cache.dir)]
    args += ["--hosts-dir", str(tmp_path / "none"), "--containerd-config", str(tmp_path / "none")]
    result = await asyncio.to_thread(CliRunner().invoke, main, args)

    checks = {c["name"]: c for c in json.loads(result.output)["checks"]}
    assert checks["tracker"]["status"] == "ok"
    assert checks["tracker"]["detail"] == f"{plain_tracker} answers"
    assert checks["node certificate"]["status"] == "ok"


async def test_an_origin_the_running_node_cannot_reach_fails_in_the_nodes_words(
    setup: Setup,
) -> None:
    """The node's last request to a registry failed (nothing listens there): containerd pulls
    around the mirror unseen, so doctor fails that origin with the node's reason."""
    gone = f"127.0.0.1:{closed_port()}"
    status, _ = await get(f"{setup.node_url}/v2/test/app/manifests/v1?ns={gone}")
    assert status == 503

    result = await doctor(setup)

    assert result.exit_code == 1
    [failed] = lines_of(result, "FAIL")
    assert failed.startswith(f"FAIL  origin {gone}: the node's latest request failed, at ")
    assert f"GET https://{gone}/v2/test/app/manifests/v1 failed" in failed
    fix = result.output.splitlines()[result.output.splitlines().index(failed) + 1]
    assert "containerd pulls this registry's images around the mirror" in fix
    assert "HTTPS_PROXY" in fix


async def test_containerd_without_cri_on_a_docker_host_is_skipped(setup: Setup) -> None:
    # docker-ce's own config.toml: dockerd pulls, containerd's CRI config is not in use.
    setup.containerd_config.write_text('disabled_plugins = ["cri"]\n')
    for registry in REGISTRIES:
        containerd.remove(setup.hosts_dir, registry)
    result = await doctor(setup)

    assert result.exit_code == 0, result.output
    [skipped, _origins] = lines_of(result, "skip")
    assert skipped.startswith("skip  containerd:") and "disables the CRI plugin" in skipped
    setup.daemon_json.write_text("{}\n")  # dockerd is then the runtime: its mirror must be set
    result = await doctor(setup)
    [failed] = lines_of(result, "FAIL")
    assert failed.startswith("FAIL  dockerd registry-mirrors:")


async def test_a_registry_without_a_directory_uses_default(setup: Setup) -> None:
    containerd.remove(setup.hosts_dir, "ghcr.io")
    containerd.configure(setup.hosts_dir, "_default", setup.node_url)
    result = await doctor(setup)

    assert result.exit_code == 0, result.output
    [line] = [line for line in result.output.splitlines() if "(ghcr.io)" in line]
    assert line.startswith("ok ") and str(setup.hosts_dir / "_default") in line

    (setup.hosts_dir / "ghcr.io").mkdir()  # containerd reads this one now, though it is empty
    [failed] = lines_of(await doctor(setup), "FAIL")
    assert failed.startswith("FAIL  containerd hosts.toml (ghcr.io):") and "missing" in failed


async def test_the_host_port_directory_is_the_one_checked(setup: Setup) -> None:
    registry = "127.0.0.1:5123"
    containerd.configure(setup.hosts_dir, registry, setup.node_url)  # in <host>:<port>
    folded = setup.hosts_dir / "127.0.0.1_5123_"
    folded.mkdir()  # which containerd then ignores for this one
    (folded / "hosts.toml").write_text('[host."http://10.0.0.9:5000"]\n')
    result = await doctor(setup, "--registry", registry)

    assert result.exit_code == 1
    [failed] = lines_of(result, "FAIL")
    assert failed.startswith(f"FAIL  containerd hosts.toml ({registry}): {folded}/hosts.toml")


async def test_a_relative_hosts_dir_matches_config_path(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(setup.root)
    setup.root = Path(".")  # config.toml's config_path stays absolute
    result = await doctor(setup)

    assert result.exit_code == 0, result.output
    assert f"ok    containerd config_path: config_path = {Path.cwd() / 'certs.d'}" in result.output


async def test_a_config_path_that_only_ends_like_the_hosts_dir_fails(setup: Setup) -> None:
    setup.containerd_config.write_text(
        'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\n'
        f'config_path = "/{setup.hosts_dir.name}"\n'
    )
    result = await doctor(setup)

    assert result.exit_code == 1
    [failed] = lines_of(result, "FAIL")
    assert failed.startswith("FAIL  containerd config_path: config_path is /certs.d")


def test_a_hosts_dir_seen_through_the_host_mount_is_containerds(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\n'
        'config_path = "/etc/containerd/certs.d"\n'
    )
    in_pod = runtime.containerd_config(config, Path("/host/etc/containerd/certs.d"))
    elsewhere = runtime.containerd_config(config, Path("/srv/etc/containerd/certs.d"))
    assert (in_pod.status, elsewhere.status) == (Status.OK, Status.FAIL)


async def test_a_content_store_that_cannot_link_into_the_cache_is_a_warning_with_the_fix(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two hostPath volumes, or a systemd sandbox: two mounts, and ``link`` fails (EXDEV)."""

    def cross_mount(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(disk.os, "link", cross_mount)
    result = await doctor(setup)

    assert result.exit_code == 0, result.output  # blobs are kept twice: nothing fails
    [line] = lines_of(result, "warn")
    assert "containerd sharing" in line and "another filesystem or mount" in line
    assert "One copy on disk with containerd" in result.output
    assert 'cache.containerd_content_dir = ""' in result.output


async def test_no_content_store_is_skipped_and_the_probe_leaves_nothing(setup: Setup) -> None:
    result = await doctor(setup)
    assert [p.name for p in setup.cache_dir.iterdir() if p.name.startswith(".imgaccel")] == []
    assert os.stat(setup.content_dir / "blobs" / "sha256" / ("ab" * 32)).st_nlink == 1

    shutil.rmtree(setup.content_dir)
    result = await doctor(setup)

    assert result.exit_code == 0, result.output
    assert any(
        "containerd sharing: no containerd content store" in line
        for line in lines_of(result, "skip")
    )


def test_the_bytes_the_running_node_keeps_once_are_named(tmp_path: Path) -> None:
    content, cache = tmp_path / "content", tmp_path / "cache"
    (content / "blobs" / "sha256").mkdir(parents=True)
    (content / "blobs" / "sha256" / ("cd" * 32)).write_bytes(b"x")
    cache.mkdir()

    found = disk.containerd_sharing(cache, content, 20_000_000_000)

    assert found.status is Status.OK
    assert found.detail.endswith(f"kept once ({human_bytes(20_000_000_000)} kept once now)")
    assert disk.containerd_sharing(cache, None, None).status is Status.SKIP
