"""Byte counts and times for people."""

from __future__ import annotations

import time

_UNITS = ("B", "kB", "MB", "GB", "TB", "PB")


def human_bytes(count: float) -> str:
    """``1234567`` -> ``1.2 MB`` (powers of 1000, like ``--quota 200G``)."""
    value, unit = float(count), _UNITS[0]
    for unit in _UNITS:
        if abs(value) < 1000 or unit == _UNITS[-1]:
            break
        value /= 1000
    return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"


def clock(when: float) -> str:
    """Local ``HH:MM:SS`` of a Unix time."""
    return time.strftime("%H:%M:%S", time.localtime(when))
