"""Cluster certificates valid from and until given times (expired, expiring, not yet valid):
``imgaccel.p2p.certs`` makes them, given when they start."""

from __future__ import annotations

import datetime as dt

from imgaccel.p2p.certs import KeyPair, issue, make_ca


def days_from_now(days: float) -> dt.datetime:
    """Now plus ``days``, in UTC, to the second (X.509 times carry no fractions)."""
    return (dt.datetime.now(dt.UTC) + dt.timedelta(days=days)).replace(microsecond=0)


def _days(not_before: dt.datetime, not_after: dt.datetime) -> float:
    return (not_after - not_before) / dt.timedelta(days=1)


def dated_ca(not_before: dt.datetime, not_after: dt.datetime) -> KeyPair:
    """A self-signed cluster CA valid from ``not_before`` until ``not_after``."""
    return make_ca("dated", _days(not_before, not_after), valid_from=not_before)


def dated_pair(ca: KeyPair, not_before: dt.datetime, not_after: dt.datetime) -> KeyPair:
    """A node certificate of ``ca`` (CN and SAN ``*``, ``localhost``, 127.0.0.1, as
    ``imgaccel certs issue`` makes them) valid from ``not_before`` until ``not_after``."""
    return issue(ca, days=_days(not_before, not_after), valid_from=not_before)
