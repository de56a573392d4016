"""Atomic replacement of configuration files, and the ``Change`` an edit reports.

A runtime reads its configuration at any moment (containerd re-reads ``hosts.toml`` at every
pull), so a file is never visible half-written: bytes go to a temporary file in the same
directory, are fsynced, and renamed over the old one, which keeps its mode and owner.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from imgaccel.errors import ConfigError

#: Where ``imgaccel node`` listens by default.
DEFAULT_MIRROR = "http://127.0.0.1:65001"


@dataclass(frozen=True)
class Change:
    """What one edit did to one file.

    ``action`` is one of ``created``, ``updated``, ``unchanged``, ``removed``, ``restored`` or
    ``absent`` (nothing to remove); ``note`` says anything the user should know about it.
    """

    path: Path
    action: str
    note: str = ""

    def describe(self) -> str:
        text = f"{self.action}: {self.path}"
        return f"{text} ({self.note})" if self.note else text


def check_mirror_url(url: str) -> str:
    """``url`` without a trailing slash, if it is an absolute http(s) URL; else ``ConfigError``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{url!r} is not an http:// or https:// URL")
    return url.rstrip("/")


def write_atomic(path: Path, data: bytes, *, like: Path | None = None) -> None:
    """Replace ``path`` with ``data`` in one rename. The file gets the mode and owner of
    ``like`` (default: of ``path`` itself); a file with neither gets mode 0644."""
    path.parent.mkdir(parents=True, exist_ok=True)
    source = path if like is None else like
    old = source.stat() if source.exists() else None
    # mkstemp makes the file 0600: it is never readable by more than the original was.
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as tmp_file:
            tmp_file.write(data)
            tmp_file.flush()
            os.fsync(tmp_file.fileno())
        if old is None:
            tmp.chmod(0o644)
        else:
            copy_mode_and_owner(old, tmp)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def copy_mode_and_owner(source: os.stat_result, path: Path) -> None:
    """Give ``path`` the mode and (when we may) the owner recorded in ``source``."""
    if os.geteuid() == 0:
        with contextlib.suppress(PermissionError):  # no CAP_CHOWN: root owns it then
            os.chown(path, source.st_uid, source.st_gid)
    path.chmod(source.st_mode & 0o7777)  # after chown, which may clear setuid/setgid


def fsync_dir(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):  # some filesystems refuse fsync on a directory
            os.fsync(fd)
    finally:
        os.close(fd)
