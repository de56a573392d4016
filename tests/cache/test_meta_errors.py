"""What a meta.db query raises when SQLite fails: a disk that is full or failing is the node's
:class:`MetaUnwritable` (a 503 to a client); anything else is a bug and stays as SQLite said."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from imgaccel.cache.meta import Manifest, MetaStore
from imgaccel.errors import MetaUnwritable
from imgaccel.oci.digest import Digest
from tests.tmpfs import fill_up, tmpfs

DIGEST = Digest.parse("sha256:" + "a" * 64)


class FailingDb:
    """A connection whose every statement fails with SQLite's ``code``."""

    def __init__(self, code: int, message: str) -> None:
        self.code, self.message = code, message

    def execute(self, sql: str, parameters: Any = ()) -> sqlite3.Cursor:
        error = sqlite3.OperationalError(self.message)
        error.sqlite_errorcode = self.code
        raise error


@pytest.mark.parametrize(
    ("code", "message"),
    [(sqlite3.SQLITE_FULL, "database or disk is full"), (778, "disk I/O error")],  # IOERR_WRITE
)
def test_a_full_or_failing_disk_is_meta_unwritable(tmp_path: Path, code: int, message: str) -> None:
    meta = MetaStore(tmp_path / "meta.db")
    meta._db = FailingDb(code, message)  # type: ignore[assignment]

    with pytest.raises(MetaUnwritable, match=message) as raised:
        meta.put_tag("registry.example", "app", "v1", DIGEST)
    assert raised.value.status == 503 and raised.value.code == "UNAVAILABLE"
    with pytest.raises(MetaUnwritable):
        meta.tag("registry.example", "app", "v1")


def test_any_other_sqlite_error_is_raised_as_it_is(tmp_path: Path) -> None:
    meta = MetaStore(tmp_path / "meta.db")
    meta._db.execute("DROP TABLE tags")  # a bug's kind of error: "no such table"

    with pytest.raises(sqlite3.OperationalError, match="no such table") as raised:
        meta.put_tag("registry.example", "app", "v1", DIGEST)
    assert not isinstance(raised.value, MetaUnwritable)


@pytest.mark.system
def test_a_real_full_disk_is_meta_unwritable(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", "1m") as disk:
        meta = MetaStore(disk / "meta.db")
        fill_up(disk, leave=0)
        try:
            with pytest.raises(MetaUnwritable, match="database or disk is full"):
                meta.put_manifest(Manifest(DIGEST, "application/json", b"x" * 100_000))
        finally:
            meta.close()
