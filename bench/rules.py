"""The rules engine alone on the ingest benchmark's stream: the detectors' compiled kernels
against the whole-array numpy forms they replaced.

    .venv/bin/python -P bench/rules.py [--messages 200000] [--rounds 7] [--numpy NAME,...]

The stream is bench/ingest.py's with 100 readings a message (the sample district's 305
sensors at their nominal intervals, about 30 hours of quiet readings), decoded as the
pipeline decodes it, and fed to a fresh engine (sample rules, Guangdong profile) in batches of
20,100 readings (what the pipeline's rules thread takes a step when gateways send 100
readings a message at full speed) and of 5,000. Each round times both variants on the same
batches, one after the other, in this process's CPU time:

- compiled: the engine as shipped (detectors' numba kernels: binary search of the windows,
  rolling sums, least-squares trends, stuck-value runs, drift means, appending a stretch to
  the windows, the threshold proof);
- baseline: the same engine with detectors/reference.py's numpy forms of those kernels
  (`--numpy`: of the kernels named only, e.g. `_rolling_sums,_fit_rows`, the figure of a step).

Both must leave the same windows and raise the same level changes. The rules thread also keeps
the newest reading of every sensor (ews/latest.py) for each batch it takes: a compiled pass
against the sort by sensor and time it replaced, on the batches of 20,100, must keep the same
table. Prints the medians of the rounds and their ratio. (-P keeps bench/ off the import path.)
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]  # as -P does
sys.path.insert(0, str(_HERE.parent))  # the repository: the sibling scripts import as `bench.<name>`

import argparse  # noqa: E402
import contextlib  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import Progress  # noqa: E402
from rich.table import Table  # noqa: E402

import detectors.accumulate  # noqa: E402
import detectors.faults  # noqa: E402
import detectors.threshold  # noqa: E402
import detectors.trend  # noqa: E402
import detectors.windows  # noqa: E402
from detectors import reference  # noqa: E402
from ews.config import RegistryConfig  # noqa: E402
from ews.latest import LatestReadings, take_newest_by_sorting  # noqa: E402
from ews.models import LevelChange, ReadingBatch  # noqa: E402
from ews.sensors import SensorRegistry  # noqa: E402
from ingest.process import MessageProcessor  # noqa: E402
from rules.engine import RuleEngine  # noqa: E402
from rules.loader import load_rules  # noqa: E402

console = Console(width=110)
SIZES = (20_100, 5_000)


KERNELS = [(detectors.accumulate, "_first_after", reference.first_after),
           (detectors.accumulate, "_rolling_sums", reference.rolling_sums),
           (detectors.trend, "_fit_rows", reference.fit_rows),
           (detectors.faults, "_stuck_runs", reference.stuck_runs),
           (detectors.faults, "_drift_means", reference.drift_means),
           (detectors.windows, "_append_runs", reference.append_runs),
           (detectors.threshold, "_quiet_since", reference.quiet_since)]


@contextlib.contextmanager
def numpy_forms(names: set[str]) -> Iterator[None]:
    swapped = [(module, name, form) for module, name, form in KERNELS if name in names]
    kept = [getattr(module, name) for module, name, _ in swapped]
    for module, name, form in swapped:
        setattr(module, name, form)
    try:
        yield
    finally:
        for (module, name, _), k in zip(swapped, kept, strict=True):
            setattr(module, name, k)


def newest(stream: ReadingBatch, n_sensors: int, compiled: bool) -> tuple[float, LatestReadings]:
    """CPU µs a reading to keep the newest reading of each sensor, batch by batch."""
    table = LatestReadings(n_sensors)
    spent = 0.0
    for a in range(0, len(stream), SIZES[0]):
        b = ReadingBatch(stream.sensor[a:a + SIZES[0]], stream.ts_ms[a:a + SIZES[0]], stream.value[a:a + SIZES[0]])
        t = time.thread_time()
        if compiled:
            table.update(b, 0)
        else:
            take_newest_by_sorting(table.ts_ms, table.value, table.seen_ms, b.sensor, b.ts_ms, b.value, 0)
        spent += time.thread_time() - t
    return spent / len(stream) * 1e6, table


def readings(n: int) -> tuple[ReadingBatch, SensorRegistry]:
    from bench.ingest import stream

    regions, sensors = RegistryConfig.sample().load()
    msgs, _ = stream(sensors, n, 100)
    proc = MessageProcessor(sensors, regions)
    out = [proc.process([(t.encode(), p) for t, p in msgs[i:i + 250]], int(time.time() * 1000))
           for i in range(0, len(msgs), 250)]
    return ReadingBatch(np.concatenate([o.sensor for o in out]), np.concatenate([o.ts_ms for o in out]),
                        np.concatenate([o.value for o in out])), sensors


def run(engine: RuleEngine, stream: ReadingBatch, size: int) -> tuple[float, list[LevelChange]]:
    """CPU µs a reading, and the changes raised."""
    changes: list[LevelChange] = []
    spent = 0.0
    for a in range(0, len(stream), size):
        b = ReadingBatch(stream.sensor[a:a + size], stream.ts_ms[a:a + size], stream.value[a:a + size])
        t = time.thread_time()
        changes += engine.process(b, now_ms=int(b.ts_ms[-1]))
        spent += time.thread_time() - t
    return spent / len(stream) * 1e6, changes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=200_000, help="readings in the stream")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--numpy", default=",".join(name for _, name, _ in KERNELS),
                    help="the kernels the baseline runs in their numpy forms (default: all)")
    a = ap.parse_args()
    names = set(a.numpy.split(","))
    unknown = names - {name for _, name, _ in KERNELS}
    if unknown:
        ap.error(f"--numpy: no kernel named {', '.join(sorted(unknown))}")
    stream, sensors = readings(a.messages)
    ruleset = load_rules(None, ["guangdong"])
    start = int(stream.ts_ms[0])
    figures: dict[tuple[int, str], list[float]] = {(s, v): [] for s in SIZES for v in ("compiled", "baseline")}
    kept: dict[str, list[float]] = {"compiled": [], "baseline": []}
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("rounds", total=a.rounds * len(SIZES))
        for _ in range(a.rounds):
            for size in SIZES:
                fast = RuleEngine(ruleset, sensors, start_ms=start)
                slow = RuleEngine(ruleset, sensors, start_ms=start)
                us, seen = run(fast, stream, size)
                with numpy_forms(names):
                    base, want = run(slow, stream, size)
                assert list(map(repr, seen)) == list(map(repr, want))
                for kf, ks in zip(fast.kinds, slow.kinds, strict=True):
                    assert np.array_equal(kf.windows.data, ks.windows.data)
                figures[size, "compiled"].append(us)
                figures[size, "baseline"].append(base)
                progress.advance(task)
            fast_us, fast_table = newest(stream, len(sensors), True)
            slow_us, slow_table = newest(stream, len(sensors), False)
            for x, y in zip(fast_table.snapshot(), slow_table.snapshot(), strict=True):
                assert np.array_equal(x, y, equal_nan=True)
            kept["compiled"].append(fast_us)
            kept["baseline"].append(slow_us)
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    every = names == {name for _, name, _ in KERNELS}
    t = Table(title=f"rules engine, {len(stream):,} readings (100 a message), CPU µs a reading, median of "
                    f"{a.rounds} (load average {load}); baseline: "
                    f"{'every kernel' if every else ', '.join(sorted(names))} in numpy")
    for col in ("batch", "compiled", "baseline", "compiled / baseline"):
        t.add_column(col, justify="right")
    for size in SIZES:
        new, old = (statistics.median(figures[size, v]) for v in ("compiled", "baseline"))
        t.add_row(f"{size:,}", f"{new:.3f}", f"{old:.3f}", f"{new / old:.2f}")
    new, old = (statistics.median(kept[v]) for v in ("compiled", "baseline"))
    t.add_row(f"newest readings, {SIZES[0]:,}", f"{new:.4f}", f"{old:.4f}", f"{new / old:.2f}")
    console.print(t)
    return 0


if __name__ == "__main__":
    sys.exit(main())
