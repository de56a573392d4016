"""Which HTTP proxy, if any, a request to an origin goes through.

Nodes in a company network often reach registries only through an HTTP proxy. containerd and
dockerd take it from ``HTTPS_PROXY``, ``HTTP_PROXY`` and ``NO_PROXY`` in their environment (Go's
``httpproxy.FromEnvironment``); the node reads them the same way, so that the mirror reaches
what the runtime would reach without it, and an upstream's ``proxy`` setting names one for that
origin alone, or ``direct`` for none. The rules, as Go's:

* an ``https://`` URL goes through ``HTTPS_PROXY``, an ``http://`` one through ``HTTP_PROXY``
  (the upper-case name first, then the lower-case one); a value without a scheme is ``http://``;
* ``localhost`` and loopback addresses are never sent through the environment's proxy;
* ``NO_PROXY`` is a comma-separated list: ``*`` (no proxy at all), an IP address, a CIDR block,
  a domain (``example.com``: it and its subdomains; ``.example.com``: its subdomains only), each
  optionally with ``:port`` (then only that port).

Only an origin's traffic goes through it, its redirects to blob storage and its token realm
included: the tracker and the peers are the cluster's own. Plain HTTP is sent to the proxy with
the absolute URL, HTTPS through a ``CONNECT`` tunnel. Only ``http://`` proxies (the common kind:
Squid, tinyproxy, a corporate gateway); their credentials go as ``Proxy-Authorization: Basic``
and are never logged.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import unquote

from yarl import URL

from imgaccel.errors import ConfigError
from imgaccel.upstream.auth import basic_header

if TYPE_CHECKING:  # config validates its proxy with Proxy.parse
    from imgaccel.upstream.config import UpstreamSettings

#: The value of an upstream's ``proxy`` that sends it to the origin directly, whatever the
#: environment says.
DIRECT = "direct"
_FORM = "a proxy URL is http://[user:password@]host[:port]"
_LOOPBACK_NAMES = frozenset({"localhost", "localhost."})


@dataclass(frozen=True)
class Proxy:
    """An HTTP proxy: where it listens and the credentials it takes, if any."""

    url: URL  # http://host:port, without credentials
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never in a log line

    @classmethod
    def parse(cls, value: str, source: str) -> Proxy:
        """``value`` (``[http://][user:password@]host[:port]``), named ``source`` in the
        ConfigError for anything else."""
        raw = value.strip()
        try:
            url = URL(raw if "://" in raw else f"http://{raw}")
            host = url.host
            port = url.port
        except ValueError as exc:
            raise ConfigError(f"{source}: not a proxy URL ({exc}): {_FORM}") from exc
        if url.scheme != "http":
            raise ConfigError(
                f"{source}: only http:// proxies are supported (the connection to the proxy is "
                f"plain; HTTPS origins are tunnelled through it with CONNECT), not {url.scheme}://"
            )
        if not host or url.path not in ("", "/") or url.query_string or url.fragment:
            raise ConfigError(f"{source}: not a proxy URL: {_FORM}")
        username = unquote(url.raw_user) if url.raw_user is not None else None
        password = unquote(url.raw_password) if url.raw_password is not None else None
        return cls(URL.build(scheme="http", host=host, port=port), username, password)

    @property
    def headers(self) -> dict[str, str] | None:
        """aiohttp's ``proxy_headers``: the credentials, if it takes any."""
        authorization = self.authorization()
        return {"Proxy-Authorization": authorization} if authorization else None

    def authorization(self) -> str | None:
        """The ``Proxy-Authorization`` header's value, if it takes credentials."""
        if self.username is None:
            return None
        return basic_header(self.username, self.password or "")

    def __str__(self) -> str:
        """The URL without the credentials: for logs and error messages."""
        return str(self.url)


@dataclass(frozen=True)
class _Bypass:
    """One entry of ``NO_PROXY``."""

    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None
    domain: str  # lower case, without a trailing dot; empty for a network entry
    subdomains_only: bool  # ".example.com"
    port: int | None

    @classmethod
    def parse(cls, entry: str) -> _Bypass:
        host, port = entry, None
        if entry.startswith("["):  # [::1]:5000
            host, _, rest = entry[1:].partition("]")
            port = _port(rest.removeprefix(":"))
        elif entry.count(":") == 1:  # host:port (an IPv6 address has several colons)
            host, _, text = entry.partition(":")
            port = _port(text)
        try:
            return cls(ipaddress.ip_network(host, strict=False), "", False, port)
        except ValueError:
            pass
        domain = host.lower().rstrip(".")
        return cls(None, domain.removeprefix("*").lstrip("."), domain.startswith((".", "*.")), port)

    def matches(self, host: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address | None,
                port: int) -> bool:  # fmt: skip
        if self.port is not None and self.port != port:
            return False
        if self.network is not None:
            return address is not None and address in self.network
        if not self.domain:
            return False
        if host == self.domain:
            return not self.subdomains_only
        return host.endswith("." + self.domain)


def _port(text: str) -> int | None:
    return int(text) if text.isdigit() and 0 < int(text) < 65536 else None


@dataclass(frozen=True)
class Environment:
    """The proxy settings of the node's environment."""

    https: Proxy | None = None
    http: Proxy | None = None
    no_proxy: tuple[_Bypass, ...] = ()
    no_proxy_at_all: bool = False  # NO_PROXY=*

    @classmethod
    def read(cls, environ: Mapping[str, str] | None = None) -> Environment:
        """From ``environ`` (default: the process's); ConfigError for a proxy URL that cannot
        be used."""
        env = os.environ if environ is None else environ
        https = _first(env, "HTTPS_PROXY")
        http = _first(env, "HTTP_PROXY")
        entries = [e.strip() for e in (_first(env, "NO_PROXY") or ("", ""))[1].split(",")]
        return cls(
            Proxy.parse(https[1], https[0]) if https else None,
            Proxy.parse(http[1], http[0]) if http else None,
            tuple(_Bypass.parse(e) for e in entries if e and e != "*"),
            "*" in entries,
        )

    def proxy_for(self, url: URL) -> Proxy | None:
        """The proxy the environment names for ``url``; None to go directly."""
        proxy = self.https if url.scheme == "https" else self.http
        if proxy is None or self.no_proxy_at_all or url.host is None:
            return None
        host = url.host.lower().rstrip(".")
        try:
            address: ipaddress.IPv4Address | ipaddress.IPv6Address | None
            address = ipaddress.ip_address(host)
        except ValueError:
            address = None
        if host in _LOOPBACK_NAMES or (address is not None and address.is_loopback):
            return None
        port = url.port or 0
        if any(entry.matches(host, address, port) for entry in self.no_proxy):
            return None
        return proxy

    def describe(self) -> str | None:
        """One line for the start-up log, without credentials; None when no proxy is set."""
        pairs = (("HTTPS_PROXY", self.https), ("HTTP_PROXY", self.http))
        named = [f"{name} {proxy}" for name, proxy in pairs if proxy is not None]
        if not named:
            return None
        bypass = "*" if self.no_proxy_at_all else f"{len(self.no_proxy)} entries"
        return f"{', '.join(named)}; NO_PROXY {bypass}; loopback addresses directly"


def _first(env: Mapping[str, str], name: str) -> tuple[str, str] | None:
    """``(variable, value)`` of the first of ``NAME``, ``name`` set to a non-empty value."""
    for variable in (name, name.lower()):
        if value := env.get(variable, "").strip():
            return variable, value
    return None


class Proxies:
    """The proxy of each request to an origin: its upstream's ``proxy`` setting, else the
    environment's."""

    def __init__(self, environment: Environment | None = None) -> None:
        """``environment``: None to send origins without a ``proxy`` setting directly."""
        self._environment = environment or Environment()
        self._named: dict[str, Proxy | None] = {}

    def for_url(self, url: URL, upstream: UpstreamSettings) -> Proxy | None:
        """The proxy for ``url``, a URL of ``upstream``'s traffic; None to go directly."""
        if upstream.proxy is None:
            return self._environment.proxy_for(url)
        return self.named(upstream)

    def named(self, upstream: UpstreamSettings) -> Proxy | None:
        """The proxy of ``upstream``'s ``proxy`` setting; None for ``direct`` or unset."""
        setting = upstream.proxy
        if setting is None or setting.strip().lower() == DIRECT:
            return None
        if setting not in self._named:  # validated with the settings: parses
            self._named[setting] = Proxy.parse(setting, "proxy")
        return self._named[setting]
