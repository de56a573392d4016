"""``imgaccel tracker``: the cluster's BitTorrent tracker, metainfo registry and fetch election.

Nouns: ``config`` (its settings section), ``swarm`` (peers per
info-hash, pure), ``store`` (SQLite state), ``notify`` (long-poll wake-ups), ``state`` (what the
handlers share), ``announce`` (``/announce``, ``/scrape``), ``metainfo`` (``/v1/metainfo``,
``/v1/holdings``), ``claims`` (``/v1/claims``), ``seeders`` (``/v1/seeders``), ``metrics``
(``/metrics``, ``/healthz``), ``auth`` (TLS with client certificates), ``app`` (``make_app``
and the HTTP API reference), ``server`` (``running``: the app on a socket), ``client`` (the
typed client nodes and seeders use).

A service package: it imports core (``imgaccel.oci``, ``imgaccel.errors``) and
``imgaccel.p2p.certs`` (its certificates' validity), never the CLI;
``swarm`` and ``store`` import nothing from the web layer; ``client`` imports nothing
of the server side, so a node can use it without the tracker.
"""

from imgaccel.tracker.app import make_app, sweep
from imgaccel.tracker.config import TrackerSettings
from imgaccel.tracker.server import Served, running

__all__ = ["Served", "TrackerSettings", "make_app", "running", "sweep"]
