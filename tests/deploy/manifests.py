"""Reading deploy/kubernetes: its YAML documents and what its kustomizations list."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

KUBERNETES = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
KUSTOMIZATION = "kustomization.yaml"

Doc = dict[str, Any]


def documents(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def kustomizations() -> list[Path]:
    return sorted(KUBERNETES.rglob(KUSTOMIZATION))


def resources(kustomization: Path) -> list[Path]:
    """The files a kustomization lists, resolved beside it."""
    listed = yaml.safe_load(kustomization.read_text())["resources"]
    return [kustomization.parent / name for name in listed]


def all_resources() -> Iterator[tuple[Path, Doc]]:
    for kustomization in kustomizations():
        for path in resources(kustomization):
            for doc in documents(path):
                yield path, doc


def find(path: Path, kind: str, name: str) -> Doc:
    for doc in documents(path):
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise LookupError(f"no {kind}/{name} in {path}")


def pod_spec(workload: Doc) -> Doc:
    spec: Doc = workload["spec"]["template"]["spec"]
    return spec


def container(spec: Doc, name: str, *, init: bool = False) -> Doc:
    for item in spec["initContainers" if init else "containers"]:
        if item["name"] == name:
            return dict(item)
    raise LookupError(name)
