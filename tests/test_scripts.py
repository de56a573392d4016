"""scripts/install: when pip installs go to a virtual environment instead of the interpreter.

The fake interpreters are the real one run with PYTHONHOME on a tree of links to its standard
library, so that ``sysconfig.get_path("stdlib")`` is a directory the test controls.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

INSTALL = Path(__file__).resolve().parent.parent / "scripts" / "install"


def venv_reason(python: str, home: Path | None = None) -> str:
    env = {**os.environ, "PYTHONNOUSERSITE": "1"}
    env.pop("PYTHONHOME", None)
    if home is not None:
        env["PYTHONHOME"] = str(home)
    done = subprocess.run(
        ["bash", "-c", 'source "$1" && venv_reason "$2"', "bash", str(INSTALL), python],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def fake_home(tmp_path: Path, *, managed: bool) -> Path:
    """A prefix whose stdlib links to the real one's, without site-packages (so without pip)."""
    stdlib = Path(sysconfig.get_path("stdlib"))
    fake = tmp_path / stdlib.relative_to(sys.base_prefix)
    fake.mkdir(parents=True)
    for entry in stdlib.iterdir():
        if entry.name not in ("site-packages", "dist-packages", "EXTERNALLY-MANAGED"):
            (fake / entry.name).symlink_to(entry)
    if managed:
        (fake / "EXTERNALLY-MANAGED").write_text("[externally-managed]\nError=use apt\n")
    return tmp_path


def base_python() -> str:
    # A venv's python is a link to its base: PYTHONHOME must not meet the venv's pyvenv.cfg.
    return os.path.realpath(sys.executable)


def test_an_externally_managed_interpreter_gets_a_venv(tmp_path: Path) -> None:
    home = fake_home(tmp_path, managed=True)
    assert venv_reason(base_python(), home) == "is externally managed (PEP 668)"


def test_an_interpreter_without_pip_gets_a_venv(tmp_path: Path) -> None:
    home = fake_home(tmp_path, managed=False)
    assert venv_reason(base_python(), home) == "has no pip"


@pytest.mark.skipif(importlib.util.find_spec("pip") is None, reason="no pip here")
def test_the_interpreter_running_the_tests_takes_pip_installs() -> None:
    # On CI a pyenv Python; on Debian 12 the .venv that scripts/install made.
    marker = Path(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")
    if sys.prefix == sys.base_prefix and marker.exists():
        pytest.skip("the tests run on an externally managed interpreter")
    assert venv_reason(sys.executable) == ""
