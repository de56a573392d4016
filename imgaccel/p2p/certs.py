"""The cluster's certificate authority and the certificates it issues to nodes.

Peers (libtorrent SSL torrents) and the tracker API accept only certificates signed by the
cluster CA, so a host without the cluster's credentials can neither download from a peer nor
announce. Keys are EC P-256; the CA lives for ten years, node certificates for one (both
``days=``, ``imgaccel certs init|issue --days``).

Nothing renews them. Once a certificate or the CA has expired, peers and the tracker refuse it at
the TLS handshake and every node quietly falls back to the origin, so a process logs each
certificate's end when it loads it (a warning within :data:`EXPIRY_WARNING`), and
:class:`Validity` feeds the expiry metric and ``imgaccel doctor``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger(__name__)

CA_CERT, CA_KEY, NODE_CERT, NODE_KEY = "ca.crt", "ca.key", "node.crt", "node.key"
#: A certificate closer than this to its end is worth a warning (at start, in ``doctor``).
EXPIRY_WARNING = dt.timedelta(days=30)
#: What to do about it, for logs and ``doctor`` (docs/deploy.md has the commands).
RENEW_HINT = (
    "renew it (`imgaccel certs issue`, the CA `certs init`), update its Secret and restart: "
    "docs/deploy.md, 'Renewing certificates'"
)


@dataclass(frozen=True)
class KeyPair:
    """A PEM certificate and its PEM private key."""

    cert_pem: bytes
    key_pem: bytes

    def write(self, directory: Path, cert_name: str, key_name: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / cert_name).write_bytes(self.cert_pem)
        key_path = directory / key_name
        key_path.touch(mode=0o600, exist_ok=True)
        key_path.chmod(0o600)
        key_path.write_bytes(self.key_pem)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _validity(days: float, valid_from: dt.datetime | None) -> tuple[dt.datetime, dt.datetime]:
    """(not before, not after): from ``valid_from`` until ``days`` after it; by default from
    five minutes ago (for clocks a little behind) until ``days`` from now."""
    if valid_from is None:
        return _now() - dt.timedelta(minutes=5), _now() + dt.timedelta(days=days)
    return valid_from, valid_from + dt.timedelta(days=days)


def make_ca(
    cluster: str = "imgaccel", days: float = 3650, *, valid_from: dt.datetime | None = None
) -> KeyPair:
    """A new self-signed cluster CA (``valid_from``: see :func:`_validity`)."""
    not_before, not_after = _validity(days, valid_from)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{cluster} cluster CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def issue(
    ca: KeyPair,
    common_name: str = "*",
    *,
    dns: tuple[str, ...] = ("*", "localhost"),
    ips: tuple[str, ...] = ("127.0.0.1",),
    days: float = 365,
    valid_from: dt.datetime | None = None,
) -> KeyPair:
    """A node certificate signed by ``ca``, good as TLS server and client (``valid_from``: see
    :func:`_validity`).

    The default name ``*`` matters: libtorrent checks that a peer's certificate names the torrent
    (or ``*``), and torrents here are named by blob digest.
    """
    not_before, not_after = _validity(days, valid_from)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def load_ca(directory: Path) -> KeyPair:
    return KeyPair((directory / CA_CERT).read_bytes(), (directory / CA_KEY).read_bytes())


@dataclass(frozen=True)
class Validity:
    """Whom a certificate names and when it is good: the first certificate of a PEM file (the
    one TLS presents, or the CA the cluster trusts)."""

    subject: str
    not_before: dt.datetime
    not_after: dt.datetime

    @classmethod
    def of(cls, pem: bytes) -> Validity:
        """The validity of ``pem``'s first certificate; ValueError if it holds none."""
        cert = x509.load_pem_x509_certificate(pem)
        subject = cert.subject.rfc4514_string()
        return cls(subject, cert.not_valid_before_utc, cert.not_valid_after_utc)

    def valid(self, now: dt.datetime) -> bool:
        return self.not_before <= now < self.not_after

    def needs_renewal(self, now: dt.datetime) -> bool:
        """Not valid now, or valid for less than :data:`EXPIRY_WARNING`."""
        return not self.valid(now) or self.not_after - now < EXPIRY_WARNING

    def describe(self, now: dt.datetime) -> str:
        """``SUBJECT, valid until T (N days left)``, ``..., expired T (N days ago)`` or
        ``..., not valid before T (in N days)``."""
        if now < self.not_before:
            when = f"not valid before {_stamp(self.not_before)} (in {_span(self.not_before - now)})"
        elif now >= self.not_after:
            when = f"expired {_stamp(self.not_after)} ({_span(now - self.not_after)} ago)"
        else:
            when = f"valid until {_stamp(self.not_after)} ({_span(self.not_after - now)} left)"
        return f"{self.subject}, {when}"


def _stamp(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _span(delta: dt.timedelta) -> str:
    if delta >= dt.timedelta(days=2):
        return f"{delta.days} days"
    return f"{int(delta.total_seconds() // 3600)} hours"


def log_validity(
    role: str, path: Path, pem: bytes, now: dt.datetime | None = None
) -> Validity | None:
    """Log what a process loaded at start: the subject and end of the ``role`` certificate
    (``node``, ``tracker``, ``ca``) read from ``path``; a WARNING when it is not valid now or
    ends within :data:`EXPIRY_WARNING`. None (and a warning) when ``pem`` holds no certificate.
    """
    try:
        validity = Validity.of(pem)
    except ValueError as exc:
        log.warning("%s certificate %s: cannot read it: %s", role, path, exc)
        return None
    now = now or _now()
    fields = {"cert": role, "path": str(path), "not_after": validity.not_after.isoformat()}
    text = f"{role} certificate {path}: {validity.describe(now)}"
    if not validity.needs_renewal(now):
        log.info("%s", text, extra=fields)
    else:
        then = "stops when it ends" if validity.valid(now) else "is off: pulls go to the origin"
        log.warning("%s; peer-to-peer %s; %s", text, then, RENEW_HINT, extra=fields)
    return validity


# RFC 7919 ffdhe2048, the standard 2048-bit finite-field group (``openssl genpkey -genparam
# -algorithm DH -pkeyopt group:ffdhe2048``). libtorrent's set_ssl_certificate wants a DH params
# file and reports a torrent error without one; the named group is vetted, costs nothing to
# "generate" (a fresh 2048-bit group takes 15 s or more here), and ECDHE is what the EC node keys
# actually negotiate.
FFDHE2048_PEM = b"""-----BEGIN DH PARAMETERS-----
MIIBCAKCAQEA//////////+t+FRYortKmq/cViAnPTzx2LnFg84tNpWp4TZBFGQz
+8yTnc4kmz75fS/jY2MMddj2gbICrsRhetPfHtXV/WVhJDP1H18GbtCFY2VVPe0a
87VXE15/V8k1mE8McODmi3fipona8+/och3xWKE2rec1MKzKT0g6eXq8CrGCsyT7
YdEIqUuyyOP7uWrat2DX9GgdT0Kj3jlN9K5W7edjcrsZCwenyO4KbXCeAvzhzffi
7MA0BM0oNC9hkXL+nOmFg/+OTxIy7vKBg8P+OxtMb61zO7X8vC7CIAXFjvGDfRaD
ssbzSibBsu/6iGtCOGEoXJf//////////wIBAg==
-----END DH PARAMETERS-----
"""


@dataclass(frozen=True)
class NodeIdentity:
    """What a node proves itself with to peers: the cluster CA certificate and its own pair."""

    ca_cert_pem: bytes
    node: KeyPair

    @classmethod
    def load(cls, directory: Path) -> NodeIdentity:
        """``ca.crt``, ``node.crt`` and ``node.key`` from ``directory``; each certificate's
        subject and end are logged (see :func:`log_validity`)."""
        node = KeyPair((directory / NODE_CERT).read_bytes(), (directory / NODE_KEY).read_bytes())
        identity = cls((directory / CA_CERT).read_bytes(), node)
        log_validity("node", directory / NODE_CERT, identity.node.cert_pem)
        log_validity("ca", directory / CA_CERT, identity.ca_cert_pem)
        return identity

    @classmethod
    def issue(cls, ca: KeyPair, common_name: str = "*") -> NodeIdentity:
        """A fresh node identity signed by ``ca`` (tests, single-host setups)."""
        return cls(ca.cert_pem, issue(ca, common_name))

    def validity(self) -> dict[str, Validity]:
        """``node`` (the certificate this node presents) and ``ca`` (the CA it trusts), each
        when its PEM holds a certificate."""
        found: dict[str, Validity] = {}
        for role, pem in (("node", self.node.cert_pem), ("ca", self.ca_cert_pem)):
            try:
                found[role] = Validity.of(pem)
            except ValueError:
                continue  # logged at load; libtorrent and the tracker will refuse it too
        return found
