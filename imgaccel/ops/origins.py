"""Does the running node reach its origins? What it last heard from each: the ``origins`` of
its ``GET /_imgaccel/status`` (:mod:`imgaccel.proxy.origins`).

A node that cannot reach an origin fails no pull: containerd pulls around it, and the only sign
is that nothing is cached or shared. So ``doctor`` says which origins the node's latest request
failed for, and why, in the node's own words (a refused proxy, a certificate, a timeout).
"""

from __future__ import annotations

from typing import Any

from imgaccel.ops.check import Check, fail, ok, skip
from imgaccel.ops.units import clock

NAME = "origins"


def origin_checks(status: dict[str, Any] | None, why_none: str = "") -> list[Check]:
    """``origin REGISTRY`` for each registry the node has asked, latest last; a single skipped
    ``origins`` when there is nothing to go by (``why_none``: why there is no status)."""
    if status is None:
        return [skip(NAME, why_none or "the node did not answer")]
    origins = status.get("origins")
    if not isinstance(origins, dict):
        return [skip(NAME, "the node does not report its origins (an older imgaccel)")]
    if not origins:
        return [skip(NAME, "the node has sent no origin request since it started")]
    return [_check(str(registry), state) for registry, state in origins.items()]


def answered(state: dict[str, Any]) -> str:
    """``answered HH:MM:SS`` for a registry that is up, with the failures on record (also
    ``imgaccel status``'s words)."""
    text = f"answered {clock(state['last_answer'])}"
    if state.get("failures"):
        text += f" ({state['failures']} failed, the last at {clock(state['last_failure'])})"
    return text


def _check(registry: str, state: dict[str, Any]) -> Check:
    name = f"origin {registry}"
    if state.get("up"):
        return ok(name, f"the node's latest request was {answered(state)}")
    return fail(
        name,
        f"the node's latest request failed, at {clock(state['last_failure'])}: {state['failure']}",
        "while it does, containerd pulls this registry's images around the mirror (they work, "
        "nothing is cached or shared): check the upstream's url and credentials in the node's "
        "settings, its proxy (HTTPS_PROXY / NO_PROXY in the node's environment, or the "
        "upstream's proxy: docs/deploy.md, Behind an HTTP proxy) and that the node's host can "
        "reach it",
    )
