"""What a benchmark run measured, and the physical bound it is compared with.

The bound for one node pulling an image of ``S`` bytes is ``S / B_origin + S / B_node``: the
image has to leave the origin once and arrive at the node once, and with no pipelining between
the two links that is as fast as it gets. Ratios above 1 are the price of the distribution
scheme; a scheme that pipelines (streams through a mirror) can go below 1.
"""

from __future__ import annotations

import os
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Status = Literal["ok", "skipped", "failed"]


def mbit_to_bytes_per_s(mbit: float) -> float:
    return mbit * 1e6 / 8


def bound_seconds(image_bytes: int, origin_mbit: float, node_mbit: float) -> float:
    """``S / B_origin + S / B_node`` in seconds."""
    return image_bytes / mbit_to_bytes_per_s(origin_mbit) + image_bytes / mbit_to_bytes_per_s(
        node_mbit
    )


@dataclass(frozen=True)
class Params:
    """The knobs of a run (recorded in the report so a result can be reproduced)."""

    nodes: tuple[int, ...] = (4,)
    image_bytes: int = 300_000_000
    origin_mbit: float = 200.0
    node_mbit: float = 800.0
    proxy_mbit: float = 800.0
    repeat: int = 1
    scenarios: tuple[str, ...] = ()
    #: False: `ctr images pull --no-unpack`, transfer only (separates imgaccel's share of a pull
    #: from containerd's unpacking, which is CPU-bound when N nodes share 2 cores).
    unpack: bool = True


@dataclass
class Repeat:
    """One repeat: every node pulled at the same moment."""

    pull_seconds: dict[str, float]
    origin_bytes: int
    #: Bytes the origin sent while the scenario warmed up (not part of ``origin_bytes``).
    warmup_origin_bytes: int = 0
    #: Blob GETs that reached the origin straight from a node although a mirror was configured.
    bypassed: int = 0
    #: How long the scenario's warm-up took (for imgaccel-prewarm: the cluster prewarm job on
    #: N nodes, from submitting it until every node holds the image); 0 when it has none.
    warmup_seconds: float = 0.0
    #: Bytes each node put on its link during the timed pull (TCP/IP and TLS framing included):
    #: in a warm run the one warm node's figure against S shows how often it sent each byte.
    node_sent: dict[str, int] = field(default_factory=dict)
    #: CPU-seconds used during the timed pull: ``machine`` (every core, busy) and the run's
    #: processes by kind (see :mod:`imgaccel.bench.cpu`).
    cpu_seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class ScenarioResult:
    scenario: str
    nodes: int
    image_bytes: int
    bound_seconds: float
    status: Status = "ok"
    reason: str = ""
    repeats: list[Repeat] = field(default_factory=list)

    def _times(self) -> list[float]:
        return [t for r in self.repeats for t in r.pull_seconds.values()]

    @property
    def median_seconds(self) -> float | None:
        times = self._times()
        return statistics.median(times) if times else None

    @property
    def max_seconds(self) -> float | None:
        times = self._times()
        return max(times) if times else None

    @property
    def origin_bytes(self) -> int | None:
        """Median over repeats of what the origin sent during the timed pulls."""
        if not self.repeats:
            return None
        return int(statistics.median(r.origin_bytes for r in self.repeats))

    @property
    def time_ratio(self) -> float | None:
        median = self.median_seconds
        return None if median is None else median / self.bound_seconds

    @property
    def max_time_ratio(self) -> float | None:
        worst = self.max_seconds
        return None if worst is None else worst / self.bound_seconds

    @property
    def bytes_ratio(self) -> float | None:
        sent = self.origin_bytes
        return None if sent is None else sent / self.image_bytes

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            median_seconds=self.median_seconds,
            max_seconds=self.max_seconds,
            origin_bytes=self.origin_bytes,
            time_ratio=self.time_ratio,
            max_time_ratio=self.max_time_ratio,
            bytes_ratio=self.bytes_ratio,
        )
        return data


@dataclass
class Report:
    params: Params
    image_bytes: int
    results: list[ScenarioResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: The machine's cores, which every simulated host shares.
    cores: int = field(default_factory=lambda: os.cpu_count() or 1)

    def as_json(self) -> dict[str, Any]:
        return {
            "params": asdict(self.params),
            "image_bytes": self.image_bytes,
            "cores": self.cores,
            "bound_seconds": bound_seconds(
                self.image_bytes, self.params.origin_mbit, self.params.node_mbit
            ),
            "notes": self.notes,
            "results": [r.as_json() for r in self.results],
        }
