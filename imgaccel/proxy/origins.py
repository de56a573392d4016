"""How each origin answered the node lately: for ``imgaccel status``, ``imgaccel doctor`` and
the ``imgaccel_upstream_up`` metric.

A node that cannot reach an origin (a proxy it was not told about, a firewall, an expired
credential at a realm, a certificate) fails nothing a user sees: containerd, finding the mirror
failing, pulls from the origin itself, and the pull works, without the cache and the peers. So
the node keeps, per registry, when the origin last answered and when and why a request to it
last failed (the client's last word after its retries: :class:`imgaccel.upstream.UpstreamClient`
reports it), and says so where an operator looks.

An origin "answered" when it sent any status under 500 but 429 (a 404 or 401 is an answer); a
failure is no answer at all (connection, TLS, proxy, timeout) or a 5xx or 429 that outlasted
the retries. The registries kept are bounded (``MAX_REGISTRIES``, the least recently heard of
dropped first): with ``registries = []`` clients name them. The metrics name only the
configured upstreams; every other registry shares the label ``other``.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass

from imgaccel.proxy.metrics import NodeMetrics

MAX_REGISTRIES = 64
OTHER = "other"


@dataclass(slots=True)
class OriginState:
    """One registry's latest answer and latest failure (Unix times)."""

    last_answer: float | None = None
    last_failure: float | None = None
    failure: str | None = None  # why the latest failure failed
    failures: int = 0

    @property
    def up(self) -> bool:
        """The latest request was answered."""
        return self.last_failure is None or (
            self.last_answer is not None and self.last_answer >= self.last_failure
        )

    def as_json(self) -> dict[str, object]:
        return {
            "up": self.up,
            "last_answer": self.last_answer,
            "last_failure": self.last_failure,
            "failure": self.failure,
            "failures": self.failures,
        }


class OriginHealth:
    """The latest outcome per registry (see the module docstring)."""

    def __init__(
        self,
        metrics: NodeMetrics,
        configured: Collection[str],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._metrics = metrics
        self._configured = frozenset(configured)
        self._clock = clock
        self._states: OrderedDict[str, OriginState] = OrderedDict()

    def report(self, registry: str, failure: str | None) -> None:
        """The upstream client's word on one request to ``registry``: None when it answered."""
        state = self._states.pop(registry, None) or OriginState()
        self._states[registry] = state  # the most recently heard of last
        while len(self._states) > MAX_REGISTRIES:
            self._states.popitem(last=False)
        now = self._clock()
        label = registry if registry in self._configured else OTHER
        if failure is None:
            state.last_answer = now
        else:
            state.last_failure, state.failure = now, failure
            state.failures += 1
            self._metrics.upstream_failures.labels(label).inc()
        self._metrics.upstream_up.labels(label).set(1 if state.up else 0)

    def as_json(self) -> dict[str, dict[str, object]]:
        """Registry -> its state, in the order they were last heard of, latest last."""
        return {registry: state.as_json() for registry, state in self._states.items()}
