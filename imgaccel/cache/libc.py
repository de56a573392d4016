"""Linux system calls Python's ``os`` module does not offer, from the C library through ctypes."""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable
from typing import Any


def function(name: str, argtypes: list[Any]) -> Callable[..., int] | None:
    """The C library's ``name`` taking ``argtypes`` and returning an int (errno kept for
    ``ctypes.get_errno``); None where the C library or the function is not there."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        call = getattr(libc, name)
    except (OSError, AttributeError):
        return None
    call.argtypes = argtypes
    call.restype = ctypes.c_int
    return call  # type: ignore[no-any-return]
