"""Area rules (k of n sensors of a region) and flapping suppression, against plain loops."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from detectors.area import AreaCounter
from detectors.flap import FlapGuard
from ews.levels import Level
from ews.models import LevelChange, ReadingBatch
from ews.sensors import Sensor, SensorRegistry
from rules.engine import RuleEngine
from rules.loader import load_rules

M5 = 300_000
MIN = 60_000
T0 = 1_782_000_000_000


def area_ref(levels: list[int], groups: list[int], need: list[int]) -> list[int]:
    out = []
    for g, k in enumerate(need):
        members = [lv for lv, gg in zip(levels, groups, strict=True) if gg == g]
        out.append(max([lv for lv in range(1, 5) if sum(m >= lv for m in members) >= k], default=0))
    return out


def test_area_counter_matches_reference() -> None:
    rng = random.Random(6)
    groups = [rng.randrange(4) for _ in range(30)]
    need = [1, 2, 3, 40]  # the last region can never reach its k
    counter = AreaCounter(np.array(groups), np.array(need))
    levels = [0] * 30
    for _ in range(300):
        s = rng.sample(range(30), rng.randint(1, 5))
        old = [levels[i] for i in s]
        new = [rng.randrange(5) for _ in s]
        for i, v in zip(s, new, strict=True):
            levels[i] = v
        counter.move(np.array(s), np.array(old, np.int8), np.array(new, np.int8))
        assert counter.levels(np.arange(4)).tolist() == area_ref(levels, groups, need)


def flap_ref(raw: list[tuple[int, int]], changes: int, within: int) -> list[int]:
    shown_out, times, flapping, last_change, prev, shown = [], [], False, None, 0, 0
    for t, lv in raw:
        if lv != prev:
            times.append(t)
            last_change = t
            if len(times) >= changes and t - times[-changes] <= within:
                flapping = True
            prev = lv
        if flapping and last_change is not None and t - last_change >= within:
            flapping = False
        shown = max(shown, lv) if flapping else lv
        shown_out.append(shown)
    return shown_out


def test_flap_guard_matches_reference() -> None:
    rng = random.Random(1)
    for _ in range(20):
        series, t, lv = [], 0, 0
        for _ in range(200):
            t += rng.choice([MIN, 5 * MIN, 30 * MIN])
            if rng.random() < 0.4:
                lv = rng.randrange(4)
            series.append((t, lv))
        guard = FlapGuard(1, 4, 60 * MIN)
        got, raw_old, shown = [], 0, np.zeros(1, np.int8)
        for t, lv in series:
            shown = guard.report(np.array([0]), np.array([t], np.int64), np.array([raw_old], np.int8),
                                 np.array([lv], np.int8), shown)
            got.append(int(shown[0]))
            raw_old = lv
        assert got == flap_ref(series, 4, 60 * MIN)


AREA_RULES = """\
rules:
  - id: street_rain
    name: 街道暴雨
    select: {kind: rain}
    measure: {type: accumulation, windows: {rain_1h: 1h}}
    levels: {yellow: 20, orange: 40}
    area: {by: street, k: 2}
  - id: community_half
    select: {kind: rain}
    measure: {type: accumulation, windows: {rain_1h: 1h}}
    levels: {yellow: 20}
    area: {by: community, k: "50%"}
"""


def test_area_rule_subject_is_the_region(tmp_path: Path) -> None:
    p = tmp_path / "area.yaml"
    p.write_text(AREA_RULES, encoding="utf-8")
    communities = ["440106001001", "440106001001", "440106001002", "440106002001"]
    reg = SensorRegistry([Sensor(id=f"RG-{i}", kind="rain", community=c, lat=23.1, lon=113.3)
                          for i, c in enumerate(communities)])
    engine = RuleEngine(load_rules(p), reg)
    # gauges 0 and 2 (two communities of street 440106001) get heavy rain, 1 and 3 none
    rain = {0: 10.0, 1: 0.0, 2: 6.0, 3: 25.0}
    got: list[LevelChange] = []
    for k in range(12):
        got += engine.process(ReadingBatch.of(list(rain), [T0 + k * M5] * 4, list(rain.values())))
    street = [(c.subject, c.event_ts_ms - T0, c.after) for c in got if c.rule_id == "street_rain"]
    # RG-0 reaches 20 mm at its 2nd reading, RG-2 at its 4th: the street has 2 of 3 at yellow;
    # RG-3 alone (street 440106002) never makes its street reach k=2
    assert street[0] == ("440106001", 3 * M5, Level.YELLOW)
    assert ("440106002", 3 * M5, Level.YELLOW) not in street
    orange_at = next(k for k in range(12) if min(10.0 * (k + 1), 6.0 * (k + 1)) >= 40)
    assert street[1] == ("440106001", orange_at * M5, Level.ORANGE)
    first = next(c for c in got if c.rule_id == "street_rain")
    assert first.community == "440106001" and first.measure == "rain_1h"
    assert first.value == 40.0 and first.threshold == 20.0  # RG-0 holds the most rain
    half = sorted({(c.subject, c.after) for c in got if c.rule_id == "community_half"})
    # 440106001001: 1 of 2 gauges is 50 %; 440106001002 and 440106002001 have one gauge each
    assert half == [("440106001001", Level.YELLOW), ("440106001002", Level.YELLOW),
                    ("440106002001", Level.YELLOW)]
    info = next(e for e in engine.explain("RG-1") if e.get("rule") == "street_rain")
    assert info["area"] == {"by": "street", "region": "440106001", "k": 2, "n": 3,
                            "region_level": "orange"}


def test_flapping_gas_reading_is_held(tmp_path: Path) -> None:
    p = tmp_path / "gas.yaml"
    p.write_text("rules:\n  - id: gas\n    select: {kind: gas}\n    levels: {orange: 25}\n"
                 "    flap: {changes: 4, within: 30m}\n", encoding="utf-8")
    reg = SensorRegistry([Sensor(id="GS-1", kind="gas", community="440106001001", lat=23.1, lon=113.3)])
    engine = RuleEngine(load_rules(p), reg)
    values = [20, 26, 20, 26, 20, 26, 20, 20, 20, 20, 20, 20, 20, 20]
    got: list[LevelChange] = []
    for k, v in enumerate(values):
        got += engine.process(ReadingBatch.of([0], [T0 + k * 5 * MIN], [float(v)]))
    raw = [(T0 + k * 5 * MIN, 3 if v >= 25 else 0) for k, v in enumerate(values)]
    shown = flap_ref(raw, 4, 30 * MIN)
    expected, prev = [], 0
    for (t, _), lv in zip(raw, shown, strict=True):
        if lv != prev:
            expected.append((t, lv))
            prev = lv
    assert [(c.event_ts_ms, int(c.after)) for c in got] == expected
    # open, resolve, open (the 4th change flaps) ... held until 30 min without a change
    assert len(expected) == 4 and expected[-1] == (T0 + 12 * 5 * MIN, 0)
