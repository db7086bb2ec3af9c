"""A backlog through the rules engine: many readings per sensor at once, quiet and stormy.

A gateway flushing its buffer, the broker's queue after a restart, or a replay hands the engine
batches holding hours of readings per sensor. The engine evaluates a quiet stretch in one pass
(rules/quiet.py) and anything else in event-time rounds; the baseline, in the same script on
the same readings, is the rounds alone. Readings: the sample district's 305 sensors, each at
its kind's nominal interval for 30 hours (about 200,000), default rules with the Guangdong
profile, in batches of 20,000 (about what one ingest batch of gateway messages holds):

- quiet: dry weather, calm rivers (the common case);
- storm: a 6-hour rainstorm over the whole district from hour 12, rivers rising with it, so
  warnings open, change and resolve, and most stretches must be evaluated round by round.

Rates are per second of this process's CPU time. Writes .state/bench/backlog.png.

    .venv/bin/python bench/backlog.py [--hours 30] [--batch 20000]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402

import matplotlib  # noqa: E402
import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from ews.config import RegistryConfig  # noqa: E402
from ews.models import ReadingBatch  # noqa: E402
from ews.sensors import SensorRegistry  # noqa: E402
from rules.engine import RuleEngine  # noqa: E402
from rules.loader import load_rules  # noqa: E402

H = 3_600_000
T0 = 1_782_000_000_000
console = Console(width=120)


def backlog(reg: SensorRegistry, hours: int, storm: bool, seed: int = 3) -> tuple[np.ndarray, ...]:
    """(sensor, ts, value) of every sensor at its nominal interval, in event-time order."""
    rng = np.random.default_rng(seed)
    sensor, ts, value = [], [], []
    for i, s in enumerate(reg.sensors):
        step = int(reg.kinds[s.kind].interval_s * 1000)
        t = np.arange(T0 + int(rng.integers(0, step // 1000)) * 1000, T0 + hours * H, step)
        h = (t - T0) / H
        wet = storm & (h >= 12) & (h < 18)
        if s.kind == "rain":
            v = np.where(wet, rng.choice([3.0, 5.0, 8.5], t.shape[0]), np.where(rng.random(t.shape[0]) < 0.1, 0.2, 0.0))
        elif s.kind == "water_level":
            base = float(s.params.get("base_level", 5.0))
            rise = np.clip(h - 12, 0, 6) * 0.4 - np.clip(h - 18, 0, None) * 0.2 if storm else 0 * h
            v = np.round(base + np.maximum(rise, 0) + 0.01 * (np.arange(t.shape[0]) % 3), 2)
        elif s.kind == "ponding":
            v = np.where(wet & (i % 3 == 0), 35.0, (np.arange(t.shape[0]) % 3).astype(float))
        elif s.kind == "gas":
            v = (np.arange(t.shape[0]) % 3).astype(float)
        else:
            v = np.zeros(t.shape[0])
        sensor.append(np.full(t.shape[0], i))
        ts.append(t)
        value.append(v)
    s_, t_, v_ = np.concatenate(sensor), np.concatenate(ts), np.concatenate(value)
    order = np.lexsort((s_, t_))
    return s_[order].astype(np.int64), t_[order].astype(np.int64), v_[order].astype(np.float64)


def run(reg: SensorRegistry, data: tuple[np.ndarray, ...], batch: int, one_pass: bool) -> tuple[float, int]:
    """(readings per CPU second, level changes)."""
    sensor, ts, value = data
    engine = RuleEngine(load_rules(None, "guangdong"), reg, start_ms=T0)
    engine.quiet_stretches = one_pass
    changes = 0
    c0 = time.process_time()
    for a in range(0, sensor.shape[0], batch):
        changes += len(engine.process(ReadingBatch(sensor[a:a + batch], ts[a:a + batch], value[a:a + batch]),
                                      now_ms=int(ts[min(a + batch, sensor.shape[0]) - 1]), replay=True))
    return sensor.shape[0] / (time.process_time() - c0), changes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hours", type=int, default=30)
    ap.add_argument("--batch", type=int, default=20_000)
    ap.add_argument("--png", type=Path, default=Path(".state/bench/backlog.png"))
    a = ap.parse_args()
    reg = RegistryConfig.sample().load().sensors
    load = os.getloadavg()
    t = Table(title=f"rules on a {a.hours}-hour backlog of {len(reg)} sensors, batches of {a.batch:,} "
                    f"(load average {load[0]:.1f})")
    for col in ("weather", "readings", "rounds only (baseline)", "one pass when quiet", "ratio", "level changes"):
        t.add_column(col, justify="right")
    bars = {}
    for weather in ("quiet", "storm"):
        data = backlog(reg, a.hours, weather == "storm")
        with console.status(f"{weather}: rounds only ..."):
            base, c_base = run(reg, data, a.batch, False)
        with console.status(f"{weather}: one pass when quiet ..."):
            fast, c_fast = run(reg, data, a.batch, True)
        if c_base != c_fast:
            raise SystemExit(f"{weather}: {c_fast} level changes in one pass, {c_base} in rounds")
        t.add_row(weather, f"{data[0].shape[0]:,}", f"{base:,.0f} /s", f"{fast:,.0f} /s", f"{fast / base:.1f}x",
                  str(c_fast))
        bars[weather] = (base, fast)
    console.print(t)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    x = np.arange(len(bars))
    ax.bar(x - 0.2, [b[0] for b in bars.values()], 0.4, label="rounds only", color="#7f7f7f")
    ax.bar(x + 0.2, [b[1] for b in bars.values()], 0.4, label="one pass when quiet", color="#d62728")
    ax.set_xticks(x, list(bars))
    ax.set_ylabel("readings / CPU second")
    ax.legend()
    fig.tight_layout()
    a.png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.png, dpi=110)
    console.print(f"plot: {a.png}")


if __name__ == "__main__":
    main()
