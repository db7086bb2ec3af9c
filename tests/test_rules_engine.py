"""The rules engine on hand-made series, checked against levels computed here with loops."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import numpy as np

from ews.levels import Level
from ews.models import LevelChange, ReadingBatch
from ews.sensors import Sensor, SensorRegistry
from rules.engine import RuleEngine
from rules.loader import DEFAULTS_DIR, load_rules

H = 3_600_000
M5 = 300_000
T0 = 1_782_000_000_000
COMMUNITY = "440106001001"


def sensor(sid: str, kind: str, community: str = COMMUNITY, **params: float) -> Sensor:
    return Sensor(id=sid, kind=kind, community=community, lat=23.1, lon=113.3, params=params)


def key(c: LevelChange) -> tuple[object, ...]:
    return (c.event_ts_ms, c.rule_id, c.subject, c.before, c.after, c.measure, c.value,
            c.threshold, tuple(c.readings), c.rule_version, c.drill)


def storm(seed: int, n: int = 200) -> list[tuple[int, float]]:
    """Five-minute rain with a dry start, a long moderate spell, a burst and a dry end."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        phase = i / n
        if phase < 0.1 or phase > 0.85:
            v = 0.0
        elif 0.45 < phase < 0.55:
            v = rng.choice([5.0, 7.5, 10.0, 12.5])
        else:
            v = rng.choice([0.0, 0.5, 1.0, 1.5, 2.0, 3.0])
        out.append((T0 + i * M5, v))
    return out


def cma_levels(series: list[tuple[int, float]], blue: bool = True) -> list[tuple[int, int, str]]:
    """(ts, level, measure) after each reading: CMA rainstorm signals, computed with loops."""
    out = []
    for t, _ in series:
        def acc(hours: int, t: int = t) -> float:
            return sum(v for ts, v in series if t - hours * H < ts <= t)

        if acc(3) >= 100:
            out.append((t, 4, "rain_3h"))
        elif acc(3) >= 50:
            out.append((t, 3, "rain_3h"))
        elif acc(6) >= 50:
            out.append((t, 2, "rain_6h"))
        elif blue and acc(12) >= 50:
            out.append((t, 1, "rain_12h"))
        else:
            out.append((t, 0, ""))
    return out


def transitions(levels: list[tuple[int, int, str]]) -> list[tuple[int, Level, Level, str]]:
    out, prev, prev_measure = [], 0, ""
    for t, lv, m in levels:
        if lv != prev:
            out.append((t, Level(prev), Level(lv), m if lv else prev_measure))
            prev, prev_measure = lv, m
    return out


def run(engine: RuleEngine, readings: list[tuple[int, int, float]],
        splits: list[int] | None = None) -> list[LevelChange]:
    """Feed (sensor index, ts, value) readings in batches cut at `splits`."""
    cuts = [0, *(splits or []), len(readings)]
    out: list[LevelChange] = []
    for a, b in itertools.pairwise(cuts):
        part = readings[a:b]
        out += engine.process(ReadingBatch.of([r[0] for r in part], [r[1] for r in part],
                                              [r[2] for r in part]))
    return out


def test_default_rainstorm_gives_the_cma_levels() -> None:
    reg = SensorRegistry([sensor(f"RG-{i}", "rain") for i in range(3)])
    engine = RuleEngine(load_rules(None), reg)
    series = [storm(seed) for seed in range(3)]
    readings = sorted((i, t, v) for i, s in enumerate(series) for t, v in s)
    changes = run(engine, readings)
    for i, s in enumerate(series):
        expected = transitions(cma_levels(s))
        got = [(c.event_ts_ms, c.before, c.after, c.measure) for c in changes
               if c.subject == f"RG-{i}"]
        assert got == expected
        assert any(after >= Level.ORANGE for _, _, after, _ in expected)
    for c in changes:
        assert c.rule_id == "rainstorm" and c.unit == "mm" and c.community == COMMUNITY
        assert 1 <= len(c.readings) <= 6 and c.readings[-1][0] == c.event_ts_ms
        lv = c.after if c.after else c.before
        assert c.threshold == {Level.BLUE: 50, Level.YELLOW: 50, Level.ORANGE: 50,
                               Level.RED: 100}[lv]
        series_i = series[int(c.subject[3:])]
        hours = int(c.measure.removeprefix("rain_").removesuffix("h"))
        assert c.value == sum(v for ts, v in series_i
                              if c.event_ts_ms - hours * H < ts <= c.event_ts_ms)


def test_guangdong_profile_never_issues_blue() -> None:
    reg = SensorRegistry([sensor("RG-0", "rain")])
    engine = RuleEngine(load_rules(None, profile="guangdong"), reg)
    # 1 mm every 10 min: 72 mm in 12 h is blue under CMA; 36 mm in 6 h is nothing in Guangdong
    s = [(T0 + i * M5, 1.0 if i % 2 else 0.0) for i in range(240)]
    assert transitions(cma_levels(s)) and transitions(cma_levels(s, blue=False)) == []
    assert engine.process(ReadingBatch.of([0] * 240, [t for t, _ in s], [v for _, v in s])) == []


def test_same_changes_whatever_the_batching() -> None:
    sensors = [sensor(f"RG-{i}", "rain") for i in range(4)] + [
        sensor(f"WL-{i}", "water_level", warning_level=5.0 + i, guarantee_level=6.0 + i,
               historical_max=7.0 + i) for i in range(3)
    ] + [sensor("GAS-0", "gas")]
    rules = load_rules(None)
    rng = random.Random(5)
    readings: list[tuple[int, int, float]] = []
    for i in range(4):
        readings += [(i, t, v) for t, v in storm(10 + i, 150)]
    for i in range(3):
        level = 4.0 + i
        for k in range(150):
            level += rng.choice([-0.2, -0.05, 0.0, 0.05, 0.1, 0.3])
            readings.append((4 + i, T0 + k * M5 + 17, round(level, 2)))
    readings += [(7, T0 + k * 60_000, float(rng.choice([0, 10, 24, 25, 30, 46, 50, 55])))
                 for k in range(150)]
    readings.sort(key=lambda r: (r[1], r[0]))
    # redelivered duplicates right after their original
    with_dups: list[tuple[int, int, float]] = []
    for r in readings:
        with_dups.append(r)
        if rng.random() < 0.1:
            with_dups.append(r)

    whole = run(RuleEngine(rules, SensorRegistry(sensors)), with_dups)
    one_by_one = run(RuleEngine(rules, SensorRegistry(sensors)), with_dups,
                     list(range(1, len(with_dups))))
    cuts = sorted(rng.sample(range(1, len(with_dups)), 40))
    random_split = run(RuleEngine(rules, SensorRegistry(sensors)), with_dups, cuts)
    no_dups = run(RuleEngine(rules, SensorRegistry(sensors)), readings)
    assert len(whole) > 10
    assert {"rainstorm", "river_level", "river_rise", "river_forecast", "gas"} <= {c.rule_id for c in whole}
    expected = sorted(map(key, whole))
    assert sorted(map(key, one_by_one)) == expected
    assert sorted(map(key, random_split)) == expected
    assert sorted(map(key, no_dups)) == expected


def test_water_level_uses_each_stations_own_thresholds() -> None:
    reg = SensorRegistry([
        sensor("WL-A", "water_level", warning_level=5.0, guarantee_level=6.0, historical_max=7.0),
        sensor("WL-B", "water_level", warning_level=8.0, guarantee_level=9.0, historical_max=9.5),
    ])
    # the water-level rules alone: these jumps of more than 1 m per reading are spikes to the
    # device-fault defaults
    engine = RuleEngine(load_rules(DEFAULTS_DIR / "water_level.yaml"), reg)
    values = [4.6, 4.7, 5.0, 4.97, 4.94, 6.2, 7.0, 8.0, 9.6, 3.0]
    # station A (blue 4.7, yellow 5, orange 6, red 7; hysteresis 0.05):
    # 4.97 stays yellow inside its band [4.95, 5); 4.94 falls to blue
    exp_a = [0, 1, 2, 2, 1, 3, 4, 4, 4, 0]
    # station B (blue 7.7, yellow 8, orange 9, red 9.5)
    exp_b = [0, 0, 0, 0, 0, 0, 0, 2, 4, 0]
    got: dict[str, list[int]] = {"WL-A": [], "WL-B": []}
    for k, v in enumerate(values):
        engine.process(ReadingBatch.of([0, 1], [T0 + k * M5] * 2, [v, v]))
        for sid, lv in engine.levels("river_level").items():
            got[sid].append(int(lv))
    assert got == {"WL-A": exp_a, "WL-B": exp_b}
    explained = engine.explain("WL-B")[0]
    assert explained["thresholds"] == {"value": {"blue": 8.0 - 0.3, "yellow": 8.0,
                                                 "orange": 9.0, "red": 9.5}}


def test_missing_parameter_skips_only_that_sensor() -> None:
    reg = SensorRegistry([
        sensor("WL-OK", "water_level", warning_level=5.0, guarantee_level=6.0, historical_max=7.0),
        sensor("WL-BAD", "water_level", warning_level=5.0, guarantee_level=6.0),
        sensor("WL-ODD", "water_level", warning_level=5.0, guarantee_level=4.0, historical_max=7.0),
        sensor("RG-1", "rain"),
    ])
    engine = RuleEngine(load_rules(None), reg)
    river = [p for p in engine.bind_problems if p.startswith("rule river_level:")]
    assert len(river) == 2
    bad = next(p for p in river if "WL-BAD" in p)
    assert "river_level" in bad and "historical_max" in bad
    assert any("WL-ODD" in p and "ascend" in p for p in river)
    # other rules needing the missing parameter skip the sensor too; none skips WL-OK
    assert any(p.startswith("rule water_level_range:") and "WL-BAD" in p for p in engine.bind_problems)
    assert not any("WL-OK" in p for p in engine.bind_problems)
    changes = engine.process(ReadingBatch.of([0, 1, 2, 3], [T0] * 4, [6.5, 6.5, 6.5, 50.0]))
    assert sorted((c.subject, c.after) for c in changes) == [
        ("RG-1", Level.ORANGE), ("WL-OK", Level.ORANGE)]


def test_gas_and_smoke_defaults() -> None:
    reg = SensorRegistry([sensor("GAS-1", "gas"), sensor("SMK-1", "smoke")])
    engine = RuleEngine(load_rules(None), reg)
    gas = [24.9, 25.0, 50.0, 46.0, 44.0, 19.0]  # hysteresis 5 % LEL
    smoke = [0.0, 1.0, 1.0, 0.0, 0.0, 1.0]
    ts = [T0 + k * 60_000 for k in range(6)]
    changes = engine.process(ReadingBatch.of([0] * 6 + [1] * 6, ts + ts, gas + smoke, drill=True))
    got = [(c.subject, c.event_ts_ms - T0, c.before.key, c.after.key, c.measure) for c in changes]
    # event-time order; at equal times in rule order (gas before smoke in the defaults)
    assert got == [
        ("GAS-1", 60_000, "none", "orange", "gas"),
        ("SMK-1", 60_000, "none", "orange", "smoke"),
        ("GAS-1", 120_000, "orange", "red", "gas"),
        ("SMK-1", 180_000, "orange", "none", "smoke"),
        ("GAS-1", 240_000, "red", "orange", "gas"),  # 46 is inside red's band [45, 50)
        ("GAS-1", 300_000, "orange", "none", "gas"),
        ("SMK-1", 300_000, "none", "orange", "smoke"),
    ]
    assert all(c.drill for c in changes)
    assert [c.event_ts_ms for c in changes] == sorted(c.event_ts_ms for c in changes)


def test_hold_selectors_and_late_readings(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(
        "version: v1\n"
        "rules:\n"
        "  - id: street_rain\n"
        "    select: {kind: rain, region: '440106002', tags: {owner: city}}\n"
        "    measure: {type: accumulation, windows: {rain_1h: 1h}}\n"
        "    levels: {yellow: 20, red: 60}\n"
        "    hold: 10m\n"
        "    hold_exit: 15m\n"
        "  - id: picked\n"
        "    select: {kind: rain, sensors: [RG-X]}\n"
        "    measure: {type: value}\n"
        "    levels: {orange: 5}\n",
        encoding="utf-8",
    )
    reg = SensorRegistry([
        Sensor(id="RG-IN", kind="rain", community="440106002003", lat=23.1, lon=113.3,
               tags={"owner": "city"}),
        Sensor(id="RG-TAG", kind="rain", community="440106002003", lat=23.1, lon=113.3,
               tags={"owner": "private"}),
        Sensor(id="RG-X", kind="rain", community="440106001001", lat=23.1, lon=113.3),
    ])
    engine = RuleEngine(load_rules(path), reg)
    assert engine.levels("street_rain") == {"RG-IN": Level.NONE}
    assert engine.levels("picked") == {"RG-X": Level.NONE}

    # 5 mm every 5 min: 1 h sum reaches 20 at the 4th reading (15 min), held 10 min more
    rain = [(T0 + k * M5, 5.0) for k in range(8)]
    got = run(engine, [(s, t, v) for t, v in rain for s in (0, 1, 2)])
    street = [(c.event_ts_ms - T0, c.after) for c in got if c.rule_id == "street_rain"]
    # yellow: sum >= 20 from 15 min, held 10 min: opens at 25 min; the sum never reaches 60
    assert street == [(25 * 60_000, Level.YELLOW)]
    picked = [(c.subject, c.event_ts_ms - T0, c.after) for c in got if c.rule_id == "picked"]
    assert picked == [("RG-X", 0, Level.ORANGE)]
    assert all(c.rule_version == "v1" for c in got)

    # a late reading is stored in place (later sums include it) but not evaluated at once
    late = engine.process(ReadingBatch.of([0], [T0 + 8 * M5 - 1000], [30.0]))
    assert late == []
    nxt = engine.process(ReadingBatch.of([0], [T0 + 8 * M5], [0.0]))
    assert nxt == []  # 1 h sum 70 thanks to the late 30 mm: red's entry hold starts at 40 min
    red = engine.process(ReadingBatch.of([0], [T0 + 8 * M5 + 10 * 60_000], [0.0]))
    t_red = T0 + 8 * M5 + 10 * 60_000
    stored = [*rain, (T0 + 8 * M5 - 1000, 30.0), (T0 + 8 * M5, 0.0), (t_red, 0.0)]
    expected_sum = sum(v for ts, v in stored if t_red - H < ts <= t_red)
    assert [(c.after, c.value) for c in red] == [(Level.RED, expected_sum)]


def test_bad_input_is_dropped_not_fatal() -> None:
    reg = SensorRegistry([sensor("GAS-1", "gas"), sensor("RG-1", "rain")])
    engine = RuleEngine(load_rules(None), reg)
    batch = ReadingBatch(np.array([0, 7, -1, 0], np.int64), np.array([T0, T0, T0, T0 + 1]),
                         np.array([float("nan"), 99.0, 99.0, 30.0]))
    changes = engine.process(batch)
    assert [(c.subject, c.after, c.event_ts_ms) for c in changes] == [
        ("GAS-1", Level.ORANGE, T0 + 1)]
    assert engine.process(ReadingBatch.empty()) == []
