"""TLS to origin registries: one ``ssl.SSLContext`` per distinct upstream TLS setting.

An upstream's ``ca_file`` is trusted *in addition to* the system's trust store, as containerd's
hosts.toml ``ca`` adds to the system pool: the redirects an origin sends to blob storage (S3, a
CDN) and a token realm on a public host keep verifying. One context serves every request made for
an upstream: its API, the redirects it sends and its token realm. containerd fetches tokens with
the host's TLS configuration too, so a realm behind the same internal CA is trusted, and is shown
the same client certificate.

:meth:`OriginTLS.load` reads and checks the files when the node starts: a missing, unreadable or
wrong file is a :class:`~imgaccel.errors.ConfigError` naming the upstream and the file, not a
failure at the first pull.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from imgaccel.errors import ConfigError
from imgaccel.upstream.config import UpstreamSettings

log = logging.getLogger(__name__)

#: tls_verify, ca_file, client_cert, client_key: what a context is made of.
_Key = tuple[bool, Path | None, Path | None, Path | None]
_DEFAULT: _Key = (True, None, None, None)


class OriginTLS:
    """The TLS contexts of origin requests, each built once and shared by the upstreams whose
    TLS settings are the same (every unlisted registry shares the default one)."""

    def __init__(self) -> None:
        self._contexts: dict[_Key, ssl.SSLContext] = {}

    @classmethod
    def load(cls, upstreams: Mapping[str, UpstreamSettings]) -> OriginTLS:
        """The contexts of the default and of every upstream in ``upstreams`` (registry host ->
        settings), built now. Raises ConfigError naming the upstream and the file at fault."""
        tls = cls()
        tls._get(_DEFAULT)
        for host, upstream in upstreams.items():
            if upstream.ca_file is not None and not upstream.tls_verify:
                log.warning(
                    'upstreams."%s".ca_file is not used: tls_verify is false (any certificate '
                    "is accepted)",
                    host,
                )
            try:
                tls.context(upstream)
            except ConfigError as exc:
                raise ConfigError(f'upstreams."{host}": {exc}') from exc.__cause__
        return tls

    def context(self, upstream: UpstreamSettings) -> ssl.SSLContext:
        """The context for ``upstream``'s requests; built on first use for one ``load`` did
        not see (an unlisted registry: the default, already built)."""
        return self._get(_key(upstream))

    def _get(self, key: _Key) -> ssl.SSLContext:
        context = self._contexts.get(key)
        if context is None:
            context = self._contexts[key] = _build(*key)
        return context


def _key(upstream: UpstreamSettings) -> _Key:
    ca_file = upstream.ca_file if upstream.tls_verify else None
    return upstream.tls_verify, ca_file, upstream.client_cert, upstream.client_key


def _build(
    verify: bool, ca_file: Path | None, client_cert: Path | None, client_key: Path | None
) -> ssl.SSLContext:
    if verify:
        context = ssl.create_default_context()  # the system's trust store
        if ca_file is not None:
            context.load_verify_locations(cadata=_ca_certificates(ca_file))
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if client_cert is not None and client_key is not None:
        _load_client_pair(context, client_cert, client_key)
    context.set_alpn_protocols(["http/1.1"])  # as aiohttp's own contexts: it speaks no h2
    return context


def _read(setting: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {setting} {path}: {exc.strerror or exc}") from exc


def _ca_certificates(path: Path) -> bytes:
    """The certificates of a PEM bundle, as concatenated DER (what ``cadata`` takes)."""
    pem = _read("ca_file", path)  # a ConfigError, which is a ValueError too
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise ConfigError(f"ca_file {path} holds no PEM certificate") from exc
    return b"".join(c.public_bytes(serialization.Encoding.DER) for c in certificates)


def _load_client_pair(context: ssl.SSLContext, cert: Path, key: Path) -> None:
    """Check each file with ``cryptography`` first: OpenSSL's errors ("PEM lib") name neither."""
    cert_pem, key_pem = _read("client_cert", cert), _read("client_key", key)
    try:
        x509.load_pem_x509_certificates(cert_pem)
    except ValueError as exc:
        raise ConfigError(f"client_cert {cert} holds no PEM certificate") from exc
    try:
        serialization.load_pem_private_key(key_pem, password=None)
    except TypeError as exc:  # encrypted: OpenSSL would ask for the passphrase on the terminal
        raise ConfigError(f"client_key {key} is encrypted; give it unencrypted") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"client_key {key} holds no PEM private key") from exc
    try:
        context.load_cert_chain(cert, key, password=_no_passphrase)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        reason = getattr(exc, "reason", None) or exc
        raise ConfigError(
            f"client_key {key} is not the key of client_cert {cert} ({reason})"
        ) from exc


def _no_passphrase() -> bytes:
    raise ValueError("the key is encrypted")
