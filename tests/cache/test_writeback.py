"""Early writeback: the real system call on a real file, and what happens where it is refused."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from imgaccel.cache import writeback


@pytest.mark.skipif(sys.platform != "linux", reason="sync_file_range is Linux's")
def test_writeback_of_a_written_file_starts_and_the_data_is_intact(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    data = os.urandom(3 << 20)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        assert writeback.start_writeback(fd)
        os.fsync(fd)
    finally:
        os.close(fd)
    assert path.read_bytes() == data


@pytest.fixture
def fresh_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """The system call loaded anew for one test (a test may turn it off); skip where absent."""
    monkeypatch.setattr(writeback, "_sync_file_range", writeback._load())
    if writeback._sync_file_range is None:
        pytest.skip("no sync_file_range in this libc")


@pytest.mark.usefixtures("fresh_call")
def test_a_file_that_cannot_take_it_turns_early_writeback_off() -> None:
    read, write = os.pipe()  # ESPIPE
    try:
        assert not writeback.start_writeback(write)
    finally:
        os.close(read)
        os.close(write)
    assert writeback._sync_file_range is None
    assert not writeback.start_writeback(0)


@pytest.mark.usefixtures("fresh_call")
def test_a_closed_descriptor_is_an_error_of_the_moment_not_of_the_system() -> None:
    assert not writeback.start_writeback(1 << 30)  # EBADF: no such descriptor
    assert writeback._sync_file_range is not None
