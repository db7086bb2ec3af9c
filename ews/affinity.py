"""Pinning the pipeline's threads to chosen CPUs (`cpus` in the config).

What it is for is placement: shards and InfluxDB on one host each kept to CPUs of their own.
Under the interpreter lock the pipeline's threads run Python one at a time, so one CPU holds
nearly all the work they can do; left free, the scheduler moves them from CPU to CPU as they
hand the lock over. Whether pinning also speeds one pipeline up beside InfluxDB was measured,
with mixed results (docs/decisions.md), so it is a choice, not the default.

The whole process is pinned, every thread it has, and threads started later inherit the
mask of the thread that starts them. Processes it starts inherit it too.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)


def allowed() -> set[int]:
    """The CPUs this process may run on (a container or `taskset` may have narrowed them)."""
    return set(os.sched_getaffinity(0))


def check(cpus: Iterable[int]) -> None:
    """Raise ValueError naming the CPUs this process cannot be pinned to."""
    if not hasattr(os, "sched_setaffinity"):
        raise ValueError("pinning to CPUs needs Linux (os.sched_setaffinity)")
    wanted, may = set(cpus), allowed()
    if not wanted <= may:
        raise ValueError(f"CPU {', '.join(map(str, sorted(wanted - may)))} is not one this process may run on "
                         f"(it may run on {', '.join(map(str, sorted(may)))})")


def pin(cpus: Iterable[int]) -> None:
    """Pin every thread of this process to `cpus`."""
    wanted = set(cpus)
    check(wanted)
    for task in Path("/proc/self/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), wanted)
        except ProcessLookupError:  # a thread that ended meanwhile
            continue
    log.info("pinned to CPU %s", ", ".join(map(str, sorted(wanted))))
