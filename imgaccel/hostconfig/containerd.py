"""containerd's ``hosts.toml``: the mirror first, the origin kept as the fallback ``server``.

containerd (``config_path``, re-read at every pull) tries the ``[host."<url>"]`` tables of
``<hosts-dir>/<registry>/hosts.toml`` in file order, sends ``?ns=<registry>`` to each, and falls
back to ``server`` when they fail. A file without any ``[host]`` table is ignored with only a log
line, so the mirror always gets one. For a registry with a port, containerd reads the directory
``<host>_<port>_`` instead of ``<host>:<port>`` when that one exists, and so do we.

Three cases, told apart by the state line in our header comment:

- no file: we write one (``server`` = the origin) and record the origin and which directories
  we made;
- a file imgaccel did not write: its original bytes are kept beside it, with its mode and owner,
  as ``hosts.toml.imgaccel-orig``; the rewrite keeps its ``server`` and other tables and puts
  the mirror first;
- our own file: only our table is replaced (and ``server``, when an origin is given), so edits
  made to it since are kept and a second run writes the same bytes.

``remove`` undoes exactly that: it deletes what we created, or puts the original back byte for
byte (if the file was edited since, the edits are kept and only our table goes).
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import tomli_w

from imgaccel.errors import ConfigError
from imgaccel.hostconfig.files import (
    Change,
    check_mirror_url,
    copy_mode_and_owner,
    fsync_dir,
    write_atomic,
)

DEFAULT_HOSTS_DIR = Path("/etc/containerd/certs.d")
HOSTS_FILE = "hosts.toml"
BACKUP_FILE = "hosts.toml.imgaccel-orig"
DOCKER_HUB_ORIGIN = "https://registry-1.docker.io"
#: The mirror resolves tags and serves blobs; it never takes pushes.
CAPABILITIES = ("pull", "resolve")

_STATE_PREFIX = "# imgaccel-state: "
# host, host:port, [v6]:port, or containerd's catch-all "_default"; never a path.
_REGISTRY = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::\d+)?$"
)

Toml = dict[str, Any]


@dataclass(frozen=True)
class _State:
    """What we added to one registry's directory, recorded in the file itself."""

    mirror: str
    merged: bool  # True: the file was someone else's; its original is in BACKUP_FILE
    made_dirs: int  # how many directories (the registry's, then up) we created
    origin: str | None = None  # the `server` of a file we created (None: merged, or _default)

    def header(self) -> str:
        fields: dict[str, object] = {
            "made_dirs": self.made_dirs,
            "merged": self.merged,
            "mirror": self.mirror,
        }
        if not self.merged:
            fields["origin"] = self.origin
        state = json.dumps(fields, sort_keys=True)
        lines = [
            "# Written by `imgaccel containerd-config`; its --remove undoes this.",
            "# containerd tries the [host] tables in order, then falls back to `server`.",
        ]
        if self.merged:
            lines.append(
                f"# The file this replaced is kept as {BACKUP_FILE} and restored by --remove."
            )
        return "\n".join([*lines, _STATE_PREFIX + state]) + "\n\n"

    @classmethod
    def find(cls, path: Path, text: str) -> _State | None:
        """The state in ``text``'s header, or None if imgaccel did not write it."""
        for line in text.splitlines():
            if line.startswith(_STATE_PREFIX):
                try:
                    raw = json.loads(line.removeprefix(_STATE_PREFIX))
                    state = cls(str(raw["mirror"]), bool(raw["merged"]), int(raw["made_dirs"]))
                except (ValueError, KeyError, TypeError) as exc:
                    raise ConfigError(f"{path}: unreadable imgaccel state line: {exc}") from None
                if state.merged:
                    return state
                # Written before the origin was recorded: the server we wrote was the origin.
                origin = raw["origin"] if "origin" in raw else _server(path, text)
                return replace(state, origin=None if origin is None else str(origin))
        return None


def default_origin(registry: str) -> str | None:
    """The ``server`` for a registry: Docker Hub's real host, ``https://HOST``, or none for
    ``_default`` (containerd then uses the host each pull names)."""
    if registry == "_default":
        return None
    return DOCKER_HUB_ORIGIN if registry == "docker.io" else f"https://{registry}"


def check_registry(registry: str) -> str:
    """``registry`` if it names a registry host (a directory under the hosts dir)."""
    if registry != "_default" and not _REGISTRY.match(registry):
        raise ConfigError(f"{registry!r} is not a registry host (HOST or HOST:PORT)")
    return registry


def registry_dirs(hosts_dir: Path, registry: str, *, catch_all: bool = True) -> list[Path]:
    """The directories containerd looks in for ``registry``'s hosts, in its order: for a
    registry with a port ``<host>_<port>_`` then ``<host>:<port>``, then (``catch_all``) the
    ``_default`` of every registry. It reads the first that exists, hosts.toml or not
    (``hostPaths`` in containerd's ``remotes/docker/config``; ``_default`` in 1.7 and late
    1.6 releases, 1.6.20 checked)."""
    at = registry.rfind(":")  # containerd's hostDirectory: the last colon, if not the first
    folded = f"{registry[:at]}_{registry[at + 1 :]}_" if at > 0 else registry
    names = [folded, registry, *(["_default"] if catch_all else [])]
    return [hosts_dir / name for name in dict.fromkeys(names)]


def registry_dir(hosts_dir: Path, registry: str, *, catch_all: bool = True) -> Path:
    """The directory containerd reads for ``registry``: the first of ``registry_dirs`` that
    exists; ``<registry>`` itself when none does."""
    dirs = registry_dirs(hosts_dir, registry, catch_all=catch_all)
    return next((d for d in dirs if d.exists()), hosts_dir / registry)


def hosts_file(hosts_dir: Path, registry: str) -> Path:
    """The hosts.toml we write for ``registry``: in the directory containerd reads for it, but
    never in ``_default`` on behalf of another registry."""
    return registry_dir(hosts_dir, check_registry(registry), catch_all=False) / HOSTS_FILE


def configure(hosts_dir: Path, registry: str, mirror: str, origin: str | None = None) -> Change:
    """Make containerd pull ``registry`` through ``mirror``, falling back to the origin.

    ``origin`` is the ``server`` of a file we create (default: ``default_origin(registry)``)
    or created (default: the origin recorded in it). An existing file's ``server`` is the
    administrator's and is kept.
    """
    mirror = check_mirror_url(mirror)
    path = hosts_file(hosts_dir, registry)
    old = path.read_bytes() if path.exists() else None
    previous = None if old is None else _State.find(path, old.decode(errors="replace"))
    if old is None:
        server = origin if origin is not None else default_origin(registry)
        state = _State(mirror, merged=False, made_dirs=_missing_dirs(path.parent), origin=server)
        data = _fresh(server)
    elif previous is None:  # someone else's file: keep it, beside ours, to restore on remove
        state, data = _State(mirror, merged=True, made_dirs=0), _parse(path, old)
    else:
        state, data = _update(path, old, previous, mirror, origin)
    new = (state.header() + tomli_w.dumps(_mirror_first(data, mirror))).encode()
    if new == old:
        return Change(path, "unchanged")
    if old is not None and previous is None:
        write_atomic(path.with_name(BACKUP_FILE), old, like=path)  # readable by whom it was
    write_atomic(path, new)
    return Change(path, "created" if old is None else "updated", _describe(state, data))


def _update(
    path: Path, old: bytes, previous: _State, mirror: str, origin: str | None
) -> tuple[_State, Toml]:
    """A file we wrote before: only our table is replaced, and ``server`` of a file we created
    when ``origin`` is given; everything else in it (edits since, too) stays."""
    data = _without(_parse(path, old), previous)
    if previous.merged or origin is None:
        return replace(previous, mirror=mirror), data
    return replace(previous, mirror=mirror, origin=origin), {**data, "server": origin}


def remove(hosts_dir: Path, registry: str) -> Change:
    """Take back what ``configure`` added for ``registry``; leave anyone else's file alone."""
    path = hosts_file(hosts_dir, registry)
    if not path.exists():
        return Change(path, "absent")
    old = path.read_bytes()
    state = _State.find(path, old.decode(errors="replace"))
    if state is None:
        return Change(path, "unchanged", "not written by imgaccel; left alone")
    current = _without(_parse(path, old), state)
    if state.merged:
        return _restore(path, state, current)
    if current != _fresh(state.origin):
        write_atomic(path, tomli_w.dumps(current).encode())
        return Change(path, "updated", "edited since install: kept the edits, comments not kept")
    path.unlink()
    fsync_dir(path.parent)
    _remove_dirs(path.parent, state.made_dirs)
    return Change(path, "removed")


def _restore(path: Path, state: _State, current: Toml) -> Change:
    backup = path.with_name(BACKUP_FILE)
    # Compared less our table too: the original may have named the same mirror itself.
    if backup.exists() and _without(_parse(backup, backup.read_bytes()), state) == current:
        # hosts.toml kept the original's mode and owner; a backup of an older imgaccel did not.
        copy_mode_and_owner(path.stat(), backup)
        backup.replace(path)  # the original bytes, comments and all
        fsync_dir(path.parent)
        return Change(path, "restored")
    write_atomic(path, tomli_w.dumps(current).encode())
    backup.unlink(missing_ok=True)
    return Change(path, "restored", "edited since install: kept the edits, comments not kept")


def _fresh(origin: str | None) -> Toml:
    return {} if origin is None else {"server": origin}


def _server(path: Path, text: str) -> object:
    return _parse(path, text.encode()).get("server")


def _parse(path: Path, raw: bytes) -> Toml:
    try:
        return tomllib.loads(raw.decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML ({exc}); left unchanged") from None


def _without(data: Toml, state: _State) -> Toml:
    """``data`` less the mirror table we added (and the ``host`` section if that empties it)."""
    hosts = {k: v for k, v in _hosts(data).items() if k.rstrip("/") != state.mirror}
    rest = {k: v for k, v in data.items() if k != "host"}
    return {**rest, "host": hosts} if hosts else rest


def _mirror_first(data: Toml, mirror: str) -> Toml:
    others = {k: v for k, v in _hosts(data).items() if k.rstrip("/") != mirror}
    hosts = {mirror: {"capabilities": list(CAPABILITIES)}, **others}
    return {**{k: v for k, v in data.items() if k != "host"}, "host": hosts}


def _hosts(data: Toml) -> Toml:
    hosts = data.get("host", {})
    if not isinstance(hosts, dict):
        raise ConfigError(f'`host` must be a table of [host."<url>"] tables, not {hosts!r}')
    return hosts


def _describe(state: _State, data: Toml) -> str:
    server = data.get("server", "the registry host")
    kept = "kept existing file's server and tables; " if state.merged else ""
    return f"{kept}mirror {state.mirror}, fallback {server}"


def _missing_dirs(directory: Path) -> int:
    """How many of ``directory`` and its parents do not exist yet."""
    count = 0
    while not directory.exists():
        count, directory = count + 1, directory.parent
    return count


def _remove_dirs(directory: Path, count: int) -> None:
    """Remove the ``count`` directories we made, innermost first, while they are empty."""
    for _ in range(count):
        try:
            directory.rmdir()
        except OSError:
            return
        directory = directory.parent
    # A removal is made durable by syncing the parent of the last directory removed.
    if os.path.isdir(directory):
        fsync_dir(directory)
