"""Rule evaluation over 100,000 sensors: readings per second and resident memory.

The rules engine (windows, rolling sums, trends, forecasts, threshold detectors, device-fault
rules) is fed rounds of one reading per sensor every 5 minutes of event time, the shape of a
restart rebuild or a backtest, and the same rounds arriving in batches of 5,000 sensors, the
shape of live traffic. The baseline, run in the same script on the same readings, is a plain
Python loop doing the national rainstorm rule one reading at a time (a deque per sensor,
running sums, one comparison per level), so the figures also read as a ratio. Rates are given
per second of this process's CPU time (what one core does, whatever else runs on the
machine) and per second of wall time (what it got on this machine while the figures were
taken); the load average is printed with them.

Memory: resident set size (VmRSS) before the registry and engine are made, and after 14 hours
of readings have filled every window (numpy touches pages only when they are written).

    .venv/bin/python bench/detectors.py               # 100,000 sensors
    .venv/bin/python bench/detectors.py -n 20000 --rounds 10

Writes .state/bench/detectors.png.
"""

from __future__ import annotations

import sys
from pathlib import Path

# run as a script, this file's folder comes first on sys.path and its name would hide the
# `detectors` package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import gc  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
from collections import deque  # noqa: E402

import matplotlib  # noqa: E402
import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import Progress  # noqa: E402
from rich.table import Table  # noqa: E402

from ews.models import ReadingBatch  # noqa: E402
from ews.sensors import Sensor, SensorRegistry  # noqa: E402
from rules.engine import RuleEngine  # noqa: E402
from rules.loader import DEFAULTS_DIR, load_rules  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

M5 = 300_000
H = 3_600_000
T0 = 1_782_000_000_000


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def sensors(n: int, kind: str) -> SensorRegistry:
    rng = np.random.default_rng(1)
    lat = np.sort(23.0 + rng.random(n) * 0.3)  # south to north: index bands are places
    lon = 113.2 + rng.random(n) * 0.4
    params = {"warning_level": 9.0, "guarantee_level": 10.0, "historical_max": 10.8} if kind == "water_level" else {}
    return SensorRegistry([
        Sensor(id=f"S{i:06d}", kind=kind, community=f"440106{1 + i % 21:03d}{1 + i % 7:03d}", lat=float(lat[i]),
               lon=float(lon[i]), params=params)
        for i in range(n)
    ])


def rain(rng: np.random.Generator, n: int) -> np.ndarray:
    """A wet night: the southern tenth of the gauges under a storm (about 2 mm per report,
    enough for orange and red), the next tenth in drizzle, the rest dry, so level changes come
    at a realistic rate and neighbours agree as they do under a real storm."""
    storm = np.arange(n) < n // 10
    drizzle = (np.arange(n) >= n // 10) & (np.arange(n) < n // 5)
    v = np.where(storm, rng.choice([0.5, 1.0, 2.0, 3.0, 4.5], n),
                 np.where(drizzle, rng.choice([0.0, 0.1, 0.2], n), 0.0))
    return v


def stage(k: int, n: int, rng: np.random.Generator) -> np.ndarray:
    return 8.0 + 0.8 * np.sin(k / 40 + np.arange(n) % 13) + rng.normal(0, 0.005, n)


Rate = tuple[float, float]  # readings per CPU second, per wall second


def fill_and_time(engine: RuleEngine, n: int, rounds: int, fill: int, kind: str, progress: Progress,
                  label: str) -> tuple[Rate, int]:
    """Fill `fill` rounds, then time `rounds` full rounds; returns (rates, changes)."""
    rng = np.random.default_rng(7)
    idx = np.arange(n, dtype=np.int64)
    task = progress.add_task(label, total=fill + rounds)
    for k in range(fill):
        v = rain(rng, n) if kind == "rain" else stage(k, n, rng)
        engine.process(ReadingBatch(idx, np.full(n, T0 + k * M5, np.int64), v), now_ms=T0 + k * M5)
        progress.advance(task)
    batches = [rain(rng, n) if kind == "rain" else stage(fill + k, n, rng) for k in range(rounds)]
    changes = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for k, v in enumerate(batches):
        t = T0 + (fill + k) * M5
        changes += len(engine.process(ReadingBatch(idx, np.full(n, t, np.int64), v), now_ms=t))
        progress.advance(task)
    return (rounds * n / (time.process_time() - c0), rounds * n / (time.perf_counter() - t0)), changes


def partial(engine: RuleEngine, n: int, rounds: int, size: int, start_round: int) -> Rate:
    """Live shape: every sensor still reports every 5 minutes, but the readings arrive in
    batches of `size` random sensors (what the collector hands on every few milliseconds)."""
    rng = np.random.default_rng(11)
    prepared = []
    for r in range(rounds):
        order = rng.permutation(n).astype(np.int64)
        t = T0 + (start_round + r) * M5
        v = rain(rng, n)
        for a in range(0, n, size):
            idx = order[a:a + size]
            prepared.append(ReadingBatch(idx, np.full(idx.shape[0], t + a, np.int64), v[idx]))
    t0, c0 = time.perf_counter(), time.process_time()
    for b in prepared:
        engine.process(b, now_ms=int(b.ts_ms[0]))
    return rounds * n / (time.process_time() - c0), rounds * n / (time.perf_counter() - t0)


def naive(n: int, rounds: int) -> Rate:
    """The national rainstorm rule one reading at a time in plain Python (the baseline)."""
    windows = {"rain_3h": 3 * H, "rain_6h": 6 * H, "rain_12h": 12 * H}
    levels = [(4, "rain_3h", 100.0), (3, "rain_3h", 50.0), (2, "rain_6h", 50.0), (1, "rain_12h", 50.0)]
    Queues = dict[str, deque[tuple[int, float]]]
    state: list[tuple[Queues, dict[str, float], list[int]]] = [
        ({w: deque() for w in windows}, dict.fromkeys(windows, 0.0), [0]) for _ in range(n)]
    rng = np.random.default_rng(7)
    readings = [(i, T0 + k * M5, float(v)) for k in range(rounds) for i, v in enumerate(rain(rng, n))]
    changes = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for i, t, v in readings:
        queues, sums, level = state[i]
        for w, span in windows.items():
            q = queues[w]
            q.append((t, v))
            sums[w] += v
            while q and q[0][0] <= t - span:
                sums[w] -= q.popleft()[1]
        new = next((lv for lv, m, th in levels if round(sums[m], 6) >= th), 0)
        if new != level[0]:
            level[0] = new
            changes += 1
    return len(readings) / (time.process_time() - c0), len(readings) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=100_000, help="sensors")
    ap.add_argument("--rounds", type=int, default=20, help="timed full rounds")
    ap.add_argument("--fill", type=int, default=168, help="rounds (5 min each) before timing: 14 h")
    ap.add_argument("--png", type=Path, default=Path(".state/bench/detectors.png"))
    args = ap.parse_args()
    console = Console(width=max(Console().width, 130))
    n = args.n
    load0 = os.getloadavg()
    rows: list[tuple[str, Rate, str]] = []
    gc.collect()
    base = rss_mb()
    with Progress(console=console, transient=True) as progress:
        t = time.perf_counter()
        reg = sensors(n, "rain")
        after_registry = rss_mb()
        engine = RuleEngine(load_rules(DEFAULTS_DIR / "rainstorm.yaml"), reg, start_ms=T0)
        build_s = time.perf_counter() - t
        rate, changes = fill_and_time(engine, n, args.rounds, args.fill, "rain", progress, "rainstorm rule")
        full_rss = rss_mb()
        state_mb = sum(ks.windows.nbytes for ks in engine.kinds) / 2**20
        rows.append(("rainstorm (3 windows, 4 levels), full rounds", rate, f"{changes} level changes"))
        rows.append(("  same, arriving in batches of 5,000 sensors",
                     partial(engine, n, 4, 5000, args.fill + args.rounds), "the live shape"))
        del engine
        gc.collect()

        everything = RuleEngine(load_rules(None), reg, start_ms=T0)
        rate, changes = fill_and_time(everything, n, args.rounds, args.fill, "rain", progress,
                                      "every default rule")
        rows.append(("rain with every default (+ range, drift, no-data)", rate, f"{changes} level changes"))
        del everything, reg
        gc.collect()

        wl = sensors(n, "water_level")
        river = RuleEngine(load_rules(DEFAULTS_DIR / "water_level.yaml"), wl, start_ms=T0)
        rate, changes = fill_and_time(river, n, args.rounds, 24, "water_level", progress, "river rules")
        rows.append(("river: level, 1 h trend, 1 h forecast", rate, f"{changes} level changes"))
        del river, wl
        gc.collect()

        task = progress.add_task("naive loop", total=1)
        naive_rate = naive(min(n, 50_000), 4)
        progress.advance(task)
    rows.append(("baseline: plain Python loop, rainstorm rule", naive_rate, "one reading at a time"))

    table = Table(title=f"Rule evaluation over {n:,} sensors (load average {load0[0]:.2f} at start, "
                        f"{os.getloadavg()[0]:.2f} at end, {os.cpu_count()} cores)", title_justify="left")
    table.add_column("what")
    table.add_column("readings/s (CPU)", justify="right")
    table.add_column("x baseline", justify="right")
    table.add_column("readings/s (wall)", justify="right")
    table.add_column("note")
    for what, r, note in rows:
        table.add_row(what, f"{r[0]:,.0f}", f"{r[0] / naive_rate[0]:.1f}", f"{r[1]:,.0f}", note)
    console.print(table)
    console.print(
        f"memory: RSS {base:.0f} MB before, {after_registry:.0f} MB with the registry "
        f"({after_registry - base:.0f} MB for {n:,} Sensor objects), {full_rss:.0f} MB with the rainstorm "
        f"engine's windows full after {args.fill * 5 / 60:.0f} h: state {full_rss - after_registry:.0f} MB "
        f"resident ({state_mb:.0f} MB of window arrays); engine built in {build_s:.1f} s"
    )
    args.png.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(9, 3.5))
    ax.barh([w.strip() for w, _, _ in rows][::-1], [r[0] / 1e6 for _, r, _ in rows][::-1], color="#3a78c2",
            label="per CPU second")
    ax.barh([w.strip() for w, _, _ in rows][::-1], [r[1] / 1e6 for _, r, _ in rows][::-1], color="#9cc3ea",
            height=0.4, label="per wall second")
    ax.axvline(2.0, color="#d62020", ls="--", lw=1, label="target 2 M/s")
    ax.set_xlabel(f"million readings per second (load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores)")
    ax.set_title(f"rule evaluation, {n:,} sensors", fontsize=10)
    ax.legend(fontsize=8)
    ax.tick_params(labelsize=8)
    fig.tight_layout()
    fig.savefig(args.png, dpi=110)
    console.print(f"plot written to {args.png}")


if __name__ == "__main__":
    main()
