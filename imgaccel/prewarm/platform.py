"""Platforms (``os/arch[/variant]``) and choosing the manifests of an image index."""

from __future__ import annotations

import platform as _host
from dataclasses import dataclass
from typing import Any

from imgaccel.errors import ConfigError

_MACHINES = {
    "x86_64": ("amd64", None),
    "amd64": ("amd64", None),
    "aarch64": ("arm64", None),
    "arm64": ("arm64", None),
    "armv7l": ("arm", "v7"),
    "ppc64le": ("ppc64le", None),
    "s390x": ("s390x", None),
    "riscv64": ("riscv64", None),
}


@dataclass(frozen=True, slots=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        """``linux/arm64`` or ``linux/arm/v7``; ConfigError otherwise."""
        parts = text.strip().split("/")
        if not 2 <= len(parts) <= 3 or not all(parts):
            raise ConfigError(f"a platform is os/arch[/variant], got {text!r}")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    @classmethod
    def host(cls) -> Platform:
        """The platform of this machine, as OCI indexes name it."""
        machine = _host.machine().lower()
        arch, variant = _MACHINES.get(machine, (machine, None))
        return cls("linux", arch, variant)

    def matches(self, entry: dict[str, Any]) -> bool:
        """Whether an index entry's ``platform`` object is this platform."""
        if entry.get("os") != self.os or entry.get("architecture") != self.architecture:
            return False
        theirs = entry.get("variant")
        # arm64 images rarely name the v8 variant; an absent variant matches any.
        return self.variant is None or theirs is None or theirs == self.variant

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


def select(
    manifests: list[dict[str, Any]], wanted: Platform | None, all_platforms: bool
) -> list[dict[str, Any]]:
    """The index entries to warm: every runnable one, or the first that matches ``wanted``.

    Attestation manifests (``unknown/unknown``) are never chosen: no runtime pulls them.
    """
    runnable = [m for m in manifests if _platform(m).get("os") not in (None, "unknown")]
    if all_platforms:
        return runnable
    target = wanted or Platform.host()
    return [m for m in runnable if target.matches(_platform(m))][:1]


def _platform(entry: dict[str, Any]) -> dict[str, Any]:
    found = entry.get("platform")
    return found if isinstance(found, dict) else {}
