"""A small real filesystem for tests of a full disk: a tmpfs mounted on a directory."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def tmpfs(directory: Path, size: str = "16m") -> Iterator[Path]:
    """A tmpfs of ``size`` on ``directory`` (made if missing) while the block runs; the test is
    skipped where mounting is not permitted (it needs root, or CAP_SYS_ADMIN)."""
    directory.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(directory)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        reason = mounted.stderr.decode(errors="replace").strip() or f"exit {mounted.returncode}"
        pytest.skip(f"cannot mount a tmpfs on {directory} (needs root): {reason}")
    try:
        yield directory
    finally:
        # Lazily: a file a closing server still holds must not fail the teardown.
        subprocess.run(["umount", "--lazy", str(directory)], check=False)


def free_bytes(directory: Path) -> int:
    found = os.statvfs(directory)
    return found.f_bavail * found.f_frsize


def fill_up(directory: Path, leave: int) -> Path:
    """Write a file into ``directory`` until only ``leave`` bytes are free there; the file."""
    filler = directory / "filler"
    with open(filler, "wb") as out:
        while (room := free_bytes(directory) - leave) > 0:
            out.write(b"\0" * min(room, 1 << 20))
            out.flush()
            os.fsync(out.fileno())
    return filler
