"""The cluster's certificate authority and the certificates it issues to nodes.

Peers (libtorrent SSL torrents) and the tracker API accept only certificates signed by the
cluster CA, so a host without the cluster's credentials can neither download from a peer nor
announce. Keys are EC P-256; the CA lives for ten years, node certificates for one.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT, CA_KEY, NODE_CERT, NODE_KEY = "ca.crt", "ca.key", "node.crt", "node.key"


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


def make_ca(cluster: str = "imgaccel", days: int = 3650) -> KeyPair:
    """A new self-signed cluster CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{cluster} cluster CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(minutes=5))
        .not_valid_after(_now() + dt.timedelta(days=days))
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
    days: int = 365,
) -> KeyPair:
    """A node certificate signed by ``ca``, good as TLS server and client.

    The default name ``*`` matters: libtorrent checks that a peer's certificate names the torrent
    (or ``*``), and torrents here are named by blob digest.
    """
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
        .not_valid_before(_now() - dt.timedelta(minutes=5))
        .not_valid_after(_now() + dt.timedelta(days=days))
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
        """``ca.crt``, ``node.crt`` and ``node.key`` from ``directory``."""
        node = KeyPair((directory / NODE_CERT).read_bytes(), (directory / NODE_KEY).read_bytes())
        return cls((directory / CA_CERT).read_bytes(), node)

    @classmethod
    def issue(cls, ca: KeyPair, common_name: str = "*") -> NodeIdentity:
        """A fresh node identity signed by ``ca`` (tests, single-host setups)."""
        return cls(ca.cert_pem, issue(ca, common_name))
