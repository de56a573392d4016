"""Point a node's container runtime at the local imgaccel mirror, and take it back.

Nouns:

- ``containerd``: one ``<hosts-dir>/<registry>/hosts.toml`` per registry, with the mirror as the
  first ``[host]`` and the origin kept as the ``server`` containerd falls back to.
- ``docker``: the ``registry-mirrors`` list of dockerd's ``daemon.json``.
- ``files``: atomic replacement of a configuration file, and the ``Change`` each edit reports.

Every edit is idempotent (a second run writes nothing) and reversible (``remove`` takes back
exactly what ``configure`` added). Core package: imports only ``imgaccel.errors``; the CLI in
``imgaccel.cli.hostconfig`` is a thin shell over it.
"""

from imgaccel.hostconfig.containerd import DEFAULT_HOSTS_DIR, default_origin
from imgaccel.hostconfig.files import DEFAULT_MIRROR, Change

__all__ = ["DEFAULT_HOSTS_DIR", "DEFAULT_MIRROR", "Change", "default_origin"]
