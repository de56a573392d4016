"""dockerd's ``daemon.json``: the mirror in ``registry-mirrors``, every other key kept.

dockerd consults ``registry-mirrors`` for Docker Hub images only; images of any other registry
are pulled straight from that registry. It reads the list at start and on ``SIGHUP``
(``systemctl reload docker``).

The mirror goes first in the list (dockerd tries mirrors in order, then Docker Hub). A file
that already lists it is left byte for byte; one that needs a change is rewritten as
two-space-indented JSON in its own key order. ``remove`` takes the mirror out again, drops the
key if the list is then empty, and the file if nothing else is left in it (dockerd treats a
missing ``daemon.json`` and ``{}`` alike).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from imgaccel.errors import ConfigError
from imgaccel.hostconfig.files import Change, check_mirror_url, fsync_dir, write_atomic

DEFAULT_DAEMON_JSON = Path("/etc/docker/daemon.json")
MIRRORS_KEY = "registry-mirrors"


def configure(path: Path, mirror: str) -> Change:
    """Put ``mirror`` first in ``registry-mirrors`` of the ``daemon.json`` at ``path``."""
    mirror = check_mirror_url(mirror)
    config = _load(path)
    mirrors = _mirrors(path, config)
    if mirrors and _same(mirrors[0], mirror):
        return Change(path, "unchanged")
    config[MIRRORS_KEY] = [mirror, *(m for m in mirrors if not _same(m, mirror))]
    existed = path.exists()
    write_atomic(path, _dump(config))
    note = "dockerd reads it at start or on SIGHUP: systemctl reload docker"
    return Change(path, "updated" if existed else "created", note)


def remove(path: Path, mirror: str) -> Change:
    """Take ``mirror`` out of ``registry-mirrors``; leave every other key and mirror."""
    mirror = check_mirror_url(mirror)
    if not path.exists():
        return Change(path, "absent")
    config = _load(path)
    mirrors = _mirrors(path, config)
    kept = [m for m in mirrors if not _same(m, mirror)]
    if kept == mirrors:
        return Change(path, "unchanged", f"{mirror} is not in {MIRRORS_KEY}")
    if kept:
        config[MIRRORS_KEY] = kept
    else:
        del config[MIRRORS_KEY]
    if not config:
        path.unlink()
        fsync_dir(path.parent)
        return Change(path, "removed", "nothing else was in it")
    write_atomic(path, _dump(config))
    return Change(
        path, "updated", "dockerd reads it at start or on SIGHUP: systemctl reload docker"
    )


def _load(path: Path) -> dict[str, Any]:
    """The JSON object in ``path`` (an absent or blank file is ``{}``)."""
    if not path.exists():
        return {}
    text = path.read_text(errors="replace")
    if not text.strip():
        return {}
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            "left unchanged"
        ) from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path} must hold a JSON object, not {type(config).__name__}")
    return config


def _mirrors(path: Path, config: dict[str, Any]) -> list[str]:
    mirrors = config.get(MIRRORS_KEY, [])
    if not isinstance(mirrors, list) or not all(isinstance(m, str) for m in mirrors):
        raise ConfigError(f"{path}: {MIRRORS_KEY!r} must be a list of URLs; left unchanged")
    return mirrors


def _same(a: str, b: str) -> bool:
    # dockerd stores mirrors with a trailing slash; either spelling is the same mirror.
    return a.rstrip("/") == b.rstrip("/")


def _dump(config: dict[str, Any]) -> bytes:
    return (json.dumps(config, indent=2, ensure_ascii=False) + "\n").encode()
