"""The extended rule language: fault rules, trends, forecasts, areas, flapping, profiles, and
`ews rules explain`; every mistake named with its file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ews.cli import main
from ews.levels import Level
from ews.yamlfile import ConfigError
from rules.check import check_file
from rules.loader import load_rules

FULL = """\
version: lang-1
rules:
  - id: river
    select: {kind: water_level}
    measure:
      type: value
      trends: {rise_1h: 1h}
      forecasts: {in_1h: {of: value, horizon: 1h, fit: 30m}}
    params: {rise_limit: 0.3}
    levels:
      blue: {rise_1h: "$rise_limit", in_1h: "$warning_level"}
      yellow: {value: "$warning_level"}
    area: {by: street, k: "50%"}
    flap: {changes: 3, within: 45m}
faults:
  - id: nd
    detector: no_data
    select: {kind: "*"}
    after: 20m
  - id: sp
    detector: spike
    select: {kind: water_level}
    max_jump: "$jump"
    params: {jump: 0.8}
    confirm: 2
    level: yellow
"""


def write(tmp_path: Path, text: str, name: str = "r.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_full_language_compiles(tmp_path: Path) -> None:
    rs = load_rules(write(tmp_path, FULL))
    river = rs.get("river")
    assert river.trends_ms == {"rise_1h": 3_600_000}
    assert river.forecasts["in_1h"].fit_ms == 1_800_000 and river.forecasts["in_1h"].of == "value"
    assert river.measures == ["value", "rise_1h", "in_1h"]
    assert river.area_by == "street" and river.area_k == (0, 0.5)
    assert (river.flap_changes, river.flap_within_ms) == (3, 2_700_000)
    assert river.param_defaults == {"rise_limit": 0.3}
    nd, sp = rs.fault("nd"), rs.fault("sp")
    assert (nd.detector, nd.after_ms, nd.after_factor, nd.level) == ("no_data", 1_200_000, 0.0, Level.BLUE)
    assert (sp.confirm, sp.level, str(sp.params["max_jump"])) == (2, Level.YELLOW, "$jump")
    assert rs.version == "lang-1"


@pytest.mark.parametrize(
    ("old", "new", "line", "field", "reason"),
    [
        ("    confirm: 2\n", "    confirm: 2\n    after: 3x\n", 26, "after", "does not apply to detector spike"),
        ('    max_jump: "$jump"\n', "", 21, "detector", "needs `max_jump`"),
        ("detector: no_data", "detector: deadman", 17, "detector", "Input should be"),
        ("level: yellow", "level: pink", 26, "level", "unknown level"),
        ("of: value, horizon: 1h", "of: rain_3h, horizon: 1h", 8, "of", "cannot forecast"),
        ("k: \"50%\"", "k: \"half\"", 13, "k", "cannot read k"),
        ("after: 20m", "after: soon", 19, "after", "cannot read duration"),
        ("kind: water_level}\n    measure", "kind: \"*\"}\n    measure", 4, "kind", "'*' is for fault rules"),
    ],
)
def test_mistakes_name_file_line_and_field(tmp_path: Path, old: str, new: str, line: int, field: str,
                                          reason: str) -> None:
    assert FULL.count(old) == 1
    p = write(tmp_path, FULL.replace(old, new))
    with pytest.raises(ConfigError) as err:
        load_rules(p)
    found = [(pr.line, pr.field, pr.reason) for pr in err.value.problems]
    assert any(ln == line and field in f and reason in r for ln, f, r in found), found
    assert any(s.startswith(f"{p}:{line}: ") for s in check_file(p))


def test_fault_and_rule_ids_share_one_space(tmp_path: Path) -> None:
    p = write(tmp_path, FULL.replace("id: sp", "id: river"))
    with pytest.raises(ConfigError, match="already defined"):
        load_rules(p)


def test_profiles_apply_in_order(tmp_path: Path) -> None:
    d = tmp_path / "set"
    d.mkdir()
    write(d, "rules:\n  - id: g\n    select: {kind: gas}\n    levels: {orange: 25}\n", "base.yaml")
    write(d, "profile: a\nrules:\n  - id: g\n    select: {kind: gas}\n    levels: {orange: 20}\n", "a.yaml")
    write(d, "profile: b\nrules:\n  - id: g\n    select: {kind: gas}\n    levels: {orange: 15}\n", "b.yaml")
    th = {tuple(p): load_rules(d, p).get("g").conditions["value"][Level.ORANGE].const
          for p in ([], ["a"], ["b"], ["a", "b"], ["b", "a"])}
    assert th == {(): 25.0, ("a",): 20.0, ("b",): 15.0, ("a", "b"): 15.0, ("b", "a"): 20.0}


def test_rules_explain_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "explain", "WL-0001", "--profile", "flood_season"]) == 0
    text = capsys.readouterr().out
    # the sample station: 警戒水位 9.4 m; in the flood season blue comes 0.5 m below it
    assert "blue >= 8.9 ($warning_level - 0.5)" in text and "profile flood_season" in text
    assert "rise_1h: blue >= 0.3 ($rise_limit)" in text
    assert "no_data" in text and "silent after 900 s" in text
    assert main(["rules", "explain", "RG-0001", "--json"]) == 0
    items = json.loads(capsys.readouterr().out)
    rain = next(i for i in items if i.get("rule") == "rainstorm")
    assert rain["thresholds"] == {"rain_3h": {"orange": 50.0, "red": 100.0}, "rain_6h": {"yellow": 50.0},
                                  "rain_12h": {"blue": 50.0}}
    assert {i["rule"] for i in items if "detector" in i} >= {"no_data", "rain_range", "rain_drift"}
    assert main(["rules", "explain", "NOPE-1"]) == 2
