"""Who may talk to the tracker: hosts holding a certificate signed by the cluster CA.

The tracker serves HTTPS and requires a client certificate at the TLS handshake
(``ssl.CERT_REQUIRED`` against the cluster CA), for announces and the JSON API alike; a host
without the cluster's credentials does not get as far as an HTTP request.

Why this works for announces too: libtorrent 2.1 makes an SSL torrent's HTTPS tracker
connections with that torrent's SSL context (``torrent.cpp``: ``req.ssl_ctx = m_ssl_ctx``), so it
presents the certificate given to ``torrent_handle.set_ssl_certificate()`` and trusts only the
CA in the torrent's ``ssl-cert``. Verified with libtorrent 2.1.1 (see the integration test).
Consequences for the engine, which must:

* make SSL torrents (``create_torrent.set_root_cert(cluster CA)``): plain torrents announce
  without a client certificate and are refused;
* add a torrent paused, call ``set_ssl_certificate`` and only then resume it, or its first
  announce goes out without a certificate (libtorrent retries, but later);
* reach the tracker by a name or address in the tracker certificate's SANs. ``issue(ca, "*")``
  has the SAN ``*`` that libtorrent's SSL-torrent verification wants; add the tracker's real
  host name to ``dns=`` or ``ips=``.

Hence no shared announce key in the URL: it would be a second secret to distribute and rotate,
and it would leak into logs; the certificate already authenticates every caller.
Plain HTTP without any authentication is only for ``--insecure`` (tests, development).
"""

from __future__ import annotations

import ssl
from pathlib import Path


def server_context(ca_cert: Path, cert: Path, key: Path) -> ssl.SSLContext:
    """TLS server context that requires a client certificate signed by ``ca_cert``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    context.load_verify_locations(cafile=ca_cert)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(ca_cert: Path, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    """TLS client context for talking to the tracker (nodes, seeders, tests)."""
    context = ssl.create_default_context(cafile=ca_cert)
    if cert is not None and key is not None:
        context.load_cert_chain(cert, key)
    return context
