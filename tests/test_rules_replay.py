"""Event time: a storm replayed 100x faster, in other batches and orders, gives the same warnings."""

from __future__ import annotations

import random

import numpy as np

from ews.config import sample_dir
from ews.levels import Level
from ews.models import LevelChange, ReadingBatch
from ews.regions import RegionRegistry
from ews.sensors import SensorRegistry
from rules.engine import RuleEngine
from rules.loader import load_rules
from simulators.rainstorm import StormParams, simulate_rainstorm

T0 = 1_782_000_000_000
MIN = 60_000


def key(c: LevelChange) -> tuple[object, ...]:
    return (c.event_ts_ms, c.rule_id, c.subject, c.before, c.after, c.measure, c.value, c.threshold,
            tuple(c.readings), c.rule_version, c.predicted_ts_ms, c.lead_s)


def replay(reg: SensorRegistry, batches: list[ReadingBatch], speed: float, rng: random.Random
           ) -> tuple[list[LevelChange], list[LevelChange]]:
    """Feed batches at `speed` x event time, with the no-data timer every wall-clock second."""
    rules = load_rules(None, ["guangdong", "forecast"])
    engine = RuleEngine(rules, reg, start_ms=T0)
    hazards: list[LevelChange] = []
    devices: list[LevelChange] = []
    next_tick = T0
    for b in batches:
        wall = T0 + int((int(b.ts_ms.max()) - T0) / speed) + rng.randrange(0, 2000)
        while next_tick <= wall:
            devices += engine.check_nodata(next_tick)
            next_tick += 1000
        for c in engine.process(b, now_ms=wall):
            (devices if c.kind == "device" else hazards).append(c)
    devices += engine.check_nodata(next_tick)
    return hazards, devices


def test_storm_replayed_100x_faster_gives_the_same_warnings() -> None:
    regions = RegionRegistry.load(sample_dir() / "regions.yaml")
    reg = SensorRegistry.load(sample_dir() / "sensors.yaml", regions)
    sim = simulate_rainstorm(reg, StormParams(duration_h=8.0), T0, seed=7)
    rng = random.Random(1)
    live = [sim.tick(k) for k in range(sim.n_ticks)]
    # faster: gateway batches of three ticks, readings shuffled inside each batch
    fast: list[ReadingBatch] = []
    for k in range(0, sim.n_ticks, 3):
        part = [sim.tick(j) for j in range(k, min(k + 3, sim.n_ticks))]
        s = np.concatenate([p.sensor for p in part])
        t = np.concatenate([p.ts_ms for p in part])
        v = np.concatenate([p.value for p in part])
        order = np.random.default_rng(k).permutation(s.shape[0])
        fast.append(ReadingBatch(s[order], t[order], v[order]))
    hazards_live, devices_live = replay(reg, live, 1.0, rng)
    hazards_fast, devices_fast = replay(reg, fast, 100.0, rng)
    assert sorted(map(key, hazards_live)) == sorted(map(key, hazards_fast))
    # no data is the one wall-clock rule: at 1x, gas sensors (expected every minute) that the
    # simulator samples every 5 minutes are rightly late; at 100x nobody is
    assert devices_fast == []
    assert devices_live and {(c.rule_id, reg.get(c.subject).kind) for c in devices_live} == {("no_data", "gas")}
    rules = {c.rule_id for c in hazards_live}
    assert {"rainstorm", "rainstorm_forecast", "river_level"} <= rules
    assert any(c.after >= Level.ORANGE for c in hazards_live)
    # the forecast warned ahead of the observed signal at some gauge
    leads = [c.lead_s for c in hazards_live if c.rule_id == "rainstorm_forecast" and c.lead_s]
    assert leads and max(leads) > 0
