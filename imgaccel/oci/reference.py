"""Repository names, tags and image references (the OCI distribution spec's grammar)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from imgaccel.errors import NameInvalid, TagInvalid
from imgaccel.oci.digest import Digest

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_NAME_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG_RE = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$")
_HOST_RE = re.compile(r"(?P<name>\[[0-9a-fA-F:.]+\]|[a-zA-Z0-9.-]+)(?::(?P<port>[0-9]{1,5}))?")
_LABEL_RE = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?")
MAX_HOST_NAME_LENGTH = 253
MAX_NAME_LENGTH = 255

DOCKER_HUB = "docker.io"
#: Other names of Docker Hub in an image reference: docker and containerd take ``index.docker.io``
#: (its legacy name) as ``docker.io``, and ``registry-1.docker.io`` is its API host.
DOCKER_HUB_ALIASES = frozenset({"index.docker.io", "registry-1.docker.io"})


def validate_name(name: str) -> str:
    """Return ``name`` if it is a valid repository name, else raise :class:`NameInvalid`."""
    if len(name) > MAX_NAME_LENGTH or not _NAME_RE.fullmatch(name):
        raise NameInvalid("invalid repository name", detail={"name": name[:300]})
    return name


def is_tag(reference: str) -> bool:
    return bool(_TAG_RE.fullmatch(reference))


def validate_reference(reference: str) -> str | Digest:
    """A manifest reference: a tag (returned as ``str``) or a :class:`Digest`."""
    if ":" in reference:
        return Digest.parse(reference)
    if not is_tag(reference):
        raise TagInvalid("invalid tag", detail={"reference": reference[:300]})
    return reference


def validate_host(host: str) -> str:
    """A registry host (``name[:port]``), as containerd's ``ns`` query gives it, lowercased.

    ``name`` is a DNS name (labels of 1-63 letters, digits and inner hyphens; 253 characters at
    most), an IPv4 address or a bracketed IPv6 address; ``port`` is 1-65535. Anything else is
    :class:`NameInvalid` here, not an error deep in the HTTP client (yarl refuses a port out of
    range, the IDNA codec an empty or 64-character label) when the origin is asked.
    """
    match = _HOST_RE.fullmatch(host)
    if match is None or not _valid_name(match["name"]) or not _valid_port(match["port"]):
        raise NameInvalid("invalid registry host", detail={"ns": host[:300]})
    return host.lower()


def _valid_name(name: str) -> bool:
    if name.startswith("["):
        return _is_ip(name[1:-1], ipaddress.IPv6Address)
    labels = name.split(".")
    if len(name) > MAX_HOST_NAME_LENGTH or not all(_LABEL_RE.fullmatch(x) for x in labels):
        return False
    # No top-level domain is numeric: a name ending in one is an IPv4 address (or is invalid,
    # like 999.1.1.1 or 1.2.3, which aiohttp refuses as "not a canonical IPv4 address").
    return not labels[-1].isdigit() or _is_ip(name, ipaddress.IPv4Address)


def _is_ip(text: str, kind: type[ipaddress.IPv4Address | ipaddress.IPv6Address]) -> bool:
    try:
        kind(text)
    except ValueError:
        return False
    return True


def _valid_port(port: str | None) -> bool:
    return port is None or 1 <= int(port) <= 65535


def docker_hub_name(name: str) -> str:
    """Docker Hub's rule: an official image ``ubuntu`` lives at ``library/ubuntu``."""
    return name if "/" in name else f"library/{name}"


@dataclass(frozen=True, slots=True)
class ImageRef:
    """A parsed image reference such as ``registry:5000/team/app:v1`` or ``ubuntu@sha256:...``."""

    registry: str
    name: str
    tag: str | None
    digest: Digest | None

    @property
    def reference(self) -> str:
        """What goes after ``/manifests/``: the digest when there is one, else the tag."""
        return str(self.digest) if self.digest else (self.tag or "latest")

    @classmethod
    def parse(cls, text: str) -> ImageRef:
        """Parse the way docker and containerd do: the first component is a registry when it
        has a dot or a colon or is ``localhost``; otherwise the image is on Docker Hub, which is
        also what :data:`DOCKER_HUB_ALIASES` name."""
        rest, digest = text, None
        if "@" in rest:
            rest, digest_text = rest.split("@", 1)
            digest = Digest.parse(digest_text)
        tag = None
        last = rest.rsplit("/", 1)[-1]
        if ":" in last:
            rest, tag = rest.rsplit(":", 1)
            if not is_tag(tag):
                raise TagInvalid("invalid tag", detail={"reference": text[:300]})
        first, _, remainder = rest.partition("/")
        if remainder and ("." in first or ":" in first or first == "localhost"):
            registry, name = validate_host(first), remainder
        else:
            registry, name = DOCKER_HUB, rest
        if registry in DOCKER_HUB_ALIASES:
            registry = DOCKER_HUB
        if registry == DOCKER_HUB:
            name = docker_hub_name(name)
        if tag is None and digest is None:
            tag = "latest"
        return cls(registry, validate_name(name), tag, digest)

    def __str__(self) -> str:
        text = f"{self.registry}/{self.name}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text
