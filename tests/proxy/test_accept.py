"""What the node asks the origin for, given the client's Accept headers."""

import pytest

from imgaccel.oci.media import MANIFEST_ACCEPT, OCI_MANIFEST
from imgaccel.proxy.manifests import client_accept


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([], MANIFEST_ACCEPT),
        (["*/*"], MANIFEST_ACCEPT),
        ([" */* "], MANIFEST_ACCEPT),
        ([OCI_MANIFEST], OCI_MANIFEST),
        ([OCI_MANIFEST, "*/*"], f"{OCI_MANIFEST}, */*"),  # containerd sends several headers
    ],
)
def test_client_accept(headers: list[str], expected: str) -> None:
    assert client_accept(headers) == expected
