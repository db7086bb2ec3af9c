"""Regenerate the backtest sample: `.venv/bin/python tests/data/backtest/generate.py`.

A replay of a "5.22"-like night: the packaged rainstorm simulator's 100-year, 8-hour storm
crossing the sample district (天河区) from 22:00 on 21 May 2020, Beijing time.

- history.csv: what the sensors reported (rain gauges, river stations, ponding sensors), with
  the simulator's gauge noise: columns sensor, ts (ISO 8601, +08:00), value;
- events.csv: the "recorded" rainstorm events, worked out here from the same storm without
  gauge noise (the truth the noisy gauges only sample), with Guangdong's signal levels
  (yellow 6 h >= 50 mm, orange 3 h >= 50 mm, red 3 h >= 100 mm): one event per gauge at the
  highest level its rain reached, from when it reached that level until its rain fell below
  yellow again, plus one street-wide orange event for the street most gauges of which
  reached orange.
"""

from __future__ import annotations

import csv
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ews.config import sample_dir
from ews.regions import RegionRegistry
from ews.sensors import SensorRegistry
from simulators.rainstorm import StormParams, simulate_rainstorm

HERE = Path(__file__).parent
BEIJING = timezone(timedelta(hours=8))
START = datetime(2020, 5, 21, 22, 0, tzinfo=BEIJING)
H = 3_600_000
LEVELS = ["none", "blue", "yellow", "orange", "red"]


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, BEIJING).isoformat()


def guangdong_level(series: list[tuple[int, float]], i: int) -> int:
    t = series[i][0]

    def total(hours: int) -> float:
        return round(sum(v for u, v in series[: i + 1] if u > t - hours * H), 6)

    return 4 if total(3) >= 100 else 3 if total(3) >= 50 else 2 if total(6) >= 50 else 0


def main() -> None:
    regions = RegionRegistry.load(sample_dir() / "regions.yaml")
    reg = SensorRegistry.load(sample_dir() / "sensors.yaml", regions)
    start_ms = int(START.timestamp() * 1000)
    params = StormParams(duration_h=8.0)
    sim = simulate_rainstorm(reg, params, start_ms, seed=522)
    truth = simulate_rainstorm(reg, StormParams(duration_h=8.0, gauge_noise=0.0), start_ms, seed=522)
    kinds = ("rain", "water_level", "ponding")
    with (HERE / "history.csv").open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sensor", "ts", "value"])
        for k in range(sim.n_ticks):
            for j, s in enumerate(reg.sensors):
                if s.kind in kinds:
                    w.writerow([s.id, iso(int(sim.tick_ts[k])), f"{sim.values[k, j]:g}"])
    events: list[tuple[str, str, str, int, int]] = []
    for j, s in enumerate(reg.sensors):
        if s.kind != "rain":
            continue
        series = [(int(t), float(v)) for t, v in zip(truth.tick_ts, truth.values[:, j], strict=True)]
        levels = [guangdong_level(series, i) for i in range(len(series))]
        peak = max(levels)
        if peak == 0:
            continue
        first = next(i for i, lv in enumerate(levels) if lv == peak)
        last = max(i for i, lv in enumerate(levels) if lv > 0)
        end = series[last + 1][0] if last + 1 < len(series) else series[-1][0]
        events.append(("sensor", s.id, LEVELS[peak], series[first][0], end))
    by_street: dict[str, list[tuple[str, str, str, int, int]]] = {}
    for e in events:
        if e[2] in ("orange", "red"):
            by_street.setdefault(reg.get(e[1]).street, []).append(e)
    street, ev = max(by_street.items(), key=lambda kv: (len(kv[1]), kv[0]))
    events.append(("region", street, "orange", min(e[3] for e in ev), max(e[4] for e in ev)))
    with (HERE / "events.csv").open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sensor", "region", "level", "start", "end"])
        for what, subject, level, a, b in events:
            w.writerow([subject if what == "sensor" else "", subject if what == "region" else "", level,
                        iso(a), iso(b)])
    print(f"{sim.n_ticks} ticks, {len(events)} events written to {HERE}")


if __name__ == "__main__":
    main()
