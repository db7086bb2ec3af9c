"""The scenario models beyond the storm, loosely but for real: typhoon rain, a river flood
wave, a gas leak spreading outward, smoke tripping alarms in sequence, and a quiet day.

Expected values come from the physics written out here (distances, steady states, rule
thresholds), not from the simulator's own functions.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from ews.config import sample_dir
from ews.models import ReadingBatch
from ews.regions import RegionRegistry
from ews.sensors import Sensor, SensorRegistry
from rules.engine import RuleEngine
from rules.loader import load_rules
from simulators.compose import run
from simulators.scenario import Scenario

START_MS = 1_590_076_800_000  # 2020-05-22 00:00 Beijing time
COMM, OTHER = "440106002001", "440106002002"


@pytest.fixture(scope="module")
def sample() -> SensorRegistry:
    regions = RegionRegistry.load(sample_dir() / "regions.yaml")
    return SensorRegistry.load(sample_dir() / "sensors.yaml", regions)


def scenario(**kw: object) -> Scenario:
    return Scenario.model_validate({"name": "t", **kw})


def offset(lat: float, lon: float, east_m: float, north_m: float = 0.0) -> tuple[float, float]:
    return lat + north_m / 111_320, lon + east_m / (111_320 * math.cos(math.radians(lat)))


def first_tick(series: np.ndarray, at_least: float) -> int | None:
    hit = np.flatnonzero(series >= at_least)
    return int(hit[0]) if hit.size else None


# --- gas ---------------------------------------------------------------------------------

GAS_DISTANCES = [0.0, 60.0, 150.0, 300.0, 600.0, 3000.0]


@pytest.fixture(scope="module")
def gas_line() -> SensorRegistry:
    sensors = []
    for k, d in enumerate(GAS_DISTANCES):
        lat, lon = offset(23.15, 113.37, d)
        sensors.append(Sensor(id=f"GS-{k}", kind="gas", community=COMM, lat=lat, lon=lon))
    return SensorRegistry(sensors)


def test_gas_spreads_outward_in_time_and_settles_as_exp_decay(gas_line: SensorRegistry) -> None:
    sc = scenario(duration="4h", tick="1m", seed=3, background={"gas_noise": 0.0},
                  models=[{"type": "gas_leak", "at": {"sensor": "GS-0"}, "start": "30m", "ramp": "10m",
                           "peak_lel": 80, "reach_m": 200, "settle": "10m"}])
    res = run(sc, gas_line, START_MS).result
    base = res.values[0]  # before the leak: the site baselines
    added = res.values - base[None, :]
    arrival = [first_tick(added[:, k], 2.0) for k in range(len(GAS_DISTANCES))]
    near = [a for a in arrival if a is not None]
    assert arrival[0] is not None and arrival[0] >= 30  # nothing before the leak opens
    assert near == sorted(near) and near[-1] > near[1] > near[0] - 1  # farther sensors notice later
    assert arrival[-1] is None  # 3 km away: nothing
    settled = added[-1]
    for k, d in enumerate(GAS_DISTANCES[:-1]):
        steady = 80 * math.exp(-d / 200)  # C0 e^(-x/L), the steady state of the 1-D model
        assert settled[k] == pytest.approx(steady, abs=0.6), d
    peaks = added.max(axis=0)
    assert all(a > b for a, b in itertools.pairwise(peaks[:-1]))


def test_gas_leak_shut_off_clears(gas_line: SensorRegistry) -> None:
    sc = scenario(duration="3h", tick="1m", background={"gas_noise": 0.0},
                  models=[{"type": "gas_leak", "at": {"sensor": "GS-0"}, "start": "10m", "ramp": "5m",
                           "duration": "40m", "peak_lel": 60, "reach_m": 200, "settle": "10m"}])
    res = run(sc, gas_line, START_MS).result
    added = res.values - res.values[0][None, :]
    assert added[:, 0].max() > 50
    assert added[-1, :].max() < 1.0  # two hours after the valve shut, the gas has gone


# --- fire --------------------------------------------------------------------------------

ALARM_DISTANCES = [0.0, 8.0, 18.0, 30.0, 45.0, 70.0, 400.0]


@pytest.fixture(scope="module")
def building() -> SensorRegistry:
    sensors = []
    for k, d in enumerate(ALARM_DISTANCES):
        lat, lon = offset(23.16, 113.36, d)
        sensors.append(Sensor(id=f"SM-{k}", kind="smoke", community=COMM, lat=lat, lon=lon))
    lat, lon = offset(23.16, 113.36, 0.0, 12.0)  # next door, but another community
    sensors.append(Sensor(id="SM-X", kind="smoke", community=OTHER, lat=lat, lon=lon))
    return SensorRegistry(sensors)


def test_smoke_alarms_trip_in_sequence_then_clear(building: SensorRegistry) -> None:
    sc = scenario(duration="3h", tick="1m", seed=9,
                  models=[{"type": "fire", "at": {"sensor": "SM-0"}, "start": "10m", "growth": "medium",
                           "burn": "30m", "decay": "5m", "smoke_reach_m": 20}])
    res = run(sc, building, START_MS).result
    trips = [first_tick(res.values[:, k], 1.0) for k in range(len(ALARM_DISTANCES) + 1)]
    assert trips[0] is not None and trips[0] >= 10  # not before ignition
    tripped = [t for t in trips[:-2] if t is not None]
    # the near alarms trip one after the other, outward from the room of origin
    assert len(tripped) >= 4 and tripped == sorted(tripped) and tripped[-1] > tripped[0]
    assert trips[-2] is None  # 400 m away: out of the smoke's reach
    assert trips[-1] is None  # another community: smoke stays in its building
    assert res.values[-1].max() == 0.0  # the fire is out and the smoke has cleared
    flags = set(np.unique(res.values).tolist())
    assert flags <= {0.0, 1.0}


# --- river flood -------------------------------------------------------------------------

def test_flood_wave_travels_down_the_river(sample: SensorRegistry) -> None:
    sc = scenario(duration="8h", tick="5m", seed=4,
                  models=[{"type": "river_flood", "rivers": ["车陂涌"], "peak_after": "3h", "rise": "2h",
                           "peak_param": "guarantee_level", "margin_m": 0.2, "celerity_kmh": 3}])
    res = run(sc, sample, START_MS).result
    chain = ["WL-0010", "WL-0011", "WL-0012", "WL-0013", "WL-0014"]  # north (upstream) to south
    peaks = [int(np.argmax(res.series(s))) for s in chain]
    assert peaks == sorted(peaks) and peaks[-1] > peaks[0]  # the wave arrives later downstream
    top = sample.get("WL-0010").params
    assert res.series("WL-0010").max() == pytest.approx(top["guarantee_level"] + 0.2, abs=0.35)
    # stations on other creeks only feel the tide
    other = res.series("WL-0001")
    assert other.max() - sample.get("WL-0001").params["base_level"] < 0.5


# --- typhoon -----------------------------------------------------------------------------

def test_typhoon_rain_is_long_widespread_and_banded(sample: SensorRegistry) -> None:
    sc = scenario(duration="18h", tick="5m", seed=2, models=[{"type": "typhoon"}])
    res = run(sc, sample, START_MS).result
    gauges = sample.of_kind("rain")
    totals = np.array([res.series(g.id).sum() for g in gauges])
    assert totals.min() > 60 and totals.max() < 400  # a wet day everywhere, not a flood of the century
    bursty = 0
    for g in gauges:
        hourly = res.series(g.id).reshape(-1, 12).sum(axis=1)
        bursty += hourly.max() > 2.5 * hourly[hourly > 0].mean()
    assert bursty > len(gauges) // 2  # bands and cells: rain comes in bursts
    # the typhoon comes from the south-east: with its rain shield alone (no bands, no cells), the
    # rain's centre of mass in time passes the south-eastern gauges before the north-western ones
    shield = sc.models[0].model_copy(update={"cells_per_hour": 0.0, "arms": 0})
    calm = run(sc.model_copy(update={"models": [shield]}), sample, START_MS).result
    se = sorted(gauges, key=lambda g: g.lat - g.lon)[:5]
    nw = sorted(gauges, key=lambda g: g.lat - g.lon)[-5:]

    def centre(g: Sensor) -> float:
        r = calm.series(g.id)
        return float((r * np.arange(r.size)).sum() / r.sum())

    assert max(centre(g) for g in se) < min(centre(g) for g in nw)


# --- quiet day ---------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [1, 7])
def test_quiet_day_stays_below_every_default_threshold(sample: SensorRegistry, seed: int) -> None:
    sc = scenario(duration="24h", tick="5m", seed=seed, health=True, background={"drizzle_mm_h": 0.3})
    res = run(sc, sample, START_MS).result
    for s in sample.sensors:
        col = res.series(s.id)
        if s.kind == "water_level":
            assert col.max() < s.params["warning_level"] - 0.3, s.id  # below blue
        elif s.kind == "gas":
            assert col.max() < 25, s.id
        elif s.kind == "ponding":
            assert col.max() < 15, s.id
        elif s.kind == "smoke":
            assert col.max() == 0, s.id
        elif s.kind == "rain":
            assert np.convolve(col, np.ones(12 * 12))[: col.size].max() < 50, s.id  # 12 h < 50 mm
    batch = ReadingBatch(np.tile(np.arange(len(sample)), res.n_ticks), np.repeat(res.tick_ts, len(sample)),
                         res.values.reshape(-1))
    for profile in (None, "guangdong"):
        assert RuleEngine(load_rules(None, profile), sample).process(batch) == []


def test_quiet_day_has_daily_rhythms(sample: SensorRegistry) -> None:
    sc = scenario(duration="24h", tick="5m", seed=5)
    res = run(sc, sample, START_MS).result
    hours = ((res.tick_ts // 1000 + 8 * 3600) % 86400) / 3600
    kitchens = [s.id for s in sample.of_kind("gas") if s.tags.get("site") == "餐饮"]
    lunch = (hours >= 11) & (hours < 12.5)
    night = (hours >= 2) & (hours < 4)
    gas = np.column_stack([res.series(i) for i in kitchens])
    assert gas[lunch].mean() > gas[night].mean() + 0.5
    # the tide is felt at the creek's outlet more than at its upper reaches
    outlet, upper = res.series("WL-0014"), res.series("WL-0010")
    assert np.ptp(outlet) > 0.3 and np.ptp(outlet) > 2 * np.ptp(upper)
    # mostly semidiurnal: over a day, the strongest cycle at the outlet is the one of ~12 h
    spectrum = np.abs(np.fft.rfft(outlet - outlet.mean()))
    assert int(np.argmax(spectrum[1:])) + 1 == 2


# --- seeds -------------------------------------------------------------------------------

def test_scenarios_are_reproducible(sample: SensorRegistry) -> None:
    sc = scenario(duration="3h", tick="5m", seed=11, models=[{"type": "rainstorm"}, {"type": "gas_leak",
                  "at": {"sensor": "GS-0025"}, "start": "30m"}])
    a, b = run(sc, sample, START_MS), run(sc, sample, START_MS)
    other = run(sc.model_copy(update={"seed": 12}), sample, START_MS)
    assert np.array_equal(a.stream.value, b.stream.value) and np.array_equal(a.stream.ts, b.stream.ts)
    assert not np.array_equal(a.stream.value, other.stream.value)
    # the seed draws the noise, not the event: where the storm rains is the same
    rain = [s.id for s in sample.of_kind("rain")]
    totals = [[run_.result.series(i).sum() for i in rain] for run_ in (a, other)]
    assert np.corrcoef(totals)[0, 1] > 0.95
