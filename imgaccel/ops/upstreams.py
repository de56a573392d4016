"""Do the TLS files of each upstream load? ``ca_file``, ``client_cert`` and ``client_key``.

The node builds every upstream's TLS context when it starts (:meth:`OriginTLS.load`), and a
missing, unreadable or wrong file stops it with one line: a file that went bad since (a
certificate renewed into another path, a key that is not the new certificate's) only shows at
the next restart, when the node does not come back. ``doctor`` loads them the same way now. An
upstream without TLS files has nothing to check, and gets no line.
"""

from __future__ import annotations

from collections.abc import Mapping

from imgaccel.errors import ConfigError
from imgaccel.ops.check import Check, fail, ok, warn
from imgaccel.upstream.config import UpstreamSettings
from imgaccel.upstream.tls import OriginTLS


def upstream_tls(upstreams: Mapping[str, UpstreamSettings]) -> list[Check]:
    """``upstream TLS (HOST)`` for each upstream with TLS files, in the settings' order."""
    return [check for host, up in upstreams.items() if (check := _check(host, up)) is not None]


def _files(upstream: UpstreamSettings) -> str:
    named = [
        f"{setting} {path}"
        for setting, path in (
            ("ca_file", upstream.ca_file),
            ("client_cert", upstream.client_cert),
            ("client_key", upstream.client_key),
        )
        if path is not None
    ]
    return ", ".join(named)


def _check(host: str, upstream: UpstreamSettings) -> Check | None:
    files = _files(upstream)
    if not files:
        return None
    name = f"upstream TLS ({host})"
    unused_ca = upstream.ca_file is not None and not upstream.tls_verify
    try:
        # Without the unused ca_file: load would log that, and this check says it instead.
        OriginTLS.load(
            {host: upstream.model_copy(update={"ca_file": None}) if unused_ca else upstream}
        )
    except ConfigError as exc:
        return fail(
            name,
            str(exc),
            f'correct upstreams."{host}" in the node\'s config: each file must exist, be '
            "readable by the node and hold PEM, client_key unencrypted and the key of "
            "client_cert; until they load, the node does not start",
        )
    if unused_ca:
        return warn(
            name,
            f"ca_file {upstream.ca_file} is not used: tls_verify is false, so any certificate "
            "the origin shows is accepted",
            f'set upstreams."{host}".tls_verify = true to verify the origin against ca_file, or '
            "remove ca_file",
        )
    return ok(name, f"{files} load")
