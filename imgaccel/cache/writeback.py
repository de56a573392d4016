"""Start writing a file's dirty pages to disk early, so that its fsync has little left to do.

A blob's commit fsyncs it before the client gets the last byte. Left alone, the kernel keeps a
fill's pages dirty until ``vm.dirty_background_ratio`` of RAM is dirty (tens of GB on a GPU node)
or they are 30 s old, so the fsync of a multi-GB layer would write most of it at the end, while
the client waits. Asking for writeback every few MB as the fill lands (Linux ``sync_file_range``
with ``SYNC_FILE_RANGE_WRITE``: start the I/O, do not wait for it) spreads that work over the
download; RocksDB's ``bytes_per_sync`` does the same. Measured on this project's VM (ext4): the
fsync after 512 MiB went from 0.31-0.46 s to 0.02-0.07 s.

Where the call does not exist (not Linux) or the filesystem refuses it, this is a no-op.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
from collections.abc import Callable

from imgaccel.cache import libc

log = logging.getLogger(__name__)

SYNC_FILE_RANGE_WRITE = 2  # from <linux/fs.h>: start writeback of dirty pages, do not wait

#: How many bytes a writer lets land before asking for their writeback.
EVERY = 8 << 20


#: Errors that mean the call will never work for this kind of file.
UNSUPPORTED = {errno.ENOSYS, errno.EINVAL, errno.ESPIPE, errno.EOPNOTSUPP}


def _load() -> Callable[..., int] | None:
    return libc.function(
        "sync_file_range", [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    )


_sync_file_range = _load()


def start_writeback(fd: int) -> bool:
    """Ask the kernel to start writing every dirty page of ``fd`` (offset 0, length 0: the whole
    file; clean pages cost nothing). Returns immediately. False when unsupported here."""
    global _sync_file_range
    if _sync_file_range is None:
        return False
    if _sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE) == 0:
        return True
    error = ctypes.get_errno()
    if error in UNSUPPORTED:
        log.debug("sync_file_range unsupported (%s): commits fsync all at once", os.strerror(error))
        _sync_file_range = None
    return False
