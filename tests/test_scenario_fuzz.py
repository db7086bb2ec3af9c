"""Mutated scenario files: each is refused with problems naming the file and line (or, for
parameters that clash only together, the scenario and its models), or it simulates.

The shipped scenarios are changed as the rule files are (tests/test_rules_fuzz.py). Before
this test, a model `type` that was a mapping raised a TypeError out of the loader; the same
search found a `duration` of 2**63 asking numpy for 218 PiB of ticks and a `seed` of -1
failing inside numpy (tests/test_scenario_files.py holds both). What loads is simulated when
it is a few days of ticks or less. Seeds are fixed so a failure reproduces.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
import yaml

from ews.regions import RegionRegistry
from ews.sensors import SensorRegistry
from ews.yamlfile import ConfigError
from simulators.compose import simulate, start_of
from simulators.scenario import load_scenario, shipped

from .mutation import mutated_files

REPO = Path(__file__).resolve().parent.parent
EDGES = [
    0, -1, 1, 0.5, 1e300, float("nan"), float("inf"), -1e300, "", "x", "440106", "440106001", "WL-0007", "RG-0001",
    "rain", "gas", None, True, False, [], {}, [1], {"a": 1}, "1s", "0s", "999999h", "1ms", "-5m", "1h", 10**9,
    {"lat": 0, "lon": 0}, {"lat": 91, "lon": 181}, {"lat": 23.1, "lon": 113.3}, "red", "none", 2**63,
]
KEYS = ["extra", "duration", "tick", "speed", "seed", "from", "to", "at", "start", "sensor", "sensors", "region",
        "type"]
AT_LINE = re.compile(r"^\S+\.yaml:(\d+: | \(top level\): )")
CLASH = re.compile(r"^scenario '.*': models: ")
MAX_SIMULATED = 2_000_000  # sensor-ticks: the suite simulates what it loads up to a few days


@pytest.fixture(scope="module")
def sample() -> SensorRegistry:
    return SensorRegistry.load(REPO / "ews/sample/sensors.yaml", RegionRegistry.load(REPO / "ews/sample/regions.yaml"))


@pytest.mark.parametrize("seed", [1, 6, 7])  # each reached the TypeError named above
def test_every_mutated_scenario_is_refused_clearly_or_simulates(
        tmp_path: Path, sample: SensorRegistry, seed: int) -> None:
    rng = random.Random(seed)
    files = {p.name: yaml.safe_load(p.read_text(encoding="utf-8")) for p in shipped()}
    refused = simulated = 0
    for n, name, doc in mutated_files(rng, files, EDGES, KEYS, 300):
        path = tmp_path / f"{n}-{name}"
        path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
        try:
            sc = load_scenario(path, sample)
            if sc.n_ticks * len(sample) <= MAX_SIMULATED:
                simulate(sc, sample, start_of(sc, 1_764_300_000_000))
                simulated += 1
        except ConfigError as exc:
            refused += 1
            assert all(AT_LINE.match(str(p)) or CLASH.match(str(p)) for p in exc.problems), exc.problems
    assert refused > 50 and simulated > 5, (refused, simulated)
