"""Backlogs evaluated in one pass (rules/quiet.py) leave exactly what the rounds leave."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

import rules.quiet
from ews.config import RegistryConfig
from ews.models import LevelChange, ReadingBatch
from ews.sensors import SensorRegistry
from rules.engine import RuleEngine
from rules.loader import load_rules

H = 3_600_000
T0 = 1_782_000_000_000
HOURS = 40


def key(c: LevelChange) -> tuple[object, ...]:
    return (c.event_ts_ms, c.rule_id, c.subject, c.before, c.after, c.measure, c.value, c.threshold,
            tuple(c.readings), c.predicted_ts_ms, c.lead_s, c.drill)


def district_stream(sensors: SensorRegistry, seed: int) -> list[tuple[int, int, float]]:
    """40 hours of the sample district at nominal intervals: quiet, a storm from hour 20 to 26
    (rain, rising rivers, ponding, a gas leak, a smoke alarm), quiet again; with a spiking
    river gauge, a ponding sensor stuck at 7 cm throughout, and a rain gauge that reads nothing
    in the storm (drift against its neighbours)."""
    rng = random.Random(seed)
    out = []
    for i, s in enumerate(sensors.sensors):
        step = int(sensors.kinds[s.kind].interval_s * 1000)
        level = float(s.params.get("base_level", 5.0))
        for t in range(T0 + rng.randrange(0, step, 1000), T0 + HOURS * H, step):
            h = (t - T0) / H
            storm = 20 <= h < 26
            if s.kind == "rain":
                wet = rng.choice([4.0, 6.0, 9.5]) if storm else rng.choice([0.0] * 9 + [0.2])
                v = 0.0 if s.id == "RG-0002" else wet
            elif s.kind == "water_level":
                if storm and i % 2 == 0:
                    level += 0.12
                elif h >= 26:
                    level = max(float(s.params.get("base_level", 5.0)), level - 0.1)
                v = round(level + rng.choice([0.0, 0.01, 0.02]), 2)
                if s.id == "WL-0003" and 10 <= h < 10.3:
                    v += 3.0
            elif s.kind == "ponding":
                deep = rng.choice([20.0, 35.0, 55.0]) if storm and i % 3 == 0 else rng.choice([0.0, 0.0, 1.0])
                v = 7.0 if s.id == "PD-0001" else deep
            elif s.kind == "gas":
                v = 60.0 if storm and i % 20 == 0 and h < 21 else float(rng.choice([0, 1, 2]))
            else:
                v = 1.0 if storm and i % 25 == 0 else 0.0
            out.append((i, t, v))
    out.sort(key=lambda r: (r[1], r[0]))
    return out


def feed(engine: RuleEngine, readings: list[tuple[int, int, float]], size: int) -> list[LevelChange]:
    changes = []
    for a in range(0, len(readings), size):
        part = readings[a:a + size]
        batch = ReadingBatch(np.asarray([r[0] for r in part], np.int64), np.asarray([r[1] for r in part], np.int64),
                             np.asarray([r[2] for r in part], np.float64), False)
        changes += engine.process(batch, now_ms=part[-1][1], replay=True)
    return changes


def arrays(obj: Any, prefix: str, skip: set[str]) -> dict[str, np.ndarray]:
    return {f"{prefix}.{k}": v for k, v in vars(obj).items() if isinstance(v, np.ndarray) and k not in skip}


def state(engine: RuleEngine) -> dict[str, np.ndarray]:
    """Every array of detector state; the accumulator's remembered window starts are a cache."""
    out: dict[str, np.ndarray] = {}
    for ks in engine.kinds:
        out |= arrays(ks.windows, f"{ks.kind}.windows", {"rewritten"})
        for rs in ks.rules:
            p = f"{ks.kind}.{rs.spec_id}"
            out |= arrays(rs, p, set()) | arrays(rs.detector, f"{p}.detector", set())
            if rs.flap is not None:
                out |= arrays(rs.flap, f"{p}.flap", set())
        for fs in ks.faults:
            p = f"{ks.kind}.{fs.binding.spec.id}"
            out |= arrays(fs, p, {"subject_of_row"}) | arrays(fs.detector, f"{p}.detector", set())
            out |= arrays(fs.signal, f"{p}.signal", set())
    return out


@pytest.mark.parametrize("profile", [["guangdong"], ["forecast", "flood_season"]])
def test_one_pass_and_rounds_agree(profile: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    sensors = RegistryConfig.sample().load().sensors
    rules_ = load_rules(None, profile)
    readings = district_stream(sensors, 7)
    outcomes = {True: 0, False: 0}
    real = rules.quiet.quiet_pass

    def counted(*a: Any) -> bool:
        ok = real(*a)
        outcomes[ok] += 1
        return ok

    monkeypatch.setattr(rules.quiet, "quiet_pass", counted)
    results = {}
    for size in (4_000, 13_331, 150_000):
        fast = RuleEngine(rules_, sensors, start_ms=T0)
        slow = RuleEngine(rules_, sensors, start_ms=T0)
        slow.quiet_stretches = False
        results[size] = fast_changes = feed(fast, readings, size)
        slow_changes = feed(slow, readings, size)
        assert [key(c) for c in fast_changes] == [key(c) for c in slow_changes]
        a, b = state(fast), state(slow)
        assert a.keys() == b.keys()
        differ = [k for k in a if not np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f")]
        assert differ == []
    # both paths were taken: quiet stretches in one pass, the storm and the faults in rounds
    assert outcomes[True] > 20 and outcomes[False] > 5
    ids = {c.rule_id for c in results[4_000]}
    assert {"river_level", "ponding", "gas", "smoke", "ponding_stuck", "water_level_spike"} <= ids
    assert {"rain_drift"} <= ids or "rainstorm" in ids
    # and a different batching gives the same warnings
    assert sorted(map(key, results[4_000])) == sorted(map(key, results[13_331]))
    assert sorted(map(key, results[4_000])) == sorted(map(key, results[150_000]))
