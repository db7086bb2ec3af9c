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
from rules.model import RuleSet

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


def count_passes(monkeypatch: pytest.MonkeyPatch) -> dict[bool, int]:
    """How often the one-pass path took a stretch (True) and declined one (False)."""
    outcomes = {True: 0, False: 0}
    real = rules.quiet.quiet_pass

    def counted(*a: Any) -> bool:
        ok = real(*a)
        outcomes[ok] += 1
        return ok

    monkeypatch.setattr(rules.quiet, "quiet_pass", counted)
    return outcomes


def both_ways(rules_: RuleSet, sensors: SensorRegistry, readings: list[tuple[int, int, float]],
              sizes: tuple[int, ...]) -> dict[int, list[LevelChange]]:
    """Each batch size's changes, after checking that the one-pass path and the rounds raise
    the same ones and leave every array of state the same."""
    results = {}
    for size in sizes:
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
    return results


@pytest.mark.parametrize("profile", [["guangdong"], ["forecast", "flood_season"]])
def test_one_pass_and_rounds_agree(profile: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    sensors = RegistryConfig.sample().load().sensors
    outcomes = count_passes(monkeypatch)
    results = both_ways(load_rules(None, profile), sensors, district_stream(sensors, 7), (4_000, 13_331, 150_000))
    # both paths were taken: quiet stretches in one pass, the storm and the faults in rounds
    assert outcomes[True] > 20 and outcomes[False] > 5
    ids = {c.rule_id for c in results[4_000]}
    assert {"river_level", "ponding", "gas", "smoke", "ponding_stuck", "water_level_spike"} <= ids
    assert {"rain_drift"} <= ids or "rainstorm" in ids
    # and a different batching gives the same warnings
    assert sorted(map(key, results[4_000])) == sorted(map(key, results[13_331]))
    assert sorted(map(key, results[4_000])) == sorted(map(key, results[150_000]))


PART_OF_A_KIND = """
rules:
  - id: ponding_street
    name: 积水预警（一条街道）
    select: {kind: ponding, region: "440106001"}
    measure: {type: value}
    levels: {yellow: 15, orange: 30, red: 50}
    hysteresis: 2
  - id: river_some
    name: 水位预警（部分站点）
    select: {kind: water_level, sensors: [WL-0001, WL-0002, WL-0003, WL-0004]}
    measure: {type: value}
    levels: {yellow: 6.2, orange: 6.8}
  - id: river_rise_some
    name: 水位上涨（部分站点）
    select: {kind: water_level, sensors: [WL-0002, WL-0005]}
    measure:
      type: value
      trends: {rise_1h: 1h}
    levels:
      blue: {rise_1h: 0.5}
faults:
  - id: ponding_spike_street
    name: 积水传感器跳变（一条街道）
    detector: spike
    select: {kind: ponding, region: "440106002"}
    max_jump: 20
    confirm: 2
  - id: river_stuck_some
    name: 水位计停滞（部分站点）
    detector: stuck
    select: {kind: water_level, sensors: [WL-0003, WL-0006, WL-0007]}
    for: 2h
    tolerance: 0
"""


def test_rules_and_faults_over_part_of_a_kind_agree(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rule or a fault that covers only some sensors of their kind takes its own subjects
    out of the stretch; the rest of the kind passes through it untouched."""
    sensors = RegistryConfig.sample().load().sensors
    (tmp_path / "part.yaml").write_text(PART_OF_A_KIND, encoding="utf-8")
    rules_ = load_rules(tmp_path)
    engine = RuleEngine(rules_, sensors, start_ms=T0)
    for kind in ("ponding", "water_level"):
        ks = next(k for k in engine.kinds if k.kind == kind)
        covered = [(x.subject_of_row >= 0).mean() for x in [*ks.rules, *ks.faults]]
        assert min(covered) > 0 and max(covered) < 1, (kind, covered)
    outcomes = count_passes(monkeypatch)
    results = both_ways(rules_, sensors, district_stream(sensors, 11), (4_000, 150_000))
    assert outcomes[True] > 10 and outcomes[False] > 0
    ids = {c.rule_id for c in results[4_000]}
    assert {"ponding_street", "river_some"} <= ids
    assert sorted(map(key, results[4_000])) == sorted(map(key, results[150_000]))
