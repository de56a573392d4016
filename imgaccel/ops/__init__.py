"""Operating a node: ``imgaccel doctor`` (is this node set up right, and what to fix) and
``imgaccel status`` (what the node is doing).

Nouns: ``check`` (one finding: ok, warn, FAIL or skip, with the fix), ``runtime`` (containerd's
``hosts.toml`` and ``config.toml``, dockerd's ``daemon.json``), ``reach`` (the node daemon and the
tracker answer), ``certificates`` (the node's, the CA's and the tracker's not expired, not about
to), ``upstreams`` (each upstream's TLS files load), ``disk`` (cache directory writable, free
space against the quota), ``doctor`` (runs every check, renders them), ``status`` (the node's
``/_imgaccel/status`` as a summary), ``units`` (byte counts for people).

Client-side tools: they read files and call the node and tracker over HTTP; they import core
packages (``hostconfig``, ``settings``, ``tracker.auth``, ``upstream.tls``) and never the
services' web apps. The CLI (``imgaccel.cli.doctor``, ``imgaccel.cli.status``) is a thin shell
over them.
"""

from imgaccel.ops.check import Check, Status
from imgaccel.ops.doctor import DoctorInputs, render, run_checks

__all__ = ["Check", "DoctorInputs", "Status", "render", "run_checks"]
