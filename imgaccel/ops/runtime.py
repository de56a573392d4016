"""Does the container runtime pull through the node? containerd's ``hosts.toml`` and
``config.toml``, dockerd's ``daemon.json``, read the way the runtimes read them."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from imgaccel.hostconfig.containerd import HOSTS_FILE, registry_dir
from imgaccel.ops.check import Check, fail, ok, skip, warn

#: Where each containerd config version keeps the CRI registry section.
_CRI_REGISTRY = {
    1: ("cri", "registry"),
    2: ("io.containerd.grpc.v1.cri", "registry"),
    3: ("io.containerd.cri.v1.images", "registry"),
}
_DEFAULT_CERTS_D = Path("/etc/containerd/certs.d")
#: What ``disabled_plugins`` names containerd's CRI plugin by: its id in a version 1 file
#: (docker-ce's default ``["cri"]``), its URI in 2 and 3 (whose CRI needs the images plugin).
_CRI_PLUGINS = {"cri", "io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images"}


def same_url(a: str, b: str) -> bool:
    """Whether two mirror URLs name the same endpoint (``localhost`` is ``127.0.0.1``)."""
    return _endpoint(a) == _endpoint(b)


def _endpoint(url: str) -> tuple[str, str, int | None, str]:
    parts = urlsplit(url.strip())
    host = (parts.hostname or "").lower()
    host = "127.0.0.1" if host == "localhost" else host
    try:
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        port = None
    return parts.scheme, host, port, parts.path.rstrip("/")


def _read_toml(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text())


# -- containerd hosts.toml ------------------------------------------------------------------------


def containerd_hosts(hosts_dir: Path, registry: str, mirror: str) -> Check:
    """The hosts.toml containerd reads for ``registry`` sends pulls to ``mirror`` first: in
    ``<host>_<port>_``, ``<registry>`` or ``_default``, whichever exists first."""
    name = f"containerd hosts.toml ({registry})"
    path = registry_dir(hosts_dir, registry) / HOSTS_FILE
    fix = (
        f"imgaccel containerd-config --hosts-dir {hosts_dir} --registry {registry} "
        f"--mirror {mirror}"
    )
    if not path.is_file():
        return fail(name, f"{path} is missing: containerd pulls {registry} from the origin", fix)
    try:
        data = _read_toml(path)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        return fail(name, f"{path} is not readable TOML ({exc}); containerd ignores it", fix)
    hosts = data.get("host")
    if not isinstance(hosts, dict) or not hosts:
        return fail(name, f"{path} has no [host] table: containerd ignores the file", fix)
    return _mirror_in(name, path, data, hosts, mirror, fix)


def _mirror_in(
    name: str, path: Path, data: dict[str, Any], hosts: dict[str, Any], mirror: str, fix: str
) -> Check:
    urls = list(hosts)
    at = next((i for i, url in enumerate(urls) if same_url(url, mirror)), None)
    if at is None:
        return fail(name, f"{path} sends pulls to {urls[0]}, not to the node at {mirror}", fix)
    if at > 0:
        first = ", ".join(urls[:at])
        return warn(name, f"{path} tries {first} before the node", f"{fix}  (puts it first)")
    table = hosts[urls[at]]
    capabilities = table.get("capabilities") if isinstance(table, dict) else None
    if isinstance(capabilities, list) and "pull" not in capabilities:
        return fail(name, f"{path}: the node's [host] table lacks the pull capability", fix)
    if isinstance(capabilities, list) and "resolve" not in capabilities:
        detail = f"{path}: without the resolve capability, tags are resolved at the origin"
        return warn(name, detail, fix)
    server = data.get("server", "the registry itself")
    return ok(name, f"{path}: the node {mirror} first, {server} as the fallback")


# -- containerd config.toml -----------------------------------------------------------------------


def cri_disabled(path: Path) -> bool:
    """containerd's ``config.toml`` at ``path`` turns its CRI plugin off (docker-ce's default):
    kubelet does not pull through this containerd, and its ``config_path`` is not in use."""
    try:
        disabled = _read_toml(path).get("disabled_plugins", [])
    except (OSError, tomllib.TOMLDecodeError):
        return False  # the config_path check says what is wrong with the file
    return isinstance(disabled, list) and not _CRI_PLUGINS.isdisjoint(map(str, disabled))


def containerd_config(path: Path, hosts_dir: Path) -> Check:
    """containerd's CRI plugin reads ``hosts_dir`` (``config_path``), and nothing conflicts."""
    name = "containerd config_path"
    snippet = _config_path_fix(path, hosts_dir, 2)
    if not path.is_file():
        detail = (
            f"no {path}: containerd 1.x then has no config_path and ignores {hosts_dir} "
            "(2.x reads /etc/containerd/certs.d by default)"
        )
        return warn(name, detail, snippet)
    try:
        data = _read_toml(path)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        return fail(name, f"{path} is not readable TOML: {exc}", f"repair {path}")
    version = data.get("version", 1)
    registry = _cri_registry(data, version)
    snippet = _config_path_fix(path, hosts_dir, version)
    return _config_path(name, path, hosts_dir, version, registry, snippet)


def _config_path_fix(path: Path, hosts_dir: Path, version: object) -> str:
    plugin = ".".join(f'"{p}"' if "." in p else p for p in _cri_section(version))
    return (
        f"in {path} (version = {version}): [plugins.{plugin}] config_path = "
        f'"{_host_path(hosts_dir)}", then restart containerd once'
    )


def _cri_section(version: object) -> tuple[str, str]:
    return _CRI_REGISTRY.get(version if isinstance(version, int) else 2, _CRI_REGISTRY[2])


def _cri_registry(data: dict[str, Any], version: object) -> dict[str, Any]:
    section: Any = data.get("plugins", {})
    for key in _cri_section(version):
        section = section.get(key, {}) if isinstance(section, dict) else {}
    return section if isinstance(section, dict) else {}


def _config_path(
    name: str,
    path: Path,
    hosts_dir: Path,
    version: object,
    registry: dict[str, Any],
    snippet: str,
) -> Check:
    config_path = registry.get("config_path")
    if registry.get("mirrors"):
        detail = f"{path} sets registry.mirrors, which conflicts with config_path and hosts.toml"
        return fail(name, detail, f"move the mirrors into hosts.toml files; {snippet}")
    if not config_path:
        if version == 3 and _host_path(hosts_dir) == _DEFAULT_CERTS_D:
            return ok(name, f"containerd 2.x default: reads {_DEFAULT_CERTS_D}")
        detail = f"{path} does not set config_path: containerd 1.x never reads {hosts_dir}"
        return fail(name, detail, snippet)
    paths = [Path(p) for p in str(config_path).split(":") if p]
    if not any(_is_mounted_as(hosts_dir, p) for p in paths):
        detail = f"config_path is {config_path}, but the hosts.toml checked are in {hosts_dir}"
        return fail(name, detail, f"imgaccel containerd-config --hosts-dir {paths[0]}")
    return ok(name, f"config_path = {config_path}")


def _is_mounted_as(seen: Path, host: Path) -> bool:
    """``seen`` is the host's ``host`` directory: the same directory once both are resolved,
    or seen through the ``/host`` mount (``/host/etc/containerd/certs.d`` in a pod)."""
    return seen.resolve() == host.resolve() or _host_path(seen) == Path(os.path.normpath(host))


def _host_path(hosts_dir: Path) -> Path:
    """The host's own (absolute) path for a hosts dir, also one seen through a ``/host`` mount."""
    parts = hosts_dir.resolve().parts
    return Path("/", *parts[2:]) if len(parts) > 2 and parts[1] == "host" else Path(*parts)


# -- dockerd daemon.json --------------------------------------------------------------------------


def dockerd_mirrors(path: Path, mirror: str, *, primary: bool) -> Check:
    """dockerd's ``registry-mirrors`` lists the node. ``primary``: dockerd is this node's only
    runtime, so a missing mirror is a failure rather than a warning."""
    name = "dockerd registry-mirrors"
    if not path.is_file():
        return skip(name, f"no {path}: dockerd is not configured on this node")
    fix = (
        f"imgaccel docker-config --daemon-json {path} --mirror {mirror} && systemctl reload docker"
    )
    try:
        config = json.loads(path.read_text() or "{}")
    except (OSError, json.JSONDecodeError) as exc:
        return fail(name, f"{path} is not valid JSON: {exc}", f"repair {path}, then: {fix}")
    mirrors = config.get("registry-mirrors", []) if isinstance(config, dict) else []
    if isinstance(mirrors, list) and any(same_url(str(m), mirror) for m in mirrors):
        return ok(name, f"{path} lists the node (dockerd uses it for Docker Hub images only)")
    detail = f"{path} does not list {mirror} in registry-mirrors: dockerd's pulls skip the node"
    return fail(name, detail, fix) if primary else warn(name, detail, fix)
