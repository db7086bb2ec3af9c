"""Loading and checking rule files: defaults, profiles, and errors with the right line."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from ews.levels import Level
from ews.sensors import Sensor, SensorRegistry
from ews.yamlfile import ConfigError
from rules.check import check_file
from rules.expr import Threshold, parse_duration_ms
from rules.loader import load_rules

GOOD = """\
version: "2026-11-a"
rules:
  - id: rainstorm
    name: 暴雨预警
    select: {kind: rain, region: "440106"}
    measure:
      type: accumulation
      windows: {rain_3h: 3h, rain_6h: 6h}
    levels:
      yellow: {rain_6h: 50}
      orange: {rain_3h: 50}
      red: {rain_3h: 100}
"""


def write(tmp_path: Path, text: str, name: str = "rules.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def problems_of(path: Path) -> list[tuple[int | None, str, str]]:
    with pytest.raises(ConfigError) as err:
        load_rules(path)
    return [(p.line, p.field, p.reason) for p in err.value.problems]


def test_packaged_defaults_follow_the_design() -> None:
    rs = load_rules(None)
    ids = {r.id for r in rs.rules}
    assert {"rainstorm", "river_level", "ponding", "gas", "smoke"} <= ids
    rain = rs.get("rainstorm")
    assert {m: {lv: t.const for lv, t in c.items()} for m, c in rain.conditions.items()} == {
        "rain_3h": {Level.ORANGE: 50.0, Level.RED: 100.0},
        "rain_6h": {Level.YELLOW: 50.0},
        "rain_12h": {Level.BLUE: 50.0},
    }
    assert rain.windows_ms == {"rain_3h": 3 * 3600_000, "rain_6h": 6 * 3600_000,
                               "rain_12h": 12 * 3600_000}
    river = rs.get("river_level")
    params = {"warning_level": 5.0, "guarantee_level": 6.5, "historical_max": 7.2}
    got = {lv: t.resolve(params) for lv, t in river.conditions["value"].items()}
    assert got == {Level.BLUE: 5.0 - 0.3, Level.YELLOW: 5.0, Level.ORANGE: 6.5, Level.RED: 7.2}
    gas = rs.get("gas").conditions["value"]
    assert {lv: t.const for lv, t in gas.items()} == {Level.ORANGE: 25.0, Level.RED: 50.0}
    assert rs.get("ponding").conditions["value"][Level.YELLOW].const == 15.0
    assert rs.get("smoke").conditions["value"] == {Level.ORANGE: Threshold(const=1.0)}
    assert check_file(Path(__file__).parents[1] / "rules" / "defaults") == []


def test_guangdong_profile_has_no_blue_rainstorm() -> None:
    base = load_rules(None)
    gd = load_rules(None, profile="guangdong")
    levels = {lv for c in gd.get("rainstorm").conditions.values() for lv in c}
    assert levels == {Level.YELLOW, Level.ORANGE, Level.RED}
    assert gd.get("rainstorm").profile == "guangdong"
    assert [r.id for r in gd.rules].count("rainstorm") == 1
    assert gd.version != base.version
    with pytest.raises(ConfigError, match="unknown profile"):
        load_rules(None, profile="mars")


def test_version_explicit_or_content_hash(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD)
    rs = load_rules(p)
    assert rs.version == "2026-11-a"
    assert rs.rules[0].version == "2026-11-a"
    text = GOOD.replace('version: "2026-11-a"\n', "")
    p2 = write(tmp_path, text, "other.yaml")
    expected = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
    assert load_rules(p2).version == expected


def test_folder_merges_files_and_rejects_duplicate_ids(tmp_path: Path) -> None:
    d = tmp_path / "set"
    d.mkdir()
    write(d, GOOD, "a.yaml")
    write(d, GOOD.replace("id: rainstorm", "id: rain2"), "b.yaml")
    assert sorted(r.id for r in load_rules(d).rules) == ["rain2", "rainstorm"]
    write(d, "rules:\n  - id: rainstorm\n    select: {kind: smoke}\n    levels: {red: 1}\n",
          "c.yaml")
    probs = problems_of(d)
    assert len(probs) == 1
    assert probs[0][0] == 2 and "already defined" in probs[0][2]


@pytest.mark.parametrize(
    ("broken", "line", "field_part", "reason_part"),
    [
        # unknown level name on line 11
        (GOOD.replace("red: {rain_3h: 100}", "purple: {rain_3h: 100}"), 12, "purple",
         "unknown level"),
        # a window that does not parse, line 8
        (GOOD.replace("rain_6h: 6h}", "rain_6h: 6 hours}"), 8, "rain_6h", "cannot read duration"),
        # a condition on a measure the rule does not define, line 10
        (GOOD.replace("yellow: {rain_6h: 50}", "yellow: {rain_24h: 50}"), 10, "rain_24h",
         "unknown measure"),
        # constant thresholds not ascending: red below orange, line 12
        (GOOD.replace("red: {rain_3h: 100}", "red: {rain_3h: 40}"), 12, "red",
         "ascend"),
        # an unknown field, line 5
        (GOOD.replace("    select:", "    selekt: {kind: rain}\n    select:"), 5, "selekt",
         "unknown field"),
        # the required select missing on the rule starting line 3
        (GOOD.replace('    select: {kind: rain, region: "440106"}\n', ""), 3, "select",
         "required"),
        # a bad hold duration, line 13
        (GOOD + "    hold: soon\n", 13, "hold", "cannot read duration"),
        # durations no engine could hold: infinite, and a window of 999 hours, lines 13 and 8
        (GOOD + "    hold: .inf\n", 13, "hold", "finite"),
        (GOOD.replace("rain_6h: 6h}", "rain_6h: 999h}"), 8, "rain_6h", "longer than 31d"),
        # a bad threshold expression, line 11
        (GOOD.replace("orange: {rain_3h: 50}", 'orange: {rain_3h: "$x ** 2"}'), 11, "orange",
         "cannot read threshold"),
        # a region that is not a code, line 5
        (GOOD.replace('region: "440106"', 'region: "4401"'), 5, "region", "region code"),
    ],
)
def test_errors_name_file_line_and_field(
    tmp_path: Path, broken: str, line: int, field_part: str, reason_part: str
) -> None:
    p = write(tmp_path, broken)
    probs = problems_of(p)
    assert any(ln == line and field_part in f and reason_part in r for ln, f, r in probs), probs
    lines = check_file(p)
    assert any(s.startswith(f"{p}:{line}: ") for s in lines), lines


def test_yaml_syntax_error_line(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD.replace("      orange: {rain_3h: 50}", "      orange: {rain_3h: 50"))
    probs = problems_of(p)
    assert probs[0][0] in (11, 12)
    assert "not valid YAML" in probs[0][2]


def test_scalar_level_shorthand_only_for_one_measure(tmp_path: Path) -> None:
    ok = "rules:\n  - id: p\n    select: {kind: ponding}\n    levels: {yellow: 15, red: 50}\n"
    rs = load_rules(write(tmp_path, ok))
    assert rs.rules[0].conditions == {
        "value": {Level.YELLOW: Threshold(const=15.0), Level.RED: Threshold(const=50.0)}
    }
    bad = GOOD.replace("red: {rain_3h: 100}", "red: 100")
    probs = problems_of(write(tmp_path, bad, "bad.yaml"))
    assert probs[0][0] == 12 and "several" in probs[0][2]


def test_parameter_thresholds_are_not_ordered_at_load(tmp_path: Path) -> None:
    text = (
        "rules:\n  - id: wl\n    select: {kind: water_level}\n    levels:\n"
        '      blue: "$warning_level - 0.3"\n      red: 2\n      yellow: "$warning_level"\n'
    )
    spec = load_rules(write(tmp_path, text)).rules[0]
    assert list(spec.conditions["value"]) == [Level.BLUE, Level.YELLOW, Level.RED]
    assert spec.params == {"warning_level"}


def test_missing_path_and_empty_file(tmp_path: Path) -> None:
    assert problems_of(tmp_path / "nope.yaml")[0][2] == "no such file or folder"
    assert problems_of(write(tmp_path, ""))[0][2] == "file is empty"
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    assert "no *.yaml" in problems_of(empty_dir)[0][2]


def test_check_file_with_registry_lists_skipped_bindings(tmp_path: Path) -> None:
    text = (
        "rules:\n  - id: wl\n    select: {kind: water_level}\n    levels:\n"
        '      yellow: "$warning_level"\n      orange: "$guarantee_level"\n'
    )
    p = write(tmp_path, text)
    reg = SensorRegistry([
        Sensor(id="WL-1", kind="water_level", community="440106001001", lat=23.1, lon=113.3,
               params={"warning_level": 5.0, "guarantee_level": 6.0}),
        Sensor(id="WL-2", kind="water_level", community="440106001001", lat=23.1, lon=113.3,
               params={"warning_level": 5.0}),
    ])
    lines = check_file(p, reg)
    assert len(lines) == 1
    assert lines[0].startswith(f"{p}:2: ") and "WL-2" in lines[0] and "guarantee_level" in lines[0]
    assert check_file(p) == []


def test_durations_and_expressions() -> None:
    assert parse_duration_ms("90s") == 90_000
    assert parse_duration_ms("15m") == 900_000
    assert parse_duration_ms("3h") == 10_800_000
    assert parse_duration_ms("1h30m") == 5_400_000
    assert parse_duration_ms(45) == 45_000
    for bad in ("3 hours", "h3", "", "-5s", float("inf"), float("nan"), "9" * 400 + "h"):
        with pytest.raises(ValueError):
            parse_duration_ms(bad)
    params = {"warning_level": 4.0}
    assert Threshold.parse("$warning_level - 0.3").resolve(params) == 4.0 - 0.3
    assert Threshold.parse("$warning_level + 0.5").resolve(params) == 4.5
    assert Threshold.parse("$warning_level * 0.9").resolve(params) == 4.0 * 0.9
    assert Threshold.parse("12.5").resolve({}) == 12.5
    with pytest.raises(KeyError):
        Threshold.parse("$guarantee_level").resolve(params)


def test_check_file_against_registry_files(tmp_path: Path) -> None:
    regions = write(tmp_path, (
        "districts:\n  - code: '440106'\n    name: 天河区\n    streets:\n"
        "      - code: '440106001'\n        name: 街道\n        communities:\n"
        "          - {code: '440106001001', name: 社区}\n"), "regions.yaml")
    sensors = write(tmp_path, (
        "sensors:\n  - {id: RG-1, kind: rain, community: '440106001001', lat: 23.1, lon: 113.3}\n"
    ), "sensors.yaml")
    rules_file = write(tmp_path, GOOD.replace('region: "440106"', 'region: "440199"'))
    lines = check_file(rules_file, sensors_path=sensors, regions_path=regions)
    assert lines == [f"{rules_file}:3: rules.rainstorm: region 440199 is not in the region registry"]
    bad_sensors = write(tmp_path, "sensors:\n  - {id: RG-1, kind: rain}\n", "bad.yaml")
    lines = check_file(write(tmp_path, GOOD), sensors_path=bad_sensors)
    assert lines and lines[0].startswith(f"{bad_sensors}:2: ")
