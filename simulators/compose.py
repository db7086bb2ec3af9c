"""Run a scenario's models over a sensor registry: readings, then the faulty stream.

The quiet day (background.py) is the floor every model adds to. Rain from all rain models
(storm cells, typhoons) is summed first, so gauges, rivers and roads answer the total, as the
ground does; river floods add to the stage, gas leaks to the concentration, and fires switch
smoke alarms on. Then the scenario's faults act on the stream of messages (faults.py).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ews.sensors import SensorRegistry
from ews.yamlfile import ConfigError, Problem
from simulators import hydrology as hyd
from simulators.background import BackgroundParams, battery_pct, quiet_values
from simulators.faults import Applied, apply_faults
from simulators.fire import FireParams, alarm_states, reachable
from simulators.gas import GasLeakParams, concentration
from simulators.hyetograph import GUANGZHOU_2011, StormFormula
from simulators.rainstorm import SimResult, StormCell, StormParams
from simulators.river import RiverFloodParams, stage_rise
from simulators.scenario import (
    FireSpec,
    GasLeakSpec,
    RainstormSpec,
    RiverFloodSpec,
    Scenario,
    TyphoonSpec,
)
from simulators.sites import Sites, distance_km, site_uniform
from simulators.spec import Location
from simulators.stream import Stream
from simulators.typhoon import Typhoon, TyphoonParams

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
STEP_MS = hyd.STEP_S * 1000


@dataclass
class Run:
    scenario: Scenario
    result: SimResult  # what the sensors measured, every tick
    stream: Stream  # what goes out, faults applied, in send order
    faults: list[Applied]

    @property
    def start_ms(self) -> int:
        return self.result.start_ms

    @property
    def end_ms(self) -> int:
        return self.result.start_ms + self.scenario.n_ticks * self.scenario.tick


def start_of(sc: Scenario, now_ms: int | None = None) -> int:
    """Epoch ms where the scenario's event time starts: its `start`, or so that it ends now
    (rounded down to a whole tick, so no reading lies in the future)."""
    if sc.start is not None:
        return int(sc.start.timestamp() * 1000)
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    return (now_ms - sc.n_ticks * sc.tick) // sc.tick * sc.tick


def run(sc: Scenario, sensors: SensorRegistry, start_ms: int | None = None) -> Run:
    start_ms = start_of(sc) if start_ms is None else start_ms
    result, battery = simulate(sc, sensors, start_ms)
    end_ms = start_ms + sc.n_ticks * sc.tick
    stream, applied = apply_faults(Stream.from_result(result, battery), sc.faults, start_ms, end_ms, sc.seed)
    return Run(sc, result, stream, applied)


def simulate(sc: Scenario, sensors: SensorRegistry, start_ms: int) -> tuple[SimResult, FloatArray | None]:
    """Every sensor's reading every tick, and the battery levels when the scenario reports them."""
    try:
        return _simulate(sc, sensors, start_ms)
    except ValueError as exc:
        # parameters valid one by one can still clash (a burst longer than the time left)
        raise ConfigError([Problem(f"scenario {sc.name!r}", None, "models", str(exc))]) from None


def _simulate(sc: Scenario, sensors: SensorRegistry, start_ms: int) -> tuple[SimResult, FloatArray | None]:
    rng = np.random.default_rng(sc.seed)
    sites = Sites(sensors)
    tick_s = sc.tick // 1000
    per_tick = tick_s // hyd.STEP_S
    n_ticks = sc.n_ticks
    n_steps = n_ticks * per_tick
    tick_ts = start_ms + (np.arange(n_ticks, dtype=np.int64) + 1) * sc.tick
    bg = BackgroundParams(
        drizzle_mm_h=sc.background.drizzle_mm_h, tide_m2_m=sc.background.tide_m2_m,
        tide_k1_m=sc.background.tide_k1_m, tide_reach_km=sc.background.tide_reach_km,
        stage_noise_m=sc.background.stage_noise_m, ponding_noise_cm=sc.background.ponding_noise_cm,
        gas_noise=sc.background.gas_noise,
    )
    values = quiet_values(bg, sites, tick_ts, rng)
    cell = np.full((n_ticks, 2), np.nan)
    _rain(sc, sites, values, n_steps, per_tick, rng, cell, tick_ts - start_ms)

    wl = sites.of_kind("water_level")
    for m in sc.models:
        if m.start >= n_steps * STEP_MS:
            continue  # begins after the end (a scenario shortened on the command line)
        if isinstance(m, RiverFloodSpec) and wl.size:
            cols = _stations(m, sites, wl)
            p = RiverFloodParams(
                peak_after_min=m.peak_after / 60_000, rise_min=m.rise / 60_000, reservoirs=m.reservoirs,
                peak_param=m.peak_param, margin_m=m.margin_m, celerity_kmh=m.celerity_kmh,
                attenuation_km=m.attenuation_km, flow_bearing_deg=m.flow_bearing_deg, surge_m=m.surge_m,
                surge_reach_km=m.surge_reach_km,
            )
            rise = _delayed(stage_rise(p, sites, cols, n_steps - m.start // STEP_MS), n_steps)
            values[:, cols] = np.round(values[:, cols] + hyd.at_tick_end(rise, per_tick), 2)

    gas = sites.of_kind("gas")
    for m in sc.models:
        if isinstance(m, GasLeakSpec) and gas.size and m.start < n_steps * STEP_MS:
            lat, lon = _place(m.at, sites)
            g = GasLeakParams(
                start_min=0.0, ramp_min=m.ramp / 60_000,
                leak_min=None if m.duration is None else m.duration / 60_000,
                peak_lel=m.peak_lel, reach_m=m.reach_m, settle_min=m.settle / 60_000,
            )
            d = distance_km(sites.lat[gas], sites.lon[gas], lat, lon) * 1000
            near = d < 10 * m.reach_m
            added = _delayed(concentration(g, d[near], n_steps - m.start // STEP_MS), n_steps)
            cols = gas[near]
            values[:, cols] = np.round(values[:, cols] + hyd.at_tick_end(added, per_tick), 1)

    smoke = sites.of_kind("smoke")
    for m in sc.models:
        if isinstance(m, FireSpec) and smoke.size:
            origin = _origin_alarm(m.at, sites, smoke)
            f = FireParams(
                start_min=m.start / 60_000, growth=m.growth, max_kw=m.max_kw,
                burn_min=None if m.burn is None else m.burn / 60_000, decay_min=m.decay / 60_000,
                trip_kw=m.trip_kw, smoke_speed_m_s=m.smoke_speed_m_s, smoke_reach_m=m.smoke_reach_m,
                max_distance_m=m.max_distance_m,
            )
            cols = reachable(sites, origin, smoke, f.max_distance_m)
            states = alarm_states(f, sites, origin, cols, (tick_ts - start_ms) / 1000)
            values[:, cols] = np.maximum(values[:, cols], states)

    for j, kind in enumerate(sites.kinds):
        spec = sensors.kinds[kind]
        values[:, j] = np.clip(values[:, j], spec.min, spec.max)
    battery = battery_pct(bg, sites, tick_ts) if sc.health else None
    return SimResult(sensors, start_ms, sc.tick, tick_ts, values, cell), battery


def _rain(
    sc: Scenario, sites: Sites, values: FloatArray, n_steps: int, per_tick: int, rng: np.random.Generator,
    cell: FloatArray, tick_offset_ms: npt.NDArray[np.int64],
) -> None:
    sources = [m for m in sc.models if isinstance(m, RainstormSpec | TyphoonSpec) and m.start < n_steps * STEP_MS]
    if not sources:
        return
    h = sc.hydrology
    rain_i, wl_i, pd_i = sites.of_kind("rain"), sites.of_kind("water_level"), sites.of_kind("ponding")
    at_gauge = np.zeros((n_steps, rain_i.size))
    areal = np.zeros((n_steps, wl_i.size))
    at_road = np.zeros((n_steps, pd_i.size))
    for m in sources:
        steps = n_steps - m.start // STEP_MS
        src = _source(m, sc, sites, steps)
        at_gauge += _delayed(src.point_rain(sites.lat[rain_i], sites.lon[rain_i], steps), n_steps)
        areal += _delayed(src.areal_rain(sites.lat[wl_i], sites.lon[wl_i], steps, h.catchment_km), n_steps)
        at_road += _delayed(src.point_rain(sites.lat[pd_i], sites.lon[pd_i], steps), n_steps)
        if isinstance(src, StormCell) and np.isnan(cell).all():
            minutes = (tick_offset_ms - m.start) / 60_000
            cell[:] = np.where((minutes >= 0)[:, None], src.core_at(minutes.astype(np.float64)), np.nan)
    if rain_i.size:
        spread = h.gauge_noise / 3 * math.sqrt(3)  # a uniform calibration spread with that sigma
        bias = np.exp(site_uniform(sites.ids_of(rain_i), "gauge-bias", (-spread, spread)))
        values[:, rain_i] += hyd.gauge_readings(at_gauge * bias[None, :], per_tick, h.gauge_noise,
                                                h.gauge_resolution_mm, rng)
        values[:, rain_i] = np.round(values[:, rain_i], 3)
    if wl_i.size:
        storage = hyd.at_tick_end(hyd.reservoir_storage(areal, h.reservoir_hours), per_tick)
        values[:, wl_i] = np.round(values[:, wl_i] + h.stage_m_per_mm * storage, 2)
    if pd_i.size:
        capacity = site_uniform(sites.ids_of(pd_i), "drain-capacity", h.drainage_mm_h)
        conc = site_uniform(sites.ids_of(pd_i), "concentration", h.concentration)
        depth = hyd.at_tick_end(hyd.ponding_depth_cm(at_road, capacity, conc), per_tick)
        values[:, pd_i] = np.round(values[:, pd_i] + depth, 1)


def _source(m: RainstormSpec | TyphoonSpec, sc: Scenario, sites: Sites, steps: int) -> StormCell | Typhoon:
    hours = steps * hyd.STEP_S / 3600
    if isinstance(m, RainstormSpec):
        formula = GUANGZHOU_2011 if m.formula is None else StormFormula(
            m.formula.q1, m.formula.c, m.formula.b, m.formula.n, m.formula.source)
        return StormCell(StormParams(
            duration_h=hours, start=_place(m.from_, sites), end=_place(m.to, sites), speed_kmh=m.speed_kmh,
            burst_hours=None if m.burst is None else m.burst / 3_600_000, radius_km=m.radius_km,
            peak_ratio=m.peak_ratio, return_period_years=m.return_period_years, formula=formula,
            tick_s=sc.tick // 1000,
        ))
    area = (float(sites.lat.min()), float(sites.lat.max()), float(sites.lon.min()), float(sites.lon.max()))
    return Typhoon(TyphoonParams(
        start=_place(m.from_, sites), end=_place(m.towards, sites), speed_kmh=m.speed_kmh,
        max_rain_mm_h=m.max_rain_mm_h, eye_rain_mm_h=m.eye_rain_mm_h, rm_km=m.rm_km, re_km=m.re_km,
        arms=m.arms, band_amplitude=m.band_amplitude, band_pitch_deg=m.band_pitch_deg, band_width=m.band_width,
        cells_per_hour=m.cells_per_hour, cell_rain_mm_h=m.cell_rain_mm_h, cell_radius_km=m.cell_radius_km,
        flow_kmh=m.flow_kmh,
    ), seed=sc.seed, area=area, hours=hours)


def _delayed(steps: FloatArray, n_steps: int) -> FloatArray:
    """A model's output that began `n_steps - len` steps into the scenario, on the full grid."""
    late = n_steps - steps.shape[0]
    if late <= 0:
        return steps
    out: FloatArray = np.concatenate([np.zeros((late, steps.shape[1])), steps])
    return out


def _place(where: Location, sites: Sites) -> tuple[float, float]:
    if where.sensor is not None:
        i = sites.registry.index[where.sensor]
        return float(sites.lat[i]), float(sites.lon[i])
    if where.region is not None:
        return sites.centroid(sites.in_region(where.region))
    assert where.lat is not None and where.lon is not None
    return where.lat, where.lon


def _origin_alarm(where: Location, sites: Sites, smoke: IntArray) -> int:
    if where.sensor is not None:
        return sites.registry.index[where.sensor]
    lat, lon = _place(where, sites)
    return int(smoke[np.argmin(distance_km(sites.lat[smoke], sites.lon[smoke], lat, lon))])


def _stations(m: RiverFloodSpec, sites: Sites, wl: IntArray) -> IntArray:
    reg = sites.registry
    if m.sensors is not None:
        return np.array([reg.index[s] for s in m.sensors], np.int64)
    if m.rivers is not None:
        rivers = set(m.rivers)
        return np.array([i for i in wl if reg.sensors[int(i)].tags.get("river") in rivers], np.int64)
    return wl
