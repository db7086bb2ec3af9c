"""The rainstorm simulator over the sample district, and the messages the publisher sends."""

from __future__ import annotations

import itertools
import math

import numpy as np
import orjson
import pytest

from ews.config import sample_dir
from ews.regions import RegionRegistry
from ews.sensors import Sensor, SensorRegistry
from simulators.hyetograph import IntensityFormula, chicago_cumulative
from simulators.publisher import Messages
from simulators.rainstorm import SimResult, StormParams, simulate_rainstorm

START_MS = 1_716_336_000_000  # 2024-05-22 00:00 UTC
TICKS_3H = 36


@pytest.fixture(scope="module")
def sensors() -> SensorRegistry:
    regions = RegionRegistry.load(sample_dir() / "regions.yaml")
    return SensorRegistry.load(sample_dir() / "sensors.yaml", regions)


@pytest.fixture(scope="module")
def storm(sensors: SensorRegistry) -> SimResult:
    return simulate_rainstorm(sensors, StormParams(), START_MS, seed=522)


def km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Haversine distance between (lat, lon) points."""
    la1, lo1, la2, lo2 = map(math.radians, (*a, *b))
    h = math.sin((la2 - la1) / 2) ** 2 + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(h))


def path_position(s: Sensor, p: StormParams) -> tuple[float, float]:
    """(fraction along the path, km from the path line) by sampling the path finely."""
    best = (0.0, float("inf"))
    for i in range(1001):
        f = i / 1000
        pt = (p.start[0] + f * (p.end[0] - p.start[0]), p.start[1] + f * (p.end[1] - p.start[1]))
        d = km((s.lat, s.lon), pt)
        if d < best[1]:
            best = (f, d)
    return best


def max_3h(values: list[float]) -> float:
    best = 0.0
    for i in range(len(values) - TICKS_3H + 1):
        total = 0.0
        for v in values[i : i + TICKS_3H]:
            total += v
        best = max(best, total)
    return best


def first_argmax(values: list[float]) -> int:
    best = 0
    for i, v in enumerate(values):
        if v > values[best]:
            best = i
    return best


def test_ticks_and_timestamps(storm: SimResult, sensors: SensorRegistry) -> None:
    assert storm.n_ticks == 6 * 12
    assert storm.values.shape == (72, len(sensors))
    assert int(storm.tick_ts[0]) == START_MS + 300_000
    assert storm.end_ms == START_MS + 6 * 3600 * 1000
    assert all(int(b) - int(a) == 300_000 for a, b in itertools.pairwise(storm.tick_ts.tolist()))
    flat = storm.flat()
    assert len(flat) == 72 * len(sensors)
    assert bool(np.all(np.diff(flat.ts_ms) >= 0))
    k, i = 40, sensors.index["WL-0007"]
    row = np.flatnonzero((flat.ts_ms == storm.tick_ts[k]) & (flat.sensor == i))
    assert flat.value[row[0]] == storm.values[k, i]


def test_same_seed_same_series_other_seed_differs(sensors: SensorRegistry, storm: SimResult) -> None:
    again = simulate_rainstorm(sensors, StormParams(), START_MS, seed=522)
    other = simulate_rainstorm(sensors, StormParams(), START_MS, seed=523)
    assert np.array_equal(again.values, storm.values)
    assert np.array_equal(again.tick_ts, storm.tick_ts)
    assert not np.array_equal(other.values, storm.values)


def test_values_within_kind_ranges(storm: SimResult, sensors: SensorRegistry) -> None:
    for i, s in enumerate(sensors.sensors):
        spec = sensors.kinds[s.kind]
        column = storm.values[:, i].tolist()
        assert all(spec.min <= v <= spec.max for v in column), s.id
        if s.kind == "gas":
            assert max(column) <= 3.0
        if s.kind == "smoke":
            assert max(column) == 0.0


def test_peak_passes_gauges_in_path_order(storm: SimResult, sensors: SensorRegistry) -> None:
    p = StormParams()
    near_path = []
    for s in sensors.of_kind("rain"):
        frac, dist = path_position(s, p)
        if dist < 2.0:
            near_path.append((frac, s.id))
    near_path.sort()
    first, last = near_path[0], near_path[-1]
    assert last[0] - first[0] > 0.3  # the gauges lie far apart along the path
    t_first = first_argmax(storm.series(first[1]).tolist())
    t_last = first_argmax(storm.series(last[1]).tolist())
    assert t_first < t_last


def test_red_at_the_core_little_far_away(storm: SimResult, sensors: SensorRegistry) -> None:
    p = StormParams()
    middle = ((p.start[0] + p.end[0]) / 2, (p.start[1] + p.end[1]) / 2)
    gauges = sensors.of_kind("rain")
    core = min(gauges, key=lambda s: km((s.lat, s.lon), middle))
    far = max(gauges, key=lambda s: path_position(s, p)[1])
    assert max_3h(storm.series(core.id).tolist()) >= 100.0  # CMA red: 3 h >= 100 mm
    assert max_3h(storm.series(far.id).tolist()) < 50.0
    totals = [max_3h(storm.series(s.id).tolist()) for s in gauges]
    assert sum(1 for t in totals if 50.0 <= t < 100.0) >= 5  # an orange ring around the core


def test_rivers_rise_after_the_rain_and_fall_later(storm: SimResult, sensors: SensorRegistry) -> None:
    gauges = sensors.of_kind("rain")
    risen = 0
    for s in sensors.of_kind("water_level"):
        stage = storm.series(s.id).tolist()
        base = s.params["base_level"]
        assert abs(stage[0] - base) < 0.05, s.id
        if max(stage) - base < 0.5:
            continue
        risen += 1
        nearest = min(gauges, key=lambda g: km((g.lat, g.lon), (s.lat, s.lon)))
        rain_peak = first_argmax(storm.series(nearest.id).tolist())
        stage_peak = first_argmax(stage)
        assert stage_peak > rain_peak, s.id
        assert stage[-1] < max(stage) - 0.1, s.id
    assert risen >= 5


def test_warning_levels_are_reached(storm: SimResult, sensors: SensorRegistry) -> None:
    peaks = {s.id: float(storm.series(s.id).max()) for s in sensors.of_kind("water_level")}
    stations = sensors.of_kind("water_level")
    above_warning = [s for s in stations if peaks[s.id] >= s.params["warning_level"]]
    above_guarantee = [s for s in stations if peaks[s.id] >= s.params["guarantee_level"]]
    assert len(above_warning) >= 3
    assert 1 <= len(above_guarantee) < len(above_warning)
    ponding = [float(storm.series(s.id).max()) for s in sensors.of_kind("ponding")]
    assert sum(1 for d in ponding if d >= 15.0) >= 3
    assert any(d >= 30.0 for d in ponding)
    assert sum(1 for d in ponding if d < 5.0) >= 5  # roads away from the storm stay dry


def test_ponding_drains_after_the_rain(storm: SimResult, sensors: SensorRegistry) -> None:
    for s in sensors.of_kind("ponding"):
        depth = storm.series(s.id).tolist()
        if max(depth) >= 15.0:
            assert depth[-1] < max(depth) / 2, s.id


def test_guangzhou_formula_and_chicago_hyetograph() -> None:
    f = IntensityFormula.guangzhou(1.0)
    q = 3618.427 / (5 + 11.259) ** 0.750  # L/(s·ha) for P = 1 year, 5 minutes
    assert f.a / (5 + f.b) ** f.n == pytest.approx(q / 166.7)
    f100 = IntensityFormula.guangzhou(100.0)
    assert f100.a == pytest.approx(f.a * (1 + 0.438 * 2))

    duration, r = 180.0, 0.4
    t = np.linspace(0.0, duration, 1801)  # every 0.1 min
    cum = chicago_cumulative(t, duration, r, f100).tolist()
    assert cum[0] == pytest.approx(0.0)
    assert cum[-1] == pytest.approx(f100.a * duration / (duration + f100.b) ** f100.n)
    assert all(b >= a for a, b in itertools.pairwise(cum))
    # the heaviest window of each duration holds the formula's depth for that duration
    for window_min in (10, 30, 60):
        w = window_min * 10
        heaviest = max(cum[i + w] - cum[i] for i in range(len(cum) - w))
        expected = f100.a * window_min / (window_min + f100.b) ** f100.n
        assert heaviest == pytest.approx(expected, rel=2e-3)


def test_storm_params_defaults_and_validation() -> None:
    p = StormParams()
    assert p.burst_h() == 3.0 and p.after_h() == 1.0 and p.crossing_h() == pytest.approx(2.0)
    # never longer than asked, so a storm placed to end now has no reading in the future
    assert StormParams(duration_h=1.04).duration_s() == 3600
    assert StormParams(duration_h=0.5).duration_s() == 1800
    with pytest.raises(ValueError, match="duration_h leaves no time"):
        StormParams(duration_h=2.0, burst_hours=2.0)
    with pytest.raises(ValueError, match="tick_s"):
        StormParams(tick_s=90)
    with pytest.raises(ValueError, match="peak_ratio"):
        StormParams(peak_ratio=1.0)


def test_messages_per_reading(storm: SimResult, sensors: SensorRegistry) -> None:
    msgs = Messages(storm).tick(10)
    assert len(msgs) == len(sensors)
    by_topic = {topic: (orjson.loads(payload), n) for topic, payload, n in msgs}
    s = sensors.get("WL-0007")
    payload, n = by_topic[f"ews/440106/{s.street}/{s.community}/water_level/WL-0007"]
    assert n == 1
    assert payload == {
        "ts": int(storm.tick_ts[10]),
        "value": float(storm.values[10, sensors.index["WL-0007"]]),
        "unit": "m",
    }


def test_messages_as_gateway_batches(storm: SimResult, sensors: SensorRegistry) -> None:
    msgs = Messages(storm, batch=True).tick(3)
    assert len(msgs) == 21
    seen: list[str] = []
    for topic, payload, n in msgs:
        parts = topic.split("/")
        assert parts[:2] == ["ews", "440106"] and parts[3] == "batch"
        assert parts[4] == f"GW-{parts[2]}"
        readings = orjson.loads(payload)["readings"]
        assert len(readings) == n
        for r in readings:
            assert sensors.get(r["sensor"]).street == parts[2]
            assert r["ts"] == int(storm.tick_ts[3])
            assert r["value"] == float(storm.values[3, sensors.index[r["sensor"]]])
            seen.append(r["sensor"])
    assert sorted(seen) == sorted(s.id for s in sensors.sensors)
