"""``?ns=`` hosts: what :func:`validate_host` lets through is a host the HTTP client can ask.

No sockets: the live table of hostile ``ns`` requests is in ``test_hostile.py``; here every
accepted host is also checked to be one yarl parses and the IDNA codec encodes, the two places
that raised a bare ValueError (a 500) before the check was strict.
"""

from __future__ import annotations

import pytest
from yarl import URL

from imgaccel.errors import NameInvalid
from imgaccel.oci.reference import ImageRef, validate_host

GOOD = [
    ("localhost", "localhost"),
    ("localhost:5000", "localhost:5000"),
    ("registry-1.docker.io", "registry-1.docker.io"),
    ("Registry.Example.COM:443", "registry.example.com:443"),
    ("10.0.0.1:5000", "10.0.0.1:5000"),
    ("[::1]:5000", "[::1]:5000"),
    ("[FD00::1]", "[fd00::1]"),
    ("[::ffff:10.0.0.1]:65535", "[::ffff:10.0.0.1]:65535"),
    ("a" * 63 + ".example", "a" * 63 + ".example"),
    (".".join(["a" * 63] * 3 + ["a" * 61]), ".".join(["a" * 63] * 3 + ["a" * 61])),  # 253
]

BAD = [
    "",
    "example.com:99999",  # yarl: Port out of range
    "example.com:65536",
    "example.com:0",
    "example.com:",
    "example.com:+1",
    "example.com:\u0661",
    "a..b",  # IDNA: label empty
    "a" * 64 + ".example",  # IDNA: label too long
    ".".join(["a" * 63] * 3 + ["a" * 62]),  # 254 characters
    ".example",
    "example.",
    "-a.example",
    "a-.example",
    "a.-b.example",
    "a_b.example",
    "caf\u00e9.example",
    "999.1.1.1",  # aiohttp: not a canonical IPv4 address
    "1.2.3",
    "01.2.3.4",
    "::1",
    "[::1",
    "[zz::1]",
    "[]",
    "[fe80::1%eth0]",
    "[::1]:0",
    "a:b:c",
    "user@example.com",
    "example.com/x",
    "example.com\n",
]


@pytest.mark.parametrize(("host", "canonical"), GOOD)
def test_good_hosts_pass_and_the_http_client_can_ask_them(host: str, canonical: str) -> None:
    assert validate_host(host) == canonical
    name = URL(f"https://{canonical}/v2/").host  # yarl raises for a port out of range
    assert name is not None
    if ":" not in name:  # not IPv6: what aiohttp encodes with the IDNA codec
        name.encode("idna")


@pytest.mark.parametrize("host", BAD)
def test_bad_hosts_are_name_invalid(host: str) -> None:
    with pytest.raises(NameInvalid):
        validate_host(host)


def test_an_image_reference_may_name_an_ipv6_registry() -> None:
    ref = ImageRef.parse("[fd00::1]:5000/team/app:v1")
    assert (ref.registry, ref.name, ref.tag) == ("[fd00::1]:5000", "team/app", "v1")
    with pytest.raises(NameInvalid):
        ImageRef.parse("registry.example:99999/team/app:v1")


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("index.docker.io/ubuntu", "docker.io/library/ubuntu:latest"),
        ("Index.Docker.IO/ubuntu:22.04", "docker.io/library/ubuntu:22.04"),
        ("registry-1.docker.io/bitnami/redis:7", "docker.io/bitnami/redis:7"),
        ("docker.io/ubuntu", "docker.io/library/ubuntu:latest"),
        ("ubuntu", "docker.io/library/ubuntu:latest"),
        ("docker.example/ubuntu", "docker.example/ubuntu:latest"),
    ],
)
def test_docker_hubs_other_names_in_an_image_reference_are_docker_io(
    text: str, canonical: str
) -> None:
    """As docker and containerd parse them, so a prewarm warms what a ``docker.io`` pull uses."""
    assert str(ImageRef.parse(text)) == canonical
