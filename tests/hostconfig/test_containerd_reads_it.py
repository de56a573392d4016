"""Real containerd resolves through the hosts.toml we write: mirror first, with ``?ns=``.

The mirror here is a stub that records requests and answers MANIFEST_UNKNOWN, and the origin is a
closed port: the pull fails, and what this proves is which requests containerd sent where.
A real pull through a real node is the node's own system test.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from click.testing import CliRunner

from imgaccel.cli.hostconfig import containerd_config
from imgaccel.testing.containerd import Containerd
from imgaccel.testing.procs import free_port, is_root

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(
        not is_root() or shutil.which("containerd") is None, reason="needs root and containerd"
    ),
]


def recorder(seen: list[tuple[str, str, str]]) -> web.Application:
    """A registry stub that records each request and knows no manifest."""

    async def record(request: web.Request) -> web.Response:
        seen.append((request.method, request.path, request.query.get("ns", "")))
        return web.json_response(
            {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "stub"}]}, status=404
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    return app


async def test_containerd_asks_the_mirror_first_with_ns(tmp_path: Path) -> None:
    seen: list[tuple[str, str, str]] = []
    app = recorder(seen)
    hosts = tmp_path / "certs.d"
    async with TestServer(app, host="127.0.0.1") as mirror, Containerd(tmp_path / "ctrd") as ctrd:
        result = CliRunner().invoke(
            containerd_config,
            [
                "--hosts-dir",
                str(hosts),
                "--registry",
                "registry.test",
                "--mirror",
                str(mirror.make_url("")),
                "--origin",
                f"registry.test=http://127.0.0.1:{free_port()}",
            ],
        )
        assert result.exit_code == 0, result.output
        pulled = await ctrd.pull(
            "registry.test/library/app:v1", hosts_dir=hosts, check=False, timeout=120
        )
    assert pulled.returncode != 0
    assert ("HEAD", "/v2/library/app/manifests/v1", "registry.test") in seen


async def test_a_registry_with_a_port_is_configured_where_containerd_looks(tmp_path: Path) -> None:
    # The admin's <host>_<port>_ directory: containerd reads it and never <host>:<port>.
    seen: list[tuple[str, str, str]] = []
    registry = f"127.0.0.1:{free_port()}"
    hosts = tmp_path / "certs.d"
    own = hosts / (registry.replace(":", "_") + "_")
    own.mkdir(parents=True)
    (own / "hosts.toml").write_text(f'server = "http://{registry}"\n')
    async with (
        TestServer(recorder(seen), host="127.0.0.1") as mirror,
        Containerd(tmp_path / "ctrd") as ctrd,
    ):
        args = ["--hosts-dir", str(hosts), "--registry", registry]
        result = CliRunner().invoke(
            containerd_config, [*args, "--mirror", str(mirror.make_url(""))]
        )
        assert result.exit_code == 0, result.output
        await ctrd.pull(f"{registry}/library/app:v1", hosts_dir=hosts, check=False, timeout=120)
    assert ("HEAD", "/v2/library/app/manifests/v1", registry) in seen


async def test_with_the_mirror_down_containerd_pulls_from_the_origin(tmp_path: Path) -> None:
    # Why a hosts.toml left behind by a stopped node is harmless.
    seen: list[tuple[str, str, str]] = []
    hosts = tmp_path / "certs.d"
    async with (
        TestServer(recorder(seen), host="127.0.0.1") as origin,
        Containerd(tmp_path / "ctrd") as ctrd,
    ):
        address = f"127.0.0.1:{origin.port}"
        args = ["--hosts-dir", str(hosts), "--registry", "registry.test"]
        args += ["--mirror", f"http://127.0.0.1:{free_port()}"]
        args += ["--origin", f"registry.test=http://{address}"]
        assert CliRunner().invoke(containerd_config, args).exit_code == 0
        await ctrd.pull("registry.test/library/app:v1", hosts_dir=hosts, check=False, timeout=120)
    assert [path for _method, path, _ns in seen][:1] == ["/v2/library/app/manifests/v1"]
