"""Cumulative counters: increments with resets, roll-over, duplicates and late readings."""

from __future__ import annotations

import math
import random

import numpy as np

from detectors.counter import CounterDecoder
from ews.levels import Level
from ews.models import ReadingBatch
from ews.sensors import Sensor, SensorRegistry
from rules.engine import RuleEngine
from rules.loader import DEFAULTS_DIR, load_rules

M5 = 300_000
T0 = 1_782_000_000_000


def reference(readings: list[tuple[int, float]], rollover: float | None) -> list[float | None]:
    """Per reading: its increment, or None when dropped (late). Plain Python, one sensor."""
    out: list[float | None] = []
    last_ts: int | None = None
    total: float | None = None
    prev: float | None = None

    def inc(base: float | None, now: float) -> float:
        if base is None:
            return 0.0
        d = now - base
        if d >= -1e-6:
            return max(d, 0.0)
        if rollover is not None and d < -rollover / 2:
            return now + rollover - base
        return now

    for t, v in readings:
        if last_ts is None or t > last_ts:
            out.append(inc(total, v))
            prev, total, last_ts = total, v, t
        elif t == last_ts:
            out.append(inc(prev, v))
            total = v
        else:
            out.append(None)
    return out


def feed(dec: CounterDecoder, readings: list[tuple[int, float]], row: int = 0) -> list[float | None]:
    out: list[float | None] = []
    for t, v in readings:
        inc, keep = dec.update(np.array([row]), np.array([t], np.int64), np.array([v]))
        out.append(float(inc[0]) if keep[0] else None)
    return out


def test_resets_rollover_duplicates_and_late_readings() -> None:
    readings = [
        (0, 120.0),        # first reading: what it holds fell at unknown times -> 0
        (M5, 121.5),       # +1.5
        (2 * M5, 121.5),   # nothing
        (2 * M5, 122.0),   # a correction of the newest: taken against the total before it
        (3 * M5, 0.5),     # a reset (dropped far below): 0.5 fell since the reset
        (M5 + 1, 121.0),   # late: dropped
        (4 * M5, 0.5),     # nothing
        (5 * M5, 3.0),     # +2.5
    ]
    got = feed(CounterDecoder(np.array([np.nan])), readings)
    assert got == [0.0, 1.5, 0.0, 0.5, 0.5, None, 0.0, 2.5]
    assert got == reference(readings, None)
    # a counter that wraps at 1000 mm: a drop of more than half the range is a wrap
    wrap = [(0, 998.0), (M5, 999.5), (2 * M5, 1.0), (3 * M5, 2.0), (4 * M5, 0.2)]
    got = feed(CounterDecoder(np.array([1000.0])), wrap)
    assert got == reference(wrap, 1000.0)
    assert [round(x, 6) if x is not None else None for x in got] == [0.0, 1.5, 1.5, 1.0, 0.2]


def test_random_counters_match_reference_vectorised() -> None:
    rng = random.Random(4)
    n = 10
    series: list[list[tuple[int, float]]] = []
    for i in range(n):
        t, total, s = 0, rng.uniform(0, 500), []
        for _ in range(150):
            roll = rng.random()
            if roll < 0.05 and s:
                s.append((s[-1][0] - rng.randrange(1, 3 * M5), rng.uniform(0, 500)))  # late
                continue
            if roll < 0.1 and s:
                s.append((s[-1][0], s[-1][1] + rng.choice([0.0, 0.5])))  # duplicate / correction
                continue
            t += M5
            total = 0.0 if roll > 0.97 else total + rng.choice([0.0, 0.0, 0.2, 1.0, 4.5])
            if i % 2 and total > 999:
                total -= 1000
            s.append((t, round(total, 1)))
        series.append(s)
    roll = np.array([np.nan if i % 2 == 0 else 1000.0 for i in range(n)])
    dec = CounterDecoder(roll)
    got: list[list[float | None]] = [[] for _ in range(n)]
    for step in range(150):
        rows = np.array([i for i in range(n) if step < len(series[i])])
        inc, keep = dec.update(rows, np.array([series[i][step][0] for i in rows], np.int64),
                               np.array([series[i][step][1] for i in rows]))
        for r, x, k in zip(rows, inc, keep, strict=True):
            got[int(r)].append(float(x) if k else None)
    for i in range(n):
        exp = reference(series[i], None if i % 2 == 0 else 1000.0)
        assert len(got[i]) == len(exp)
        for a, b in zip(got[i], exp, strict=True):
            assert (a is None and b is None) or (a is not None and b is not None and math.isclose(a, b, abs_tol=1e-9))


def test_counter_gauge_gives_the_same_warnings_as_an_increment_gauge() -> None:
    rng = random.Random(9)
    incs = [0.0] + [rng.choice([0.0, 1.0, 2.5, 5.0, 7.5]) for _ in range(80)]
    totals, acc = [], 300.0  # the counter held 300 mm before this storm
    for k, v in enumerate(incs):
        acc = 0.0 if k == 40 else acc + v  # a reset in the middle of the storm
        totals.append(round(acc, 6))
    # after the reset the counter holds the rain since then, so the increment at k=40 is 0
    incs[40] = 0.0
    reg = SensorRegistry([
        Sensor(id="RG-INC", kind="rain", community="440106001001", lat=23.1, lon=113.3),
        Sensor(id="RG-CUM", kind="rain", community="440106001001", lat=23.1, lon=113.3,
               tags={"reports": "cumulative"}),
    ])
    engine = RuleEngine(load_rules(DEFAULTS_DIR / "rainstorm.yaml"), reg)
    ts = [T0 + k * M5 for k in range(len(incs))]
    changes = engine.process(ReadingBatch.of([0] * len(ts) + [1] * len(ts), ts + ts, incs + totals))
    by = {sid: [(c.event_ts_ms, c.before, c.after, c.value) for c in changes if c.subject == sid]
          for sid in ("RG-INC", "RG-CUM")}
    assert by["RG-INC"] and by["RG-INC"] == by["RG-CUM"]
    assert max(c.after for c in changes) >= Level.ORANGE
    assert "cumulative" in str(engine.explain("RG-CUM")[0].get("input"))
