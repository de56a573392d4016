"""The pull-time benchmark: N nodes pulling one GPU-shaped image at once, several ways.

Nouns: ``network`` (bridge, namespaces, tbf limits), ``cluster`` (origin, nodes, service hosts),
``daemons`` (imgaccel commands as subprocesses), ``deployment`` (cluster CA, tracker, seeder and
node daemons for one repeat), ``scenarios`` (direct, proxy, imgaccel-*), ``runner`` (repeats,
timing, counting), ``cpu`` (whose CPU-seconds a timed pull used), ``results`` (data and the
physical bound), ``report`` (JSON, Markdown, PNG), ``cleanup`` (leftovers of killed runs), ``cli``.

Layering: ``cli`` → ``runner`` → ``scenarios`` → ``deployment`` → ``cluster``/``daemons`` →
``network`` and :mod:`imgaccel.testing`; ``runner`` reads ``cpu`` (``/proc``, read only);
``results`` and ``report`` touch nothing on the system.
The benchmark drives imgaccel only through its command line, never by importing its services.
"""

from imgaccel.bench.report import markdown, write_all
from imgaccel.bench.results import Params, Report, ScenarioResult, bound_seconds
from imgaccel.bench.runner import run_bench
from imgaccel.bench.scenarios import SCENARIOS

__all__ = [
    "SCENARIOS",
    "Params",
    "Report",
    "ScenarioResult",
    "bound_seconds",
    "markdown",
    "run_bench",
    "write_all",
]
