"""Hot reload: a good change takes effect at once, a broken file changes nothing and says where."""

from __future__ import annotations

import os
import threading
from datetime import date, datetime
from pathlib import Path

from prometheus_client import REGISTRY

from ews.config import Config, ProfileDates, RegistryConfig, RuleEngineConfig
from ews.levels import Level
from ews.models import LevelChange, ReadingBatch
from ews.sensors import Sensor, SensorRegistry
from rules.profiles import BEIJING, active_profiles, in_range
from rules.runtime import RuleRuntime

M5 = 300_000
T0 = 1_782_000_000_000

RULES_V1 = """\
version: v1
rules:
  - id: gas
    select: {kind: gas}
    levels: {orange: 25, red: 50}
  - id: rain
    select: {kind: rain}
    measure: {type: accumulation, windows: {rain_3h: 3h}}
    levels: {orange: 50}
    hold: 20m
"""


def registry() -> SensorRegistry:
    return SensorRegistry([
        Sensor(id="GS-1", kind="gas", community="440106001001", lat=23.1, lon=113.3),
        Sensor(id="RG-1", kind="rain", community="440106001001", lat=23.1, lon=113.3),
        Sensor(id="WL-1", kind="water_level", community="440106001001", lat=23.1, lon=113.3,
               params={"warning_level": 7.0, "guarantee_level": 8.0, "historical_max": 9.0}),
    ])


def config(rules: Path | None, **engine: object) -> Config:
    return Config(registries=RegistryConfig(regions=Path("r.yaml"), sensors=Path("s.yaml")), rules=rules,
                  rule_engine=RuleEngineConfig.model_validate(engine))


def write(path: Path, text: str) -> None:
    """Write and move the mtime on, so even a same-second edit is seen."""
    old = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(old + 10**9, old + 10**9))


def feed(rt: RuleRuntime, sensor: int, t: int, v: float) -> list[LevelChange]:
    return rt.process(ReadingBatch.of([sensor], [t], [v]))


def rejected() -> float:
    return REGISTRY.get_sample_value("ews_rules_reloads_total", {"result": "refused"}) or 0.0


def test_good_change_takes_effect_and_a_broken_file_leaves_the_old_rules(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    write(path, RULES_V1)
    rt = RuleRuntime(config(path), registry())
    assert feed(rt, 0, T0, 20.0) == []
    # rain: 10 mm every 5 min, 50 mm after the 5th reading; the 20 min hold starts there
    for k in range(6):
        assert feed(rt, 1, T0 + k * M5, 10.0) == []
    assert rt.reload() == []  # nothing changed on disk

    # a good change: gas orange from 25 down to 15 % LEL; the rain rule is untouched
    write(path, RULES_V1.replace("version: v1", "version: v2").replace("orange: 25", "orange: 15"))
    changes = rt.reload()
    assert [(c.rule_id, c.before, c.after, c.value, c.rule_version) for c in changes] == [
        ("gas", Level.NONE, Level.ORANGE, 20.0, "v2")]  # the current reading meets the new rule
    assert [c.after for c in feed(rt, 0, T0 + M5, 14.0)] == [Level.NONE]
    assert [(c.after, c.rule_version) for c in feed(rt, 0, T0 + 2 * M5, 16.0)] == [(Level.ORANGE, "v2")]
    # the untouched rule kept its windows and its running hold: 20 min after the 5th reading
    assert feed(rt, 1, T0 + 6 * M5, 0.0) == []
    opened = feed(rt, 1, T0 + 8 * M5, 0.0)
    assert [(c.rule_id, c.after, c.value, c.event_ts_ms) for c in opened] == [
        ("rain", Level.ORANGE, 60.0, T0 + 8 * M5)]

    # a broken file: an unknown level on line 9; nothing changes and the reason is kept
    before = rejected()
    broken = RULES_V1.replace("version: v1", "version: v3").replace("orange: 25, red: 50", "orange: 5, purple: 50")
    write(path, broken)
    assert rt.reload() == []
    assert rejected() == before + 1
    assert any(p.startswith(f"{path}:") and "purple" in p and "unknown level" in p for p in rt.problems)
    line = next(p for p in rt.problems if "purple" in p).split(":")[1]
    assert int(line) == broken.splitlines().index("    levels: {orange: 5, purple: 50}") + 1
    assert rt.ruleset.version == "v2"
    assert feed(rt, 0, T0 + 3 * M5, 10.0)[0].after == Level.NONE  # v2's 15 % LEL, not v3's 5
    assert rt.reload() == []  # the same broken file is not tried again
    assert rejected() == before + 1

    # fixed: takes effect; a changed rule is warmed up from the readings held
    write(path, RULES_V1.replace("version: v1", "version: v4").replace(
        "levels: {orange: 50}\n    hold: 20m", "levels: {orange: 50, red: 55}\n    hold: 10m"))
    changes = rt.reload()
    assert rt.problems == []
    # 60 mm has held 15 min (since the 6th reading) by the newest reading: red under a 10 min hold
    assert [(c.rule_id, c.before, c.after, c.value, c.rule_version) for c in changes] == [
        ("rain", Level.ORANGE, Level.RED, 60.0, "v4")]


def test_timer_polls_the_files(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    write(path, RULES_V1)
    rt = RuleRuntime(config(path, reload_interval_s=0.05, nodata_interval_s=0.05), registry())
    feed(rt, 0, T0, 20.0)
    got: list[LevelChange] = []
    done = threading.Event()

    def emit(changes: list[LevelChange]) -> None:
        got.extend(changes)
        done.set()

    rt.start(emit)
    try:
        write(path, RULES_V1.replace("orange: 25", "orange: 18"))
        assert done.wait(10)
    finally:
        rt.stop()
    assert [(c.rule_id, c.after) for c in got] == [("gas", Level.ORANGE)]


def test_profiles_by_date() -> None:
    assert in_range(date(2026, 4, 15), "04-15", "10-15") and in_range(date(2026, 10, 15), "04-15", "10-15")
    assert not in_range(date(2026, 4, 14), "04-15", "10-15") and not in_range(date(2026, 10, 16), "04-15", "10-15")
    assert in_range(date(2026, 1, 3), "11-01", "02-28") and not in_range(date(2026, 3, 1), "11-01", "02-28")
    cal = [("flood_season", "04-15", "10-15"), ("winter", "11-01", "02-28")]
    assert active_profiles("guangdong", cal, ["event"], date(2026, 6, 1)) == ["guangdong", "flood_season", "event"]
    assert active_profiles(None, cal, [], date(2026, 12, 1)) == ["winter"]


def test_the_flood_season_starts_without_a_restart() -> None:
    clock = [datetime(2026, 4, 14, 23, 59, 58, tzinfo=BEIJING).timestamp()]
    cfg = config(None, calendar=[ProfileDates.model_validate({"profile": "flood_season", "from": "04-15",
                                                              "to": "10-15"})])
    rt = RuleRuntime(cfg, registry(), clock=lambda: clock[0])
    assert rt.ruleset.profiles == ()
    # 6.6 m: below the blue of the base rules (7.0 - 0.3) but above the flood season's (7.0 - 0.5)
    assert [c for c in feed(rt, 2, T0, 6.6) if c.rule_id == "river_level"] == []
    assert rt.reload() == []
    clock[0] += 3  # midnight in Beijing: 04-15
    changes = rt.reload()
    assert rt.ruleset.profiles == ("flood_season",)
    assert [(c.rule_id, c.after) for c in changes] == [("river_level", Level.BLUE)]


def test_a_reload_does_not_forgive_silence(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    nodata = "faults:\n  - id: nd\n    detector: no_data\n    select: {kind: gas}\n    after: 10m\n"
    write(path, RULES_V1 + nodata)
    clock = [T0 / 1000]
    rt = RuleRuntime(config(path), registry(), clock=lambda: clock[0])
    rt.process(ReadingBatch.of([0], [T0], [1.0]))  # the gas sensor reports once, at T0
    clock[0] += 400
    write(path, (RULES_V1 + nodata).replace("orange: 25", "orange: 24"))
    assert [c.rule_id for c in rt.reload()] == []
    clock[0] += 200  # 600 s after the reading: exactly the timeout, not yet silent
    assert rt.check_nodata() == []
    clock[0] += 1
    assert [(c.rule_id, c.subject, c.after) for c in rt.check_nodata()] == [("nd", "GS-1", Level.BLUE)]
