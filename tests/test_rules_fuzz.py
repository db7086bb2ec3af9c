"""Mutated rule files: each is either refused with problems that name the file and line, or
loaded into an engine that evaluates readings without raising.

The packaged rule files are changed in structure (a value swapped for one of another type or
an edge magnitude: `.inf`, `999999h`, a negative, a list; a field dropped or added; a rule
repeated) and written back. An operator's typo must never reach the engine as something it
cannot build (a window of thousands of hours asked for gigabytes of slots; a hold of 1e300
seconds overflowed its int64) nor surface as a traceback from `ews rules check`. Seeds are
fixed so a failure reproduces.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from ews.models import ReadingBatch
from ews.regions import RegionRegistry
from ews.sensors import SensorRegistry
from rules.check import check_file
from rules.engine import RuleEngine
from rules.loader import DEFAULTS_DIR, load_rules

from .mutation import mutated_files

REPO = Path(__file__).resolve().parent.parent
T0 = 1_764_300_000_000
H = 3_600_000
EDGES = [
    0, -1, 1, 0.5, 1e9, -1e9, 1e300, float("nan"), float("inf"), "", "1h", "0s", "-5m", "10x", "999999h", "1ms",
    "32d", "31d", "0.5x", "99999999999x", "9" * 400 + "h", "$warning_level", "$nope", "$warning_level * 2", "1/0",
    "value", None, True, [], {}, [1, 2], {"a": 1}, "blue", "red", "purple", "gas", "rain", "440106", "440106001",
    "x" * 100, 3, 100, 10**6,
]
KEYS = ["extra", "window", "hold", "hold_exit", "levels", "select", "hysteresis", "flap", "after", "tau"]
PROBLEM = re.compile(r"^\S+\.yaml:(\d+: | \(top level\): )")  # file:line: field: reason


@pytest.fixture(scope="module")
def sample() -> SensorRegistry:
    return SensorRegistry.load(REPO / "ews/sample/sensors.yaml", RegionRegistry.load(REPO / "ews/sample/regions.yaml"))


def _readings(sensors: SensorRegistry, rng: random.Random, n: int = 2000) -> ReadingBatch:
    """Readings of every kind over six hours, skewed low with some at the top of the range."""
    idx = np.array([rng.randrange(len(sensors)) for _ in range(n)], np.int64)
    ts = np.sort(np.array([T0 + rng.randrange(6 * H) for _ in range(n)], np.int64))
    lo = np.array([sensors.kinds[s.kind].min for s in sensors.sensors])
    hi = np.array([min(sensors.kinds[s.kind].max, 1e4) for s in sensors.sensors])
    value = lo[idx] + (hi[idx] - lo[idx]) * np.array([rng.random() ** 3 for _ in range(n)])
    return ReadingBatch(idx, ts, value, False)


@pytest.mark.parametrize("seed", [1, 5, 6, 7])  # each reached an overflow before durations were bounded
def test_every_mutated_rule_file_is_refused_clearly_or_runs(tmp_path: Path, sample: SensorRegistry, seed: int) -> None:
    rng = random.Random(seed)
    files = {p.name: yaml.safe_load(p.read_text(encoding="utf-8")) for p in sorted(DEFAULTS_DIR.glob("*.yaml"))}
    batch = _readings(sample, rng)
    refused = ran = 0
    for n, name, doc in mutated_files(rng, files, EDGES, KEYS, 300):
        folder = tmp_path / str(n)
        folder.mkdir()
        (folder / name).write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
        problems = check_file(folder, sample)
        if problems:
            refused += 1
            assert all(PROBLEM.match(p) for p in problems), problems
            continue
        engine = RuleEngine(load_rules(folder), sample)  # what check passed must load and build
        for a in range(0, len(batch.sensor), 500):
            part = slice(a, a + 500)
            engine.process(ReadingBatch(batch.sensor[part], batch.ts_ms[part], batch.value[part], False),
                           now_ms=int(batch.ts_ms[part][-1]))
        engine.check_nodata(T0 + 7 * H)
        ran += 1
    assert refused > 30 and ran > 15, (refused, ran)  # both outcomes were exercised
