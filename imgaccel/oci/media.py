"""Manifest media types."""

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_V1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})

#: What the mirror asks the origin for when the client did not say.
MANIFEST_ACCEPT = ", ".join([OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST])


def accepts(accept: str, media_type: str) -> bool:
    """Whether the Accept header value ``accept`` names ``media_type``, exactly or by a
    wildcard (``*/*``, ``type/*``). Parameters such as ``q`` are ignored, as the distribution
    registry ignores them."""
    media_type = media_type.lower()
    kind = media_type.split("/")[0]
    for item in accept.split(","):
        name = item.split(";")[0].strip().lower()
        if name in (media_type, "*/*", f"{kind}/*"):
            return True
    return False
