"""The seeder: a node role with a big disk and good origin connectivity (Kraken's "origin",
Dragonfly's "seed peer"). It runs the node's mirror and swarm, and takes the tracker's work:
cold blobs it fetches from the origin once for the whole cluster, then seeds.

Nouns: ``worker`` (the loop that takes work from the tracker), ``capacity`` (whether the cache
can keep a blob, decided before fetching it), ``metrics`` (SeederMetrics), ``app`` (``make_app``).
Service package: imports ``imgaccel.proxy`` and core packages.
"""

from imgaccel.seeder.app import make_app

__all__ = ["make_app"]
