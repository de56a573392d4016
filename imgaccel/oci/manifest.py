"""The digest a registry names a manifest by.

For every manifest type but one it is the digest of the body. Docker's legacy schema 1
manifests (``DOCKER_V1_SIGNED``) carry their signatures inside the JSON (libtrust's "pretty"
JWS), and the registry, docker and containerd name them by the digest of the body without the
signatures: its first ``formatLength`` bytes followed by ``formatTail``, both read from the
first signature's protected header. A registry may sign such a manifest anew for every GET, so
only that digest is stable; the signatures are not covered by it.
"""

from __future__ import annotations

import base64
import json

from imgaccel.oci.digest import Digest
from imgaccel.oci.media import DOCKER_V1_SIGNED


def manifest_digest(body: bytes, media_type: str, algorithm: str = "sha256") -> Digest:
    """The digest of a manifest ``body`` of type ``media_type``, as its registry names it. A
    schema 1 body whose signature block cannot be read is named by its bytes, as any other
    manifest: it matches no digest a registry gives, and is never served for one."""
    if media_type == DOCKER_V1_SIGNED:
        payload = signed_payload(body)
        if payload is not None:
            return Digest.of(payload, algorithm)
    return Digest.of(body, algorithm)


def signed_payload(body: bytes) -> bytes | None:
    """The bytes a schema 1 manifest's signatures sign (see the module docstring); None when
    ``body`` has no readable signature block."""
    try:
        protected = json.loads(body)["signatures"][0]["protected"]
        header = json.loads(_base64url(protected))
        length, tail = header["formatLength"], _base64url(header["formatTail"])
    except (ValueError, KeyError, IndexError, TypeError, RecursionError):
        return None  # binascii.Error and UnicodeDecodeError are ValueErrors too
    if not isinstance(length, int) or not 0 <= length <= len(body):
        return None
    return body[:length] + tail


def _base64url(text: object) -> bytes:
    """JOSE's base64url, which leaves out the padding."""
    if not isinstance(text, str):
        raise TypeError("not a base64url string")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
