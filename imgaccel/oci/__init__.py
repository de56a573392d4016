"""OCI distribution types: digests, repository names, references, media types.

Nouns: ``digest`` (Digest), ``reference`` (repository names, tags, the Docker Hub rule),
``media`` (manifest media types), ``manifest`` (the digest a registry names a manifest by).
Pure functions only; imports nothing from imgaccel but ``errors``.
"""

from imgaccel.oci.digest import Digest
from imgaccel.oci.manifest import manifest_digest
from imgaccel.oci.media import INDEX_TYPES, MANIFEST_ACCEPT, MANIFEST_TYPES
from imgaccel.oci.reference import ImageRef, is_tag, validate_name, validate_reference

__all__ = [
    "INDEX_TYPES",
    "MANIFEST_ACCEPT",
    "MANIFEST_TYPES",
    "Digest",
    "ImageRef",
    "is_tag",
    "manifest_digest",
    "validate_name",
    "validate_reference",
]
