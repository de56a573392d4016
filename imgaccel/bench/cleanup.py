"""Remove what killed benchmark runs left behind (the ``imgaccel-bench cleanup`` command).

Only names with the benchmark's prefix are touched, and only those of runs whose owner process
is gone. Processes still inside such a namespace were started by that run; they are stopped by
their PID before the namespace goes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from pathlib import Path

from imgaccel.bench.network import Leftovers, leftovers, namespace_pids
from imgaccel.testing.procs import run


async def remove_leftovers(tmp: Path) -> Leftovers:
    """Remove every leftover and return what was removed."""
    found = await leftovers(tmp)
    for netns in found.namespaces:
        for pid in await namespace_pids(netns):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        await run("ip", "netns", "del", netns, check=False)
    for link in found.links:
        await run("ip", "link", "del", link, check=False)
    for workdir in found.workdirs:
        shutil.rmtree(workdir, ignore_errors=True)
    return found
