"""Which origin and repository a mirror request is for, and whether the node may contact it.

containerd names the registry in the ``?ns=`` query; dockerd's ``registry-mirrors`` sends none, so
the default registry (Docker Hub) is meant, with its rule that official images live under
``library/``; on a ``registry_listen`` listener, that listener's registry. Whoever can create a
pod names that registry: the ``registries`` setting limits which ones the node fetches from
(:class:`RegistryAllowlist`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiohttp import web

from imgaccel.oci.reference import (
    DOCKER_HUB,
    DOCKER_HUB_ALIASES,
    docker_hub_name,
    validate_host,
    validate_name,
)
from imgaccel.proxy.errors import RegistryNotAllowed
from imgaccel.settings import Settings
from imgaccel.upstream.config import UpstreamSettings

log = logging.getLogger(__name__)

#: Refused registries remembered to log each once; a client naming ever new hosts (any pod can)
#: fills it, and the rest are logged at DEBUG.
MAX_LOGGED_REGISTRIES = 1024


@dataclass(frozen=True)
class Target:
    registry: str
    repo: str


def target_of(request: web.Request, settings: Settings) -> Target:
    """The validated registry and repository of a ``/v2/<name>/...`` request."""
    ns = request.query.get("ns")
    registry = validate_host(ns) if ns else default_registry(request, settings)
    if registry in DOCKER_HUB_ALIASES:
        registry = DOCKER_HUB
    name = validate_name(request.match_info["name"])
    if registry == DOCKER_HUB:
        name = docker_hub_name(name)
    return Target(registry, name)


def default_registry(request: web.Request, settings: Settings) -> str:
    """The registry meant by a request without ``?ns=``: that of the ``registry_listen``
    listener it came in on, else ``default_registry``."""
    transport = request.transport
    sockname = transport.get_extra_info("sockname") if transport is not None else None
    port = sockname[1] if isinstance(sockname, tuple) and len(sockname) >= 2 else None
    return settings.registry_for_port(port)


def client_auth(request: web.Request) -> str | None:
    """The client's own ``Authorization`` header, if it sent one we can pass on."""
    value = request.headers.get("Authorization", "").strip()
    if not value or len(value) > 16384 or not value.isprintable():
        return None
    return value


class RegistryAllowlist:
    """The ``registries`` setting at work: which registries the node may contact, each refused
    one logged once (at WARNING, with what asked first) however often it is asked for."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._logged: set[str] = set()

    def allows(self, registry: str) -> bool:
        return self._settings.registry_allowed(registry)

    def warn_unused_settings(self) -> None:
        """Log what the operator configured for registries the setting refuses: ``upstreams``
        tables, ``registry_listen`` listeners and ``default_registry`` (nothing is allowed
        implicitly; the default Docker Hub table is no statement)."""
        settings = self._settings
        if "upstreams" in settings.model_fields_set:
            for host in settings.upstreams:
                if not self.allows(host):
                    log.warning(
                        "upstreams.%s is not used: the `registries` setting does not allow %s",
                        host,
                        host,
                    )
        for address, registry in settings.registry_listen.items():
            if not self.allows(registry):
                log.warning(
                    "registry_listen %s answers 403 to every request without ?ns=: the "
                    "`registries` setting does not allow %s",
                    address,
                    registry,
                )
        if not self.allows(settings.default_registry):
            log.warning(
                "default_registry %s is not allowed by the `registries` setting: clients that "
                "send no ?ns= (dockerd) get 403 on %s",
                settings.default_registry,
                settings.listen,
            )

    def refuses(self, registry: str, asker: str) -> bool:
        """True (logged once per registry) when ``registry`` is not allowed; ``asker`` says
        who wanted it, e.g. "a client", "the tracker's hot list"."""
        if self.allows(registry):
            return False
        if registry in self._logged or len(self._logged) >= MAX_LOGGED_REGISTRIES:
            log.debug(
                "registry %s is not allowed (setting `registries`); %s asked", registry, asker
            )
            return True
        self._logged.add(registry)
        log.warning(
            "registry %s is not allowed by this node's `registries` setting: it is not "
            "contacted for %s or anyone else (logged once per registry)",
            registry,
            asker,
        )
        return True

    def check(self, registry: str, asker: str = "a client") -> None:
        """Raise :class:`RegistryNotAllowed` (403 DENIED) for a registry not allowed."""
        if self.refuses(registry, asker):
            raise RegistryNotAllowed(
                f"registry {registry} is not allowed through this mirror (imgaccel setting "
                "`registries`); pull from it directly",
                detail={"registry": registry},
            )

    def upstream_for(self, registry: str) -> UpstreamSettings:
        """The origin of an allowed registry: the upstream client's only way to an origin, so
        no code path can reach a registry the setting refuses."""
        self.check(registry, "a fetch inside the node")
        return self._settings.upstream_for(registry)


ALLOWLIST = web.AppKey("registry_allowlist", RegistryAllowlist)
