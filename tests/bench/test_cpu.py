"""The benchmark's CPU accounting: whose CPU-seconds a timed pull used."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from imgaccel.bench import cpu
from imgaccel.testing.procs import terminate
from tests.conftest import until


@pytest.mark.parametrize(
    ("argv", "kind"),
    [
        (["/usr/bin/python3", "-m", "imgaccel", "node", "--cache-dir", "/w/c"], "imgaccel"),
        (["/usr/local/bin/imgaccel", "tracker"], "imgaccel"),
        (["containerd", "--config", "/w/config.toml"], "containerd"),
        (["/usr/bin/docker-registry", "serve", "/w/config.yml"], "registry"),
        (["curl", "/w/imgaccel"], None),  # naming imgaccel is not being it
        ([], None),
    ],
)
def test_kind_of_a_process_from_its_command_line(argv: list[str], kind: str | None) -> None:
    assert cpu.kind_of(argv) == kind


def test_machine_busy_seconds_leaves_out_idle_and_iowait() -> None:
    stat = "cpu  100 5 50 1000 40 0 5 0 0 0\ncpu0 ...\n"
    ticks = cpu._ticks()
    assert cpu.machine_busy_seconds(stat) == pytest.approx((100 + 5 + 50 + 5) / ticks)


def test_used_counts_what_each_process_spent_between_the_samples() -> None:
    before = cpu.CpuSample(100.0, {1: ("imgaccel", 5.0), 2: ("containerd", 3.0)}, 1.0)
    after = cpu.CpuSample(
        112.0,
        # 2 ended in between (left out); 3 started in between (counts from zero).
        {1: ("imgaccel", 7.5), 3: ("imgaccel", 0.5), 4: ("registry", 0.25)},
        2.5,
    )
    assert cpu.used(before, after) == {
        "imgaccel": 3.0,
        "containerd": 0.0,
        "ctr": 1.5,
        "registry": 0.25,
        "machine": 12.0,
    }


async def test_sample_finds_the_run_s_processes_and_their_cpu(tmp_path: Path) -> None:
    # A process of "the run" that burns half a CPU-second, then waits: `python -m imgaccel`
    # (a stand-in package of that name) with the work directory on its command line.
    fake = tmp_path / "fake" / "imgaccel"
    fake.mkdir(parents=True)
    (fake / "__main__.py").write_text(
        "import time\nend = time.process_time() + 0.5\n"
        "while time.process_time() < end:\n    pass\ninput()\n"
    )
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "imgaccel", str(tmp_path)),
        cwd=tmp_path / "fake",
        stdin=asyncio.subprocess.PIPE,
    )
    try:
        await until(lambda: proc.pid in cpu.sample(tmp_path).processes)
        before = cpu.sample(tmp_path)
        await asyncio.sleep(1.0)
        spent = cpu.used(before, cpu.sample(tmp_path))
        assert 0.2 <= spent["imgaccel"] <= 0.6, spent
        # A sample reads the processes, then the machine: CPU the process burns in between, and
        # the counters' 10 ms ticks, may put it a tick or two ahead (0.54 against 0.53 once).
        assert spent["machine"] >= spent["imgaccel"] - 0.05, spent
        assert cpu.sample(tmp_path / "other").processes == {}
    finally:
        await terminate(proc)
