"""Where the machine's CPU went during a timed pull.

Every simulated host shares the machine's cores, so a pull that is slower than its bound may be
waiting for the CPU rather than for a link. A :class:`CpuSample` before and after the pull
gives the machine's busy CPU-seconds (``/proc/stat``) and those of the run's own processes by
kind: the processes whose command line names the run's work directory (imgaccel daemons,
containerd, the registries), read by PID from ``/proc``, and the ``ctr`` pulls, which are this
process's children and are counted once waited for (``os.times``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

#: The kinds, in the order a report lists them.
KINDS = ("imgaccel", "containerd", "ctr", "registry")


@dataclass(frozen=True)
class CpuSample:
    """CPU-seconds used so far: the whole machine's, and each of the run's processes'."""

    busy: float
    processes: dict[int, tuple[str, float]]  # PID -> (kind, CPU-seconds)
    children: float  # this process's waited-for children (the ctr pulls)


def _ticks() -> float:
    return float(os.sysconf("SC_CLK_TCK"))


def machine_ticks(stat: str | None = None) -> tuple[int, int]:
    """(busy, total) clock ticks of every core since boot; busy is all but idle and iowait."""
    stat = Path("/proc/stat").read_text() if stat is None else stat
    ticks = [int(field) for field in stat.split("\n", 1)[0].split()[1:]]
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)


def machine_busy_seconds(stat: str | None = None) -> float:
    """Busy CPU-seconds of every core since boot (all but idle and iowait)."""
    return machine_ticks(stat)[0] / _ticks()


def kind_of(argv: list[str]) -> str | None:
    """What a process of the run is, from its command line; None for anything else."""
    if not argv:
        return None
    program = os.path.basename(argv[0])
    if "imgaccel" in argv[:3] or program == "imgaccel":
        return "imgaccel"
    if program == "containerd":
        return "containerd"
    if program in ("docker-registry", "registry"):
        return "registry"
    return None


def process_seconds(pid: int | str, children: bool = False) -> float:
    """User + system CPU-seconds process ``pid`` has used so far; with ``children``, also those
    of its children that ended and were waited for (socat's forks, say)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(field) for field in fields[11 : 15 if children else 13]) / _ticks()


def sample(workdir: Path) -> CpuSample:
    """Read the CPU-seconds used so far by the machine and by the run in ``workdir``."""
    marker = str(workdir).encode()
    processes: dict[int, tuple[str, float]] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
            if marker not in raw:
                continue
            kind = kind_of([arg.decode(errors="replace") for arg in raw.split(b"\0") if arg])
            if kind is not None:
                processes[int(pid)] = (kind, process_seconds(pid))
        except (FileNotFoundError, ProcessLookupError):
            continue  # ended while we looked
    times = os.times()
    return CpuSample(machine_busy_seconds(), processes, times.children_user + times.children_system)


def used(before: CpuSample, after: CpuSample) -> dict[str, float]:
    """CPU-seconds between two samples: ``machine`` and one entry per kind in :data:`KINDS`.

    A process that ended in between is left out (its last seconds cannot be read); one that
    started in between counts from zero.
    """
    spent = dict.fromkeys(KINDS, 0.0)
    for pid, (kind, seconds) in after.processes.items():
        spent[kind] += seconds - before.processes.get(pid, (kind, 0.0))[1]
    spent["ctr"] += after.children - before.children
    spent["machine"] = after.busy - before.busy
    return {name: round(max(0.0, value), 2) for name, value in spent.items()}
