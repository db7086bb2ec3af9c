"""Sensor faults: flags against plain loops, and flagged readings never raising hazards."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np

from detectors.faults import Drift, OutOfRange, Spike, Stuck
from ews.config import sample_dir
from ews.levels import Level
from ews.models import LevelChange, ReadingBatch
from ews.regions import RegionRegistry
from ews.sensors import Sensor, SensorRegistry
from rules.engine import RuleEngine
from rules.loader import DEFAULTS_DIR, load_rules
from simulators.rainstorm import StormParams, simulate_rainstorm

M5 = 300_000
H = 3_600_000
T0 = 1_782_000_000_000


def spike_ref(values: list[float], lim: float, confirm: int) -> list[bool]:
    out, good, cand, run = [], None, None, 0
    for v in values:
        if good is None or abs(v - good) <= lim:
            good, cand, run = v, None, 0
            out.append(False)
            continue
        run = run + 1 if run > 0 and cand is not None and abs(v - cand) <= lim else 1
        if run >= confirm:
            good, cand, run = v, None, 0
            out.append(False)
        else:
            cand = v
            out.append(True)
    return out


def stuck_ref(series: list[tuple[int, float]], tol: float, dur: int, min_n: int, ignore: list[float]) -> list[bool]:
    out: list[bool] = []
    ref: float | None = None
    since, count = 0, 0
    for t, v in series:
        if ref is not None and abs(v - ref) <= tol:
            count += 1
        else:
            ref, since, count = v, t, 1
        exempt = any(abs(v - i) <= tol for i in ignore)
        out.append(t - since >= dur and count >= min_n and not exempt)
    return out


def test_spike_and_stuck_match_reference_over_many_subjects() -> None:
    rng = random.Random(2)
    n, steps = 12, 200
    lims = [rng.choice([0.5, 1.0]) for _ in range(n)]
    spike = Spike(np.array(lims), confirm=3)
    stuck = Stuck(np.array([0.0] * 6 + [0.01] * 6), 30 * 60_000, 3, ignore=[0.0])
    series: list[list[tuple[int, float]]] = []
    for _ in range(n):
        level, s = 5.0, []
        for k in range(steps):
            r = rng.random()
            if r < 0.05:
                v = level + rng.choice([-3.0, 2.0, 4.0])  # a spike
            elif r < 0.07:
                level += rng.choice([-2.0, 2.0])  # a lasting shift
                v = level
            elif r < 0.5 and s:
                v = s[-1][1]  # repeats: runs for the stuck detector
            else:
                level += rng.choice([-0.1, 0.0, 0.005, 0.1])
                v = 0.0 if rng.random() < 0.05 else round(level, 3)
            s.append((T0 + k * M5, v))
        series.append(s)
    got_spike: list[list[bool]] = [[] for _ in range(n)]
    got_stuck: list[list[bool]] = [[] for _ in range(n)]
    for k in range(steps):
        rows = np.array([i for i in range(n) if rng.random() < 0.9 or k == 0])
        ts = np.array([series[i][k][0] for i in rows], np.int64)
        vs = np.array([series[i][k][1] for i in rows])
        for i, f in zip(rows, spike.flags(rows, vs), strict=True):
            got_spike[int(i)].append(bool(f))
        for i, f in zip(rows, stuck.flags(rows, ts, vs), strict=True):
            got_stuck[int(i)].append(bool(f))
        for i in set(range(n)) - set(rows.tolist()):
            series[i][k] = (-1, math.nan)  # skipped this step
    for i in range(n):
        seen = [x for x in series[i] if x[0] >= 0]
        assert got_spike[i] == spike_ref([v for _, v in seen], lims[i], 3)
        assert got_stuck[i] == stuck_ref(seen, 0.0 if i < 6 else 0.01, 30 * 60_000, 3, [0.0])
    assert any(any(f) for f in got_spike) and any(any(f) for f in got_stuck)


def test_stuck_exactly_at_the_duration_and_out_of_range_edges() -> None:
    stuck = Stuck(np.array([0.0]), 20 * 60_000, 3)
    flags = [bool(stuck.flags(np.array([0]), np.array([T0 + k * M5], np.int64), np.array([4.2]))[0])
             for k in range(6)]
    assert flags == [False, False, False, False, True, True]  # 20 min after the first: at k=4
    rng = OutOfRange(np.array([0.0, np.nan]), np.array([10.0, 5.0]))
    got = rng.flags(np.array([0, 0, 0, 1, 1]), np.array([0.0, 10.0, 10.0001, -99.0, 5.0]))
    assert got.tolist() == [False, False, True, False, False]
    got = rng.flags(np.array([0, 1]), np.array([-0.001, 5.001]))
    assert got.tolist() == [True, True]


def test_drift_against_neighbours_matches_reference() -> None:
    # five gauges in a ring, each with the other four as neighbours; gauge 0 clogs at k=30
    n, tau, every, dur = 5, H // 2, 15 * 60_000, H
    nb = np.array([[j for j in range(n) if j != i] for i in range(n)])
    det = Drift(nb, tau, low=0.1, high=math.inf, min_level=1.0, min_neighbours=3, duration_ms=dur,
                every_ms=every)
    rng = random.Random(8)
    steps = 90
    vals = [[(0.2 if (i == 0 and k >= 30) else 1.0) * rng.uniform(1.5, 3.0) * (k < 80) for k in range(steps)]
            for i in range(n)]
    for k in range(30, steps):
        vals[0][k] = 0.0 if k >= 35 else vals[0][k]
    got = [[False] * steps for _ in range(n)]
    for k in range(steps):
        t = T0 + k * M5
        f = det.flags(np.arange(n), np.full(n, t, np.int64), np.array([vals[i][k] for i in range(n)]))
        for i in range(n):
            got[i][k] = bool(f[i])
    # reference: EWMA per gauge on event time, compared every 15 min, held for 1 h
    mean = [math.nan] * n
    last = [0] * n
    next_check = [-(10**18)] * n
    since: list[int | None] = [None] * n
    flagged = [False] * n
    exp = [[False] * steps for _ in range(n)]
    for k in range(steps):
        t = T0 + k * M5
        for i in range(n):
            mean[i] = vals[i][k] if math.isnan(mean[i]) else mean[i] + (1 - math.exp(-(t - last[i]) / tau)) * (
                vals[i][k] - mean[i])
            last[i] = t
        for i in range(n):
            if t >= next_check[i]:
                others = sorted(mean[j] for j in range(n) if j != i)
                med = (others[1] + others[2]) / 2
                off = med >= 1.0 and mean[i] < 0.1 * med
                since[i] = (since[i] if since[i] is not None else t) if off else None
                flagged[i] = off and t - (since[i] or t) >= dur
                next_check[i] = t + every
            exp[i][k] = flagged[i]
    assert got == exp
    assert any(got[0]) and not any(any(g) for g in got[1:])


def water(sid: str) -> Sensor:
    return Sensor(id=sid, kind="water_level", community="440106001001", lat=23.1, lon=113.3,
                  params={"warning_level": 7.0, "guarantee_level": 8.0, "historical_max": 9.0})


def test_flagged_readings_raise_device_warnings_not_hazards() -> None:
    reg = SensorRegistry([water("WL-1")])
    rules = load_rules(DEFAULTS_DIR)  # every default, devices included
    engine = RuleEngine(rules, reg)
    normal = [6.0 + 0.01 * k for k in range(12)]
    series = [(T0 + k * M5, v) for k, v in enumerate(normal)]
    series.append((T0 + 12 * M5, 9.5))  # a 3.4 m jump: a spike, though above the record
    series.append((T0 + 12 * M5, 9.5))  # redelivered: still a spike
    series += [(T0 + (13 + k) * M5, 6.12 + 0.01 * k) for k in range(10)]
    got: list[LevelChange] = []
    for t, v in series:
        got += engine.process(ReadingBatch.of([0], [t], [v]))
    hazards = [c for c in got if c.kind != "device"]
    devices = [(c.rule_id, c.after, c.event_ts_ms) for c in got if c.kind == "device"]
    assert hazards == []  # 9.5 m is above red, but it was a spike
    # opens at the spike; clean readings for 30 min (clear_after) resolve it
    assert devices == [("water_level_spike", Level.BLUE, T0 + 12 * M5),
                       ("water_level_spike", Level.NONE, T0 + 12 * M5 + 30 * 60_000 + M5)]
    spike = next(c for c in got if c.rule_id == "water_level_spike")
    assert spike.measure == "spike" and spike.value == 9.5 and spike.subject == "WL-1"


def test_stuck_gauge_stops_raising_and_a_real_rise_after_a_level_shift_counts(tmp_path: Path) -> None:
    reg = SensorRegistry([water("WL-1")])
    engine = RuleEngine(load_rules(DEFAULTS_DIR), reg)
    # stuck at 7.5 (above yellow 7.0) for 7 hours: yellow opens (nobody knows yet), the
    # stuck warning opens after 6 h; the stuck readings no longer feed the hazard
    stuck = [(T0 + k * M5, 7.5) for k in range(84)]
    got = engine.process(ReadingBatch.of([0] * 84, [t for t, _ in stuck], [v for _, v in stuck]))
    kinds = [(c.rule_id, c.after, c.event_ts_ms - T0) for c in got]
    assert ("river_level", Level.YELLOW, 0) in kinds
    assert ("water_level_stuck", Level.BLUE, 6 * H) in kinds
    explained = {e["rule"]: e for e in engine.explain("WL-1") if "rule" in e}
    assert explained["water_level_stuck"]["level"] == "blue"
    assert explained["water_level_range"]["params"] == {"max": 11.0}


def test_the_simulated_storm_raises_no_device_fault() -> None:
    regions = RegionRegistry.load(sample_dir() / "regions.yaml")
    reg = SensorRegistry.load(sample_dir() / "sensors.yaml", regions)
    engine = RuleEngine(load_rules(None, "guangdong"), reg, start_ms=T0)
    sim = simulate_rainstorm(reg, StormParams(), T0, seed=522)
    changes = engine.process(sim.flat(), now_ms=sim.end_ms)
    assert any(c.kind == "rain" and c.after >= Level.ORANGE for c in changes)
    assert [c for c in changes if c.kind == "device"] == []


def test_a_flagged_or_late_reading_in_a_full_round_changes_nothing_else() -> None:
    """Full rounds (every sensor once) keep their fast path when a few readings are kept out;
    the result must be what one sensor at a time gives."""
    reg = SensorRegistry([water(f"WL-{i}") for i in range(3)])
    rng = random.Random(4)
    series: list[list[tuple[int, float]]] = []
    for _ in range(3):
        level, s = 6.0, []
        for k in range(60):
            level += rng.choice([-0.05, 0.0, 0.05, 0.1])
            s.append((T0 + k * M5, round(level, 2)))
        series.append(s)
    series[1][20] = (series[1][20][0], series[1][20][1] + 3.0)  # a spike in round 20
    series[2][30] = (series[2][29][0] - 60_000, 7.7)  # round 30 brings WL-2 a late reading
    together = RuleEngine(load_rules(DEFAULTS_DIR), reg)
    alone = RuleEngine(load_rules(DEFAULTS_DIR), reg)
    got_together: list[LevelChange] = []
    got_alone: list[LevelChange] = []
    for k in range(60):
        got_together += together.process(ReadingBatch.of([0, 1, 2], [series[i][k][0] for i in range(3)],
                                                         [series[i][k][1] for i in range(3)]))
        for i in range(3):
            got_alone += alone.process(ReadingBatch.of([i], [series[i][k][0]], [series[i][k][1]]))

    def key(c: LevelChange) -> tuple[object, ...]:
        return (c.event_ts_ms, c.rule_id, c.subject, c.before, c.after, c.value, tuple(c.readings))

    assert sorted(map(key, got_together)) == sorted(map(key, got_alone))
    assert any(c.rule_id == "water_level_spike" for c in got_together)
    assert any(c.rule_id == "river_level" for c in got_together)
