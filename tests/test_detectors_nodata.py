"""No data on the wall clock: per sensor against its interval, and one warning for a dead feed."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from detectors.nodata import NoData
from ews.levels import Level
from ews.models import LevelChange, ReadingBatch
from ews.sensors import Sensor, SensorRegistry
from rules.engine import RuleEngine
from rules.loader import load_rules

S = 1000
T0 = 1_782_000_000_000
NODATA = """\
faults:
  - id: no_data
    detector: no_data
    select: {kind: "*"}
    after: 3x
    feed_down: {fraction: 0.5, min_sensors: 3}
"""


def test_exactly_at_the_timeout_is_not_silent() -> None:
    nd = NoData(np.array([900_000.0, 180_000.0]), start_ms=T0)
    assert nd.silent(T0 + 900_000).tolist() == [False, True]
    assert nd.silent(T0 + 900_001).tolist() == [True, True]
    nd.seen(np.array([0]), T0 + 900_001)
    assert nd.silent(T0 + 900_002).tolist() == [False, True]
    nd.seen(np.array([0]), T0)  # an older arrival time never moves it back
    assert nd.last_seen[0] == T0 + 900_001
    nd.grace(np.array([1]), T0 + 1_700_000)
    assert nd.silent(T0 + 1_800_002).tolist() == [True, False]


def registry(n_rain: int = 6, n_gas: int = 2, districts: tuple[str, ...] = ("440106",)) -> SensorRegistry:
    sensors = []
    for d in districts:
        sensors += [Sensor(id=f"RG-{d}-{i}", kind="rain", community=f"{d}001001", lat=23.1, lon=113.3)
                    for i in range(n_rain)]
        sensors += [Sensor(id=f"GS-{d}-{i}", kind="gas", community=f"{d}001002", lat=23.1, lon=113.3)
                    for i in range(n_gas)]
    return SensorRegistry(sensors)


def engine_with(tmp_path: Path, reg: SensorRegistry) -> RuleEngine:
    p = tmp_path / "device.yaml"
    p.write_text(NODATA, encoding="utf-8")
    return RuleEngine(load_rules(p), reg, start_ms=T0)


def summary(changes: list[LevelChange]) -> list[tuple[str, str, str]]:
    return [(c.rule_id, c.subject, c.after.key) for c in changes]


def test_each_sensor_against_its_own_interval(tmp_path: Path) -> None:
    reg = registry()
    engine = engine_with(tmp_path, reg)
    rain = [i for i, s in enumerate(reg.sensors) if s.kind == "rain"]
    gas = [i for i, s in enumerate(reg.sensors) if s.kind == "gas"]
    # rain every 300 s (timeout 900 s), gas every 60 s (timeout 180 s); all report at +100 s
    engine.process(ReadingBatch.of(rain + gas, [T0] * 8, [0.0] * 8), now_ms=T0 + 100 * S)
    assert engine.check_nodata(T0 + 280 * S) == []  # 180 s after the gas readings: on time
    got = engine.check_nodata(T0 + 281 * S)
    assert summary(got) == [("no_data", reg.sensors[i].id, "blue") for i in gas]
    assert got[0].kind == "device" and got[0].measure == "no_data" and got[0].threshold == 180.0
    assert got[0].value == 181.0 and got[0].event_ts_ms == T0 + 281 * S
    # rain keeps reporting except gauge 0; it falls silent alone, so it is not a feed outage
    for k in range(1, 5):
        engine.process(ReadingBatch.of(rain[1:], [T0 + k * 300 * S] * 5, [0.0] * 5), now_ms=T0 + (100 + k * 300) * S)
    got = engine.check_nodata(T0 + 1001 * S)
    assert summary(got) == [("no_data", reg.sensors[rain[0]].id, "blue")]
    assert engine.check_nodata(T0 + 1200 * S) == []  # a warning is raised once
    # a reading resolves it at once, without waiting for the timer
    back = engine.process(ReadingBatch.of([rain[0]], [T0 + 1200 * S], [0.0]), now_ms=T0 + 1201 * S)
    assert summary(back) == [("no_data", reg.sensors[rain[0]].id, "none")]
    assert engine.levels("no_data")[reg.sensors[rain[0]].id] == Level.NONE


def test_whole_district_silent_is_one_feed_warning_and_grace_when_it_returns(tmp_path: Path) -> None:
    reg = registry(n_gas=0, districts=("440106", "440104"))
    engine = engine_with(tmp_path, reg)
    everyone = list(range(len(reg)))
    engine.process(ReadingBatch.of(everyone, [T0] * len(reg), [0.0] * len(reg)), now_ms=T0)
    # district 440104 keeps reporting, 440106 goes quiet entirely (a gateway or network fault)
    d104 = [i for i, s in enumerate(reg.sensors) if s.community.startswith("440104")]
    for k in range(1, 5):
        engine.process(ReadingBatch.of(d104, [T0 + k * 240 * S] * len(d104), [0.0] * len(d104)),
                       now_ms=T0 + k * 240 * S)
    got = engine.check_nodata(T0 + 960 * S)
    assert summary(got) == [("no_data.feed_down", "440106", "blue")]
    assert got[0].community == "440106" and got[0].value == 6.0
    assert engine.check_nodata(T0 + 1000 * S) == []
    # the district comes back: the feed warning resolves; a sensor that stays silent gets a
    # full timeout from the return before it is called silent
    d106 = [i for i, s in enumerate(reg.sensors) if s.community.startswith("440106")]
    engine.process(ReadingBatch.of(d106[1:], [T0 + 1100 * S] * (len(d106) - 1), [0.0] * (len(d106) - 1)),
                   now_ms=T0 + 1100 * S)
    engine.process(ReadingBatch.of(d104, [T0 + 1100 * S] * len(d104), [0.0] * len(d104)), now_ms=T0 + 1100 * S)
    got = engine.check_nodata(T0 + 1101 * S)
    assert summary(got) == [("no_data.feed_down", "440106", "none")]
    others = [i for i in everyone if i != d106[0]]
    engine.process(ReadingBatch.of(others, [T0 + 1700 * S] * len(others), [0.0] * len(others)),
                   now_ms=T0 + 1700 * S)
    assert engine.check_nodata(T0 + (1101 + 900) * S) == []
    late = engine.check_nodata(T0 + (1101 + 901) * S)
    assert summary(late) == [("no_data", reg.sensors[d106[0]].id, "blue")]


def test_collector_disconnected_is_one_warning_per_district_not_one_per_sensor(tmp_path: Path) -> None:
    reg = registry(districts=("440106", "440104"))
    engine = engine_with(tmp_path, reg)
    got = engine.check_nodata(T0 + 3600 * S, feed_up=False)  # an hour without the broker
    assert sorted(summary(got)) == [("no_data.feed_down", "440104", "blue"),
                                    ("no_data.feed_down", "440106", "blue")]
    assert all(lv == Level.NONE for lv in engine.levels("no_data").values())
    got = engine.check_nodata(T0 + 3601 * S, feed_up=True)  # back: nobody is silent yet
    assert sorted(summary(got)) == [("no_data.feed_down", "440104", "none"),
                                    ("no_data.feed_down", "440106", "none")]
    assert engine.check_nodata(T0 + (3601 + 180) * S) == []
    assert len(engine.check_nodata(T0 + (3601 + 181) * S)) == 4  # the gas sensors, after their timeout


def test_replayed_history_is_not_arrival(tmp_path: Path) -> None:
    reg = registry()
    engine = engine_with(tmp_path, reg)
    engine.process(ReadingBatch.of([0], [T0 + 10**7], [0.0]), replay=True)
    assert engine.nodata[0].detector.last_seen[0] == T0  # only the start's grace
