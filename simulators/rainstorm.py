"""A rainstorm crossing a district: rain at gauges, river stage, road ponding, quiet background.

A storm moves in a straight line at constant speed. Its along-track rain profile is that of a
squall line: a sharp convective leading edge and a long trailing region, so a point beneath it
records a Chicago hyetograph (from the Guangzhou storm-intensity formula) whose peak comes when
the storm's core passes. Across the track the rain falls off as a Gaussian; along the track
the storm grows from the start of its path, is mature in the middle and decays towards the end.
Rivers respond through a linear reservoir to the rain over a small catchment around each
station; road low points fill with what the drains cannot take and empty at the drainage
capacity afterwards. Everything is numpy on a one-minute grid, sampled every reporting tick.
The storm's shape is fixed by its parameters and each site's character (drain capacity, gauge
calibration, gas baseline) by its sensor id, so the same weak spots flood in every drill; the
seed only draws the reading noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ews.models import ReadingBatch
from ews.sensors import SensorRegistry
from simulators import hydrology as hyd
from simulators.hyetograph import GUANGZHOU_2011, StormFormula, chicago_cumulative
from simulators.sites import KM_PER_DEG_LAT, Sites, km_per_deg_lon, site_uniform

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_STEP_S = hyd.STEP_S


@dataclass(frozen=True, slots=True)
class StormParams:
    """Defaults: a 100-year, 6-hour storm crossing 天河区 from south-west to north-east.

    `duration_h` is the simulated event time. Left unset, the burst at a point takes half of
    it, the recession after the last rain a sixth, and the storm crosses its path in the rest;
    any of the three can be set instead.
    """

    duration_h: float = 6.0
    start: tuple[float, float] = (23.095, 113.280)  # (lat, lon) where the storm forms
    end: tuple[float, float] = (23.205, 113.460)  # (lat, lon) where it has died out
    speed_kmh: float | None = None
    burst_hours: float | None = None  # how long rain lasts at a point the storm passes over
    after_hours: float | None = None  # after the last rain, for rivers and roads to recede
    radius_km: float = 2.6  # cross-track standard deviation of the rain footprint
    peak_ratio: float = 0.4  # where in the burst the peak comes (Guangzhou storms: about 0.4)
    return_period_years: float = 100.0
    formula: StormFormula = GUANGZHOU_2011
    tick_s: int = 300
    gauge_noise: float = 0.12  # lognormal sigma of a single gauge reading
    gauge_resolution_mm: float = 0.1  # tipping-bucket resolution
    catchment_km: float = 1.5  # Gaussian radius of the area draining to a river station
    reservoir_hours: float = 1.5  # linear-reservoir time constant K
    stage_m_per_mm: float = 0.032  # stage rise per mm of catchment storage
    stage_noise_m: float = 0.005
    drainage_mm_h: tuple[float, float] = (25.0, 50.0)  # drain capacity range of road low points
    concentration: tuple[float, float] = (3.0, 7.0)  # runoff area / ponding area range
    ponding_noise_cm: float = 0.2
    gas_background: tuple[float, float] = (0.2, 1.5)  # %LEL baseline range
    gas_noise: float = 0.3

    def __post_init__(self) -> None:
        problems = []
        if not self.duration_h > 0:
            problems.append("duration_h must be positive")
        if self.speed_kmh is not None and not self.speed_kmh > 0:
            problems.append("speed_kmh must be positive")
        if self.burst_hours is not None and not self.burst_hours > 0:
            problems.append("burst_hours must be positive")
        if self.after_hours is not None and self.after_hours < 0:
            problems.append("after_hours must not be negative")
        if self.path_km() <= 0:
            problems.append("start and end must differ")
        elif self.speed_kmh is None and not self.crossing_h() > 0:
            problems.append(
                "duration_h leaves no time to cross the path after burst_hours and after_hours"
            )
        if self.radius_km <= 0 or self.catchment_km < 0:
            problems.append("radius_km must be positive and catchment_km not negative")
        if self.tick_s <= 0 or self.tick_s % _STEP_S:
            problems.append(f"tick_s must be a positive multiple of {_STEP_S}")
        if self.reservoir_hours <= 0:
            problems.append("reservoir_hours must be positive")
        if not 0 < self.peak_ratio < 1:
            problems.append("peak_ratio must lie strictly between 0 and 1")
        if self.return_period_years < 1:
            problems.append("return_period_years must be at least 1")
        if problems:
            raise ValueError("invalid storm parameters: " + "; ".join(problems))

    def burst_h(self) -> float:
        return self.duration_h / 2 if self.burst_hours is None else self.burst_hours

    def after_h(self) -> float:
        return self.duration_h / 6 if self.after_hours is None else self.after_hours

    def crossing_h(self) -> float:
        if self.speed_kmh is not None:
            return self.path_km() / self.speed_kmh
        return self.duration_h - self.burst_h() - self.after_h()

    def speed(self) -> float:
        """km/h."""
        return self.path_km() / self.crossing_h()

    def km_per_deg_lon(self) -> float:
        return km_per_deg_lon(self.start[0])

    def path_km(self) -> float:
        dx = (self.end[1] - self.start[1]) * self.km_per_deg_lon()
        dy = (self.end[0] - self.start[0]) * KM_PER_DEG_LAT
        return math.hypot(dx, dy)

    def duration_s(self) -> int:
        """Simulated event time in whole ticks, never longer than asked (but at least one tick),
        so a storm placed to end now has no reading in the future."""
        return max(1, math.floor(self.duration_h * 3600 / self.tick_s + 1e-9)) * self.tick_s


@dataclass(frozen=True, slots=True)
class SimResult:
    """Every sensor reports once per tick; `values[k, i]` is sensor i's reading at `tick_ts[k]`.

    A tick's timestamp is the end of its interval, so a rain value is the rain that fell in the
    `tick_ms` before it.
    """

    sensors: SensorRegistry
    start_ms: int
    tick_ms: int
    tick_ts: IntArray  # (n_ticks,)
    values: FloatArray  # (n_ticks, n_sensors)
    cell: FloatArray  # (n_ticks, 2) where the storm's core is (lat, lon) at each tick

    @property
    def n_ticks(self) -> int:
        return int(self.tick_ts.shape[0])

    @property
    def end_ms(self) -> int:
        return int(self.tick_ts[-1]) if self.n_ticks else self.start_ms

    def series(self, sensor_id: str) -> FloatArray:
        out: FloatArray = self.values[:, self.sensors.index[sensor_id]]
        return out

    def tick(self, k: int) -> ReadingBatch:
        n = len(self.sensors)
        return ReadingBatch(
            np.arange(n, dtype=np.int64), np.full(n, self.tick_ts[k], np.int64), self.values[k].copy()
        )

    def flat(self) -> ReadingBatch:
        """All readings sorted by time, then sensor index."""
        n_t, n_s = self.values.shape
        return ReadingBatch(
            np.tile(np.arange(n_s, dtype=np.int64), n_t),
            np.repeat(self.tick_ts, n_s),
            self.values.reshape(-1).copy(),
        )


class StormCell:
    """The storm's rain at any point: mm per one-minute step, (steps, points)."""

    def __init__(self, params: StormParams):
        self.p = params
        self.frame = _Frame(params)

    def point_rain(self, lat: FloatArray, lon: FloatArray, n_steps: int) -> FloatArray:
        along, cross2 = self.frame.project(lat, lon)
        local = _local_rain(along, n_steps, self.p, self.frame.length)
        out: FloatArray = local * np.exp(-cross2 / (2 * self.p.radius_km**2))[None, :]
        return out

    def areal_rain(self, lat: FloatArray, lon: FloatArray, n_steps: int, catchment_km: float) -> FloatArray:
        """Mean rain over a Gaussian catchment of radius `catchment_km` around each point."""
        # a Gaussian footprint averaged over a Gaussian catchment is again Gaussian
        along, cross2 = self.frame.project(lat, lon)
        local = _local_rain(along, n_steps, self.p, self.frame.length)
        sig2 = self.p.radius_km**2
        s2 = sig2 + catchment_km**2
        out: FloatArray = local * (math.sqrt(sig2 / s2) * np.exp(-cross2 / (2 * s2)))[None, :]
        return out

    def core_at(self, minutes: FloatArray) -> FloatArray:
        """(lat, lon) of the storm's core at these minutes after the storm forms."""
        p = self.p
        core_km = (minutes - p.peak_ratio * p.burst_h() * 60) * p.speed() / 60
        return self.frame.point_at(core_km)


def simulate_rainstorm(
    sensors: SensorRegistry, params: StormParams, start_ms: int, seed: int
) -> SimResult:
    """Readings of every sensor every tick from `start_ms` for `params.duration_s()`; no I/O."""
    rng = np.random.default_rng(seed)
    p = params
    n_steps = p.duration_s() // _STEP_S
    per_tick = p.tick_s // _STEP_S
    n_ticks = n_steps // per_tick
    cell = StormCell(p)
    sites = Sites(sensors)
    values = np.zeros((n_ticks, len(sensors)), np.float64)

    rain_i = sites.of_kind("rain")
    if rain_i.size:
        point = cell.point_rain(sites.lat[rain_i], sites.lon[rain_i], n_steps)
        spread = p.gauge_noise / 3 * math.sqrt(3)  # a uniform spread with that sigma
        bias = np.exp(site_uniform(sites.ids_of(rain_i), "gauge-bias", (-spread, spread)))
        values[:, rain_i] = hyd.gauge_readings(
            point * bias[None, :], per_tick, p.gauge_noise, p.gauge_resolution_mm, rng
        )

    wl_i = sites.of_kind("water_level")
    if wl_i.size:
        areal = cell.areal_rain(sites.lat[wl_i], sites.lon[wl_i], n_steps, p.catchment_km)
        base = np.array([base_level(sensors.sensors[i].params) for i in wl_i], np.float64)
        storage = hyd.at_tick_end(hyd.reservoir_storage(areal, p.reservoir_hours), per_tick)
        stage = base[None, :] + p.stage_m_per_mm * storage
        stage += rng.normal(0.0, p.stage_noise_m, stage.shape)
        values[:, wl_i] = np.round(stage, 2)

    pd_i = sites.of_kind("ponding")
    if pd_i.size:
        point = cell.point_rain(sites.lat[pd_i], sites.lon[pd_i], n_steps)
        capacity = site_uniform(sites.ids_of(pd_i), "drain-capacity", p.drainage_mm_h)
        conc = site_uniform(sites.ids_of(pd_i), "concentration", p.concentration)
        cm = hyd.at_tick_end(hyd.ponding_depth_cm(point, capacity, conc), per_tick)
        cm += rng.normal(0.0, p.ponding_noise_cm, cm.shape)
        values[:, pd_i] = np.maximum(cm, 0.0).round(1)

    gas_i = sites.of_kind("gas")
    if gas_i.size:
        baseline = site_uniform(sites.ids_of(gas_i), "gas-baseline", p.gas_background)
        noisy = baseline[None, :] + rng.normal(0.0, p.gas_noise, (n_ticks, gas_i.size))
        values[:, gas_i] = np.round(np.clip(noisy, 0.0, 3.0), 1)

    # smoke alarms stay quiet (0); kinds this storm does not drive report their quiet value
    for j, kind in enumerate(sites.kinds):
        spec = sensors.kinds[kind]
        if kind not in _DRIVEN:
            values[:, j] = min(max(0.0, spec.min), spec.max)
        values[:, j] = np.clip(values[:, j], spec.min, spec.max)

    tick_ms = p.tick_s * 1000
    tick_ts = start_ms + (np.arange(n_ticks, dtype=np.int64) + 1) * tick_ms
    tick_min = (np.arange(n_ticks) + 1) * p.tick_s / 60
    return SimResult(sensors, start_ms, tick_ms, tick_ts, values, cell.core_at(tick_min))


_DRIVEN = ("rain", "water_level", "ponding", "gas", "smoke")


class _Frame:
    """Flat km coordinates around the path start: along-track and cross-track distances."""

    def __init__(self, p: StormParams):
        self.lat0, self.lon0 = p.start
        self.kx = p.km_per_deg_lon()
        self.length = p.path_km()
        self.ux = (p.end[1] - self.lon0) * self.kx / self.length
        self.uy = (p.end[0] - self.lat0) * KM_PER_DEG_LAT / self.length

    def project(self, lat: FloatArray, lon: FloatArray) -> tuple[FloatArray, FloatArray]:
        """(along-track km, squared cross-track km) of each point."""
        x = (lon - self.lon0) * self.kx
        y = (lat - self.lat0) * KM_PER_DEG_LAT
        return x * self.ux + y * self.uy, (x * self.uy - y * self.ux) ** 2

    def point_at(self, along_km: FloatArray) -> FloatArray:
        """(lat, lon) rows of points on the path, clamped to its ends."""
        s = np.clip(along_km, 0.0, self.length)
        return np.column_stack(
            [self.lat0 + s * self.uy / KM_PER_DEG_LAT, self.lon0 + s * self.ux / self.kx]
        )


def _local_rain(along: FloatArray, n_steps: int, p: StormParams, length: float) -> FloatArray:
    """Rain (mm per step) on the track axis abreast of each point: (steps, points)."""
    burst_min = p.burst_h() * 60
    lead_min = p.peak_ratio * burst_min
    # the core passes the path start when a point there is r·burst into its rain
    peak_min = lead_min + np.clip(along, 0.0, length) / p.speed() * 60
    maturity = np.sqrt(np.sin(np.pi * np.clip(along / length, 0.0, 1.0)))
    formula = p.formula.for_period(p.return_period_years)
    edges = np.arange(n_steps + 1, dtype=np.float64)[:, None] * (_STEP_S / 60)
    since_start = edges - peak_min[None, :] + lead_min
    cumulative = chicago_cumulative(since_start, burst_min, p.peak_ratio, formula)
    local: FloatArray = np.diff(cumulative, axis=0) * maturity[None, :]
    return local


def base_level(params: dict[str, float]) -> float:
    """A station's normal stage: its `base_level`, else 1.3 m below its 警戒水位."""
    if "base_level" in params:
        return params["base_level"]
    if "warning_level" in params:
        return params["warning_level"] - 1.3
    return 0.0
