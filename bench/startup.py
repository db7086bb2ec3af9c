"""Process start: the CPU a fresh interpreter spends loading what the pipeline loads.

    .venv/bin/python -P bench/startup.py [--runs 15]

Each run is a new interpreter that imports the pipeline, the CLI and scipy's k-d tree (the
rules load it to bind area rules), waits 0.3 s, then reports its CPU time, the part of it its
other threads spent and its threads; the wall time is the whole child process, start to exit,
less that wait. Two placements of the BLAS thread pools, interleaved run by run:

- **as shipped**: `ews` sets `OPENBLAS_NUM_THREADS=1` before numpy loads, so numpy's and
  scipy's OpenBLAS start no threads;
- **OpenBLAS default** (baseline): `OPENBLAS_NUM_THREADS` set to the number of CPUs, as
  OpenBLAS would choose; each of the two libraries starts a thread a CPU beyond the first,
  and those threads spin before they sleep.

A restart after a crash pays this before it takes its first message, on cores it shares
with InfluxDB catching up.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import orjson
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import os, time, orjson
import ews.pipeline, ews.cli, scipy.spatial
import psutil
time.sleep(0.3)  # a pool's threads spin on after the imports; count what they spend
threads = psutil.Process().threads()
print(orjson.dumps({"cpu_s": time.process_time(), "threads": len(threads),
                    "pool_s": sum(t.user_time + t.system_time for t in threads if t.id != os.getpid())}).decode())
"""
VARIANTS = {"as shipped": None, "OpenBLAS default": str(os.cpu_count() or 1)}


def one(pool: str | None) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if pool is not None:
        env["OPENBLAS_NUM_THREADS"] = pool
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-P", "-c", CHILD], cwd=ROOT, env=env, capture_output=True,
                         check=True, timeout=120)
    r = dict(orjson.loads(out.stdout.splitlines()[-1]))
    r["wall_s"] = time.perf_counter() - t0 - 0.3
    return r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=15, help="runs of each variant, interleaved")
    a = ap.parse_args()
    console = Console()
    load = os.getloadavg()
    results: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("starting interpreters", total=a.runs * len(VARIANTS))
        for _ in range(a.runs):
            for name, pool in VARIANTS.items():
                results[name].append(one(pool))
                progress.advance(task)
    table = Table(title=f"process start, {a.runs} interleaved runs each, medians "
                        f"(load average {load[0]:.1f} → {os.getloadavg()[0]:.1f})")
    for col in ("variant", "CPU s", "CPU s range", "of it other threads", "wall s", "threads"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    med, pools = {}, {}
    for name, rs in results.items():
        cpu = [r["cpu_s"] for r in rs]
        med[name] = statistics.median(cpu)
        pools[name] = statistics.median(r["pool_s"] for r in rs)
        table.add_row(name, f"{med[name]:.2f}", f"{min(cpu):.2f}-{max(cpu):.2f}", f"{pools[name]:.2f}",
                      f"{statistics.median(r['wall_s'] for r in rs):.2f}",
                      f"{statistics.median(r['threads'] for r in rs):.0f}")
    console.print(table)
    base = med["OpenBLAS default"]
    console.print(f"as shipped: {med['as shipped']:.2f} s of CPU against {base:.2f} s "
                  f"({med['as shipped'] / base:.0%} of the baseline); the baseline's pool threads spent "
                  f"{pools['OpenBLAS default']:.2f} s a start")
    return 0


if __name__ == "__main__":
    sys.exit(main())
