"""The upstream (origin registry) settings section."""

from __future__ import annotations

from pathlib import Path

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_serializer,
    field_validator,
)

from imgaccel.upstream.proxy import DIRECT, Proxy

DOCKER_HUB_URL = "https://registry-1.docker.io"


class UpstreamSettings(BaseModel):
    """One origin registry."""

    model_config = ConfigDict(extra="forbid")  # a typo in a config file is an error

    url: str = Field(
        description="Base URL of the registry API, e.g. https://registry.example.com. "
        "http:// is allowed for local registries."
    )
    username: str | None = Field(default=None, description="Username for Basic or token auth.")
    password: SecretStr | None = Field(default=None, description="Password or access token.")
    tls_verify: bool = Field(
        default=True,
        description="Verify the origin's TLS certificate. false: any certificate is accepted "
        "(and ca_file is not used); a client certificate is still presented.",
    )
    ca_file: Path | None = Field(
        default=None,
        description="PEM file of CA certificates to trust for this origin, in addition to the "
        "system's trust store (as containerd's hosts.toml `ca`): for a registry behind a "
        "company-internal CA. Also trusted for the origin's redirects and its token realm. "
        "Read when the node starts (a relative path is from its working directory).",
    )
    client_cert: Path | None = Field(
        default=None,
        description="PEM client certificate (with any intermediates after it) to present to an "
        "origin that requires one (mTLS; containerd's hosts.toml `client`), and to its token "
        "realm. Needs client_key.",
    )
    client_key: Path | None = Field(
        default=None,
        validate_default=True,  # so that a client_cert without it is refused
        description="PEM private key of client_cert, unencrypted (may be the same file as "
        "client_cert). Set both or neither.",
    )
    proxy: str | None = Field(
        default=None,
        description="HTTP proxy for this origin's traffic (its API, its redirects to blob "
        "storage, its token realm): http://[user:password@]host[:port]; HTTPS is tunnelled "
        "through it with CONNECT. `direct` for none. Unset: the node's environment decides "
        "(HTTPS_PROXY, HTTP_PROXY, NO_PROXY, as containerd reads them; see "
        "upstream_client.proxy_from_environment).",
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"upstream URL must start with http:// or https://: {value!r}")
        return value.rstrip("/")

    @field_validator("proxy")
    @classmethod
    def _proxy(cls, value: str | None) -> str | None:
        if value is not None and value.strip().lower() != DIRECT:
            Proxy.parse(value, "proxy")  # a ConfigError (a ValueError) names what is wrong
        return value

    @field_serializer("proxy")
    def _proxy_shown(self, value: str | None) -> str | None:
        """Its password masked, as the upstream's own (``imgaccel config show``)."""
        if value is None or value.strip().lower() == DIRECT:
            return value
        proxy = Proxy.parse(value, "proxy")
        if proxy.username is None:
            return str(proxy)
        return str(proxy.url.with_user(proxy.username).with_password("**********"))

    @field_validator("client_key")
    @classmethod
    def _client_pair(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        # A field validator, not a model one: its error shows this path, not the whole table
        # (which holds the password).
        if (value is None) != (info.data.get("client_cert") is None):
            raise ValueError(
                "client_cert and client_key go together: set both (PEM files) or neither"
            )
        return value


class UpstreamClientSettings(BaseModel):
    """How the mirror talks to origins."""

    model_config = ConfigDict(extra="forbid")  # a typo in a config file is an error

    connect_timeout_seconds: float = Field(
        default=10.0, gt=0, description="TCP/TLS connect timeout."
    )
    read_timeout_seconds: float = Field(
        default=60.0, gt=0, description="Longest wait for the next bytes of a response."
    )
    socket_bodies: bool = Field(
        default=True,
        description="Read big blob bodies in a thread straight off a socket instead of on the "
        "event loop (less CPU per byte): plain HTTP off aiohttp's socket; HTTPS asked again, "
        "with the same headers, on a blocking TLS connection of the thread's own, while "
        "aiohttp's waits (if that answer differs or fails, aiohttp reads on). Costs an HTTPS "
        "origin a second request per big body and what it sent the first connection before it "
        "was closed (its socket buffers, a few MB).",
    )
    socket_body_min_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=0,
        description="Bodies smaller than this stay on the event loop, keeping their connection "
        "for the next request (a body read off the socket closes it).",
    )
    tls_body_min_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=0,
        description="The same for HTTPS bodies, which are asked for again on a connection of "
        "their own: the few MB the origin sent the first connection are then at most a tenth "
        "of the body.",
    )
    proxy_from_environment: bool = Field(
        default=True,
        description="Send origins without a `proxy` of their own through the proxy named by "
        "HTTPS_PROXY / HTTP_PROXY (or https_proxy / http_proxy) in the node's environment, "
        "except hosts in NO_PROXY (domains, IP addresses, CIDR blocks) and loopback addresses: "
        "the rules containerd and dockerd follow. false: straight to every origin.",
    )
    retries: int = Field(default=4, ge=0, description="Retries on 5xx and connection errors.")
    backoff_seconds: float = Field(default=0.2, ge=0, description="First retry delay; doubles.")
    parallel_ranges: int = Field(
        default=4, ge=1, le=32, description="Parallel range requests for one big blob."
    )
    parallel_after_seconds: float = Field(
        default=1.0,
        ge=0,
        description="A big blob streams on one connection first; parallel range requests fetch "
        "the rest once, over a period this long, that connection was slower than "
        "parallel_below_bytes_per_second and the clients reading the blob (if any) spent at "
        "least half of it waiting for bytes (a client that reads slower than one connection "
        "brings would gain nothing).",
    )
    parallel_below_bytes_per_second: int = Field(
        default=100_000_000,
        ge=0,
        description="Widen to parallel ranges only if the first connection was slower than "
        "this (a far origin, a per-connection limit).",
    )
    parallel_threshold_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1,
        description="Blobs at least this big are fetched with parallel range requests.",
    )
