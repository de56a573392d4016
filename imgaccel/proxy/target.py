"""Which origin and repository a mirror request is for.

containerd names the registry in the ``?ns=`` query; dockerd's ``registry-mirrors`` sends none, so
the default registry (Docker Hub) is meant, with its rule that official images live under
``library/``.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from imgaccel.oci.reference import (
    DOCKER_HUB,
    DOCKER_HUB_ALIASES,
    docker_hub_name,
    validate_host,
    validate_name,
)


@dataclass(frozen=True)
class Target:
    registry: str
    repo: str


def target_of(request: web.Request, default_registry: str) -> Target:
    """The validated registry and repository of a ``/v2/<name>/...`` request."""
    ns = request.query.get("ns")
    registry = validate_host(ns) if ns else default_registry
    if registry in DOCKER_HUB_ALIASES:
        registry = DOCKER_HUB
    name = validate_name(request.match_info["name"])
    if registry == DOCKER_HUB:
        name = docker_hub_name(name)
    return Target(registry, name)


def client_auth(request: web.Request) -> str | None:
    """The client's own ``Authorization`` header, if it sent one we can pass on."""
    value = request.headers.get("Authorization", "").strip()
    if not value or len(value) > 16384 or not value.isprintable():
        return None
    return value
