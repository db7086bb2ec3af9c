"""The default rules, every profile, and two area rules, on readings shaped to be awkward: the
same level changes whatever the batching.

Each case takes 40 sample sensors and gives each a value pattern (constant, pinned at the
kind's lowest or highest valid value, alternating between them, a ramp, spikes, a random walk)
and a timing (regular, all at one instant, bursts, six-hour gaps, jitter around the interval,
repeated timestamps), then evaluates them in one batch and in 5, 50 or 500 batches.

Batches end between two instants. Readings of one instant that arrive in two batches are two
arrivals: an area rule counts the sensors it has heard from, so k of n can be reached with the
first and lost with the second, a change and its reversal at the same time, where one batch
holding both shows neither. No stream processor can know the rest of an instant is coming.

Before area rules were counted in event time (rules/engine.py, `_flush_area`), 60 of 80 cases
of rain gauges and ponding sensors gave other region changes in one batch than in many: a
batch is evaluated in rounds of every sensor's first, second ... reading, and a round paired
readings hours apart.

Left out: the neighbour drift check (`rain_drift`). It compares a gauge's mean with its
neighbours' as far as the engine has evaluated them, round by round; with these timings its
change moved by one check interval (15 min) in 4-5 of 150 cases (docs/rules.md, "Device-fault
rules").
"""

from __future__ import annotations

import itertools
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from ews.models import LevelChange, ReadingBatch
from ews.regions import RegionRegistry
from ews.sensors import KindSpec, SensorRegistry
from rules.engine import RuleEngine
from rules.loader import DEFAULTS_DIR, load_rules

REPO = Path(__file__).resolve().parent.parent
T0 = 1_764_300_000_000
H = 3_600_000
PROFILES: list[str | list[str] | None] = [None, "guangdong", "flood_season", "forecast",
                                          ["guangdong", "flood_season", "forecast"]]
Row = tuple[int, int, float]


AREA_RULES = """\
rules:
  - id: street_rainstorm
    name: 街道暴雨预警
    select: {kind: rain}
    measure: {type: accumulation, windows: {rain_3h: 3h}}
    levels: {orange: {rain_3h: 50}, red: {rain_3h: 100}}
    area: {by: street, k: 2}
  - id: community_ponding
    name: 社区积水
    select: {kind: ponding}
    measure: {type: value}
    levels: {yellow: 15, orange: 30, red: 50}
    area: {by: community, k: "50%"}
    flap: {changes: 3, within: 1h}
"""


@pytest.fixture(scope="module")
def rules_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("rules")
    for f in DEFAULTS_DIR.glob("*.yaml"):
        shutil.copy(f, d)
    (d / "area.yaml").write_text(AREA_RULES, encoding="utf-8")
    return d


@pytest.fixture(scope="module")
def sample() -> SensorRegistry:
    return SensorRegistry.load(REPO / "ews/sample/sensors.yaml", RegionRegistry.load(REPO / "ews/sample/regions.yaml"))


def _values(rng: random.Random, k: KindSpec, n: int) -> list[float]:
    lo, hi = k.min, min(k.max, 1e5)
    pattern = rng.choice(["const", "lo", "hi", "alternate", "ramp", "spikes", "walk"])
    if pattern == "const":
        return [rng.uniform(lo, hi)] * n
    if pattern in ("lo", "hi"):
        return [lo if pattern == "lo" else hi] * n
    if pattern == "alternate":
        return [lo if i % 2 else hi for i in range(n)]
    if pattern == "ramp":
        return np.linspace(lo, hi, n).tolist()
    if pattern == "spikes":
        return [hi if rng.random() < 0.1 else lo for _ in range(n)]
    v, out = (lo + hi) / 2, []
    for _ in range(n):
        v = min(hi, max(lo, v + rng.gauss(0, (hi - lo) / 10)))
        out.append(v)
    return out


def _times(rng: random.Random, n: int, interval: int) -> list[int]:
    timing = rng.choice(["regular", "same", "bursts", "gaps", "jitter", "repeats"])
    if timing == "regular":
        return [T0 + i * interval for i in range(n)]
    if timing == "same":
        return [T0] * n
    if timing == "bursts":
        return sorted(T0 + rng.randrange(3) * H + rng.randrange(1000) for _ in range(n))
    if timing == "gaps":
        return [T0 + i * interval + (i // 10) * 6 * H for i in range(n)]
    if timing == "jitter":
        return sorted(T0 + i * interval + rng.randrange(-interval, interval) for i in range(n))
    return [T0 + (i // 3) * interval for i in range(n)]


def _changes(engine: RuleEngine, rows: list[Row], cuts: list[int]) -> list[tuple[object, ...]]:
    out: list[LevelChange] = []
    for a, b in itertools.pairwise([0, *cuts, len(rows)]):
        part = rows[a:b]
        out += engine.process(ReadingBatch(np.array([r[0] for r in part], np.int64),
                                           np.array([r[1] for r in part], np.int64),
                                           np.array([r[2] for r in part], np.float64)),
                              now_ms=max(r[1] for r in part))
    out += engine.check_nodata(max(r[1] for r in rows) + 12 * H)
    return sorted((c.event_ts_ms, c.rule_id, c.subject, int(c.before), int(c.after), c.measure, c.value)
                  for c in out)


@pytest.mark.parametrize("seed", range(16))
def test_awkward_readings_give_the_same_changes_whatever_the_batching(
        sample: SensorRegistry, rules_dir: Path, seed: int) -> None:
    rng = random.Random(seed)
    rows: list[Row] = []
    # every other case only rain gauges and ponding sensors: several per street and community,
    # so the area rules have regions to count
    pool = [i for i, x in enumerate(sample.sensors) if seed % 2 or x.kind in ("rain", "ponding")]
    for i in rng.sample(pool, 40):
        kind = sample.kinds[sample.sensors[i].kind]
        n = rng.randint(1, 200)
        rows += zip([i] * n, _times(rng, n, int(kind.interval_s * 1000)), _values(rng, kind, n), strict=True)
    rows.sort(key=lambda r: r[1])  # in time order across sensors, ties in any order
    ruleset = load_rules(rules_dir, rng.choice(PROFILES))
    ruleset.faults = [f for f in ruleset.faults if f.detector != "drift"]
    whole = _changes(RuleEngine(ruleset, sample), rows, [])
    # batches end between two instants: readings of one instant split over two batches are
    # two arrivals, and an area rule can only count what has arrived (see the docstring)
    bounds = [i for i in range(1, len(rows)) if rows[i][1] != rows[i - 1][1]]
    cuts = sorted(rng.sample(bounds, min(len(bounds), rng.choice([5, 50, 500]))))
    assert _changes(RuleEngine(ruleset, sample), rows, cuts) == whole
    assert whole  # the patterns reach levels and faults, so the comparison says something
