"""Scenario files: the shipped ones, their `expect:` sections, and errors with file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from ews.cli import main
from ews.config import sample_dir
from ews.regions import RegionRegistry
from ews.sensors import SensorRegistry
from ews.yamlfile import ConfigError
from rules.loader import load_rules
from simulators.compose import run
from simulators.dryrun import unmet, warnings_of
from simulators.scenario import Expectation, load_scenario, shipped

START_MS = 1_590_076_800_000
SAMPLE_CONFIG = sample_dir() / "config.yaml"


@pytest.fixture(scope="module")
def sample() -> SensorRegistry:
    regions = RegionRegistry.load(sample_dir() / "regions.yaml")
    return SensorRegistry.load(sample_dir() / "sensors.yaml", regions)


def test_the_promised_scenarios_ship() -> None:
    names = {p.stem for p in shipped()}
    assert {"rainstorm", "typhoon", "river_flood", "gas_leak", "fire", "faulty_network"} <= names


@pytest.mark.parametrize("path", shipped(), ids=lambda p: p.stem)
def test_shipped_scenario_meets_its_expectations_under_the_rules(path: Path, sample: SensorRegistry) -> None:
    sc = load_scenario(path, sample)
    assert sc.expect, "every shipped scenario says what it should raise"
    sim = run(sc, sample, START_MS)
    warnings = warnings_of(sim.stream, sample, load_rules(None, "guangdong"))  # the sample district's profile
    assert unmet(sc, warnings, sample) == []
    raising = [e for e in sc.expect if e.min_level is not None]
    if raising:
        assert warnings  # an expectation that something is raised, and it was


def test_expectations_judge_warnings(sample: SensorRegistry) -> None:
    ws = [
        {"rule": "rainstorm", "subject": "RG-0001", "community": "440106001004", "peak_level": 4},
        {"rule": "rainstorm", "subject": "RG-0002", "community": "440106002002", "peak_level": 2},
        {"rule": "gas", "subject": "GS-0002", "community": "440106002001", "peak_level": 3},
    ]

    def check(**kw: object) -> str | None:
        return Expectation.model_validate(kw).unmet(ws, sample)

    assert check(rule="rainstorm", region="440106001", min_level="red") is None
    assert check(rule="rainstorm", min_level="yellow", min_subjects=2) is None
    assert "1 subject(s)" in (check(rule="rainstorm", min_level="orange", min_subjects=2) or "")
    assert check(rule="rainstorm", region="440106002", max_level="yellow") is None
    assert "RG-0002=yellow" in (check(rule="*", region="440106002", max_level="blue") or "")
    assert check(rule="smoke", max_level="none") is None
    assert "GS-0002=orange" in (check(sensor="GS-0002", max_level="none") or "")
    with pytest.raises(ValueError, match="min_level"):
        Expectation.model_validate({"rule": "gas"})


def test_errors_name_file_line_and_field(tmp_path: Path, sample: SensorRegistry) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: broken\n"
        "duration: 2h\n"
        "tick: 90s\n"  # line 3: not whole minutes
        "models:\n"
        "  - type: meteor\n"  # line 5: no such model
    )
    with pytest.raises(ConfigError) as info:
        load_scenario(bad)
    text = str(info.value)
    assert f"{bad}" in text and ("tick" in text or "meteor" in text)

    bad.write_text(
        "name: typo\n"
        "duration: 2h\n"
        "models:\n"
        "  - type: gas_leak\n"
        "    at: {sensor: GS-0025}\n"
        "    peak_lell: 50\n"  # line 6: misspelt
    )
    with pytest.raises(ConfigError) as info:
        load_scenario(bad)
    assert f"{bad}:6: models[0].peak_lell: unknown field" in str(info.value)

    bad.write_text(
        "name: names\n"
        "duration: 2h\n"
        "models:\n"
        "  - type: fire\n"
        "    at: {sensor: GS-0025}\n"  # line 5: a gas sensor cannot be the fire's alarm
        "faults:\n"
        "  - {type: stuck, sensors: [RG-9999]}\n"  # line 7: not registered
        "  - {type: gateway_silent, street: '440106077'}\n"  # line 8: no such street
        "expect:\n"
        "  - {rule: gas, sensor: GS-0025, min_level: purple}\n"  # line 10
    )
    with pytest.raises(ConfigError) as info:
        load_scenario(bad, sample)
    assert f"{bad}:10: expect[0].min_level" in str(info.value)
    bad.write_text(bad.read_text().replace("purple", "red"))
    with pytest.raises(ConfigError) as info:
        load_scenario(bad, sample)
    lines = str(info.value).splitlines()
    assert any(f"{bad}:5:" in x and "not smoke" in x for x in lines)
    assert any(f"{bad}:7:" in x and "RG-9999" in x for x in lines)
    assert any(f"{bad}:8:" in x and "440106077" in x for x in lines)


@pytest.mark.parametrize(("text", "line", "field", "reason"), [
    ("name: long\nduration: 999999h\n", 2, "duration", "at most 31d"),  # no 218 PiB of ticks
    ("name: seed\nduration: 2h\nseed: -1\n", 3, "seed", "greater than or equal to 0"),
    ("name: t\nduration: 2h\nmodels:\n  - type: {a: 1}\n", 4, "models[0].type", "type must be one of"),
])
def test_values_no_simulation_can_take_are_refused_at_their_line(
        tmp_path: Path, text: str, line: int, field: str, reason: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_scenario(bad)
    assert any(str(p).startswith(f"{bad}:{line}: {field}:") and reason in str(p) for p in info.value.problems), \
        info.value.problems


def test_unknown_scenario_name_lists_the_shipped_ones() -> None:
    with pytest.raises(ConfigError, match="typhoon"):
        load_scenario("monsoon")


def test_simulate_dry_run_checks_expectations(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "gas_leak", "--config", str(SAMPLE_CONFIG), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "expectations met" in out and "gas" in out
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text((shipped()[0].parent / "gas_leak.yaml").read_text(encoding="utf-8").replace(
        "{rule: gas, sensor: GS-0004, min_level: orange}", "{rule: gas, sensor: GS-0004, min_level: red}"),
        encoding="utf-8")
    assert main(["simulate", str(wrong), "--config", str(SAMPLE_CONFIG), "--dry-run"]) == 1
    assert "GS-0004" in capsys.readouterr().out
