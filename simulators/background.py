"""A quiet day: what every sensor reads when nothing is happening, with its daily rhythm.

- Rain gauges read 0; `drizzle_mm_h` > 0 adds light intermittent drizzle.
- River stations sit at their `base_level` plus the tide, which in the Pearl River delta's
  creeks is mixed and mainly semidiurnal: an M2 constituent (period 12.42 h) and a K1
  (23.93 h), strongest at the creek's outlet and fading upstream (`tide_reach_km`) behind the
  tide gates. Amplitudes are illustrative; set them from a station's own tide record.
- Road ponding sensors read 0 plus the noise of an ultrasonic depth gauge over dry asphalt.
- Gas sensors read a site baseline (0.2-1.5 % LEL) with noise; at restaurants (`site: 餐饮`)
  and homes (`site: 居民楼`) cooking adds a little around meal times, Beijing time.
- Smoke alarms are quiet.
- With `health`, every sensor also reports its battery, a stable site level draining slowly.

Nothing here comes near a warning threshold: a quiet day must stay quiet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from simulators.rainstorm import base_level
from simulators.sites import Sites, river_positions, site_uniform

FloatArray = npt.NDArray[np.float64]

M2_HOURS = 12.4206
K1_HOURS = 23.9345
_BEIJING_S = 8 * 3600
# meal times (hour, width h, weight) for the cooking bumps of each kind of site
_MEALS: dict[str, tuple[tuple[float, float, float], ...]] = {
    "餐饮": ((11.5, 1.0, 1.0), (18.0, 1.2, 1.0)),
    "居民楼": ((7.0, 0.6, 0.4), (12.0, 0.7, 0.6), (18.5, 0.8, 1.0)),
}


@dataclass(frozen=True, slots=True)
class BackgroundParams:
    drizzle_mm_h: float = 0.0
    tide_m2_m: float = 0.22
    tide_k1_m: float = 0.08
    tide_reach_km: float = 3.0
    flow_bearing_deg: float = 180.0
    stage_noise_m: float = 0.005
    ponding_noise_cm: float = 0.2
    gas_baseline: tuple[float, float] = (0.2, 1.5)
    gas_noise: float = 0.3
    cooking_lel: tuple[float, float] = (0.5, 2.5)  # the meal-time rise at a site, % LEL
    battery_pct: tuple[float, float] = (55.0, 100.0)
    battery_drain_pct_day: float = 0.05

    def __post_init__(self) -> None:
        if min(self.drizzle_mm_h, self.tide_m2_m, self.tide_k1_m, self.stage_noise_m,
               self.ponding_noise_cm, self.gas_noise) < 0 or self.tide_reach_km <= 0:
            raise ValueError("invalid background parameters: amounts must not be negative")


def local_hours(ts_ms: npt.NDArray[np.int64]) -> FloatArray:
    """Hour of the day in Beijing time (UTC+8, no daylight saving) of each timestamp."""
    out: FloatArray = ((ts_ms // 1000 + _BEIJING_S) % 86400) / 3600.0
    return out


def tide_m(p: BackgroundParams, ts_ms: npt.NDArray[np.int64]) -> FloatArray:
    """Tide at a creek outlet (m about mean level) at these times; phases fixed to the epoch."""
    hours = ts_ms / 3_600_000.0
    out: FloatArray = p.tide_m2_m * np.cos(2 * math.pi * hours / M2_HOURS) + p.tide_k1_m * np.cos(
        2 * math.pi * hours / K1_HOURS + 1.1
    )
    return out


def quiet_values(
    p: BackgroundParams, sites: Sites, tick_ts: npt.NDArray[np.int64], rng: np.random.Generator
) -> FloatArray:
    """Every sensor's reading at every tick on a day when nothing happens: (ticks, sensors)."""
    n_t = tick_ts.shape[0]
    values = np.zeros((n_t, len(sites)))
    reg = sites.registry

    rain_i = sites.of_kind("rain")
    if rain_i.size and p.drizzle_mm_h > 0:
        tick_h = (int(tick_ts[1] - tick_ts[0]) if n_t > 1 else 300_000) / 3_600_000
        # drizzle comes and goes in spells: on in about a third of the ticks
        spell = rng.uniform(0, 1, (n_t, 1)) < 1 / 3
        amount = rng.exponential(p.drizzle_mm_h * tick_h, (n_t, rain_i.size)) * spell
        values[:, rain_i] = np.floor(amount / 0.1) * 0.1

    wl_i = sites.of_kind("water_level")
    if wl_i.size:
        base = np.array([base_level(reg.sensors[int(i)].params) for i in wl_i])
        _, up = river_positions(sites, wl_i, p.flow_bearing_deg)
        reach = np.exp(-up / p.tide_reach_km)
        stage = base[None, :] + tide_m(p, tick_ts)[:, None] * reach[None, :]
        stage += rng.normal(0.0, p.stage_noise_m, stage.shape)
        values[:, wl_i] = np.round(stage, 2)

    pd_i = sites.of_kind("ponding")
    if pd_i.size:
        values[:, pd_i] = np.maximum(rng.normal(0.0, p.ponding_noise_cm, (n_t, pd_i.size)), 0.0).round(1)

    gas_i = sites.of_kind("gas")
    if gas_i.size:
        ids = sites.ids_of(gas_i)
        baseline = site_uniform(ids, "gas-baseline", p.gas_baseline)
        cooking = site_uniform(ids, "gas-cooking", p.cooking_lel)
        hours = local_hours(tick_ts)
        bumps = np.zeros((n_t, gas_i.size))
        for j, i in enumerate(gas_i):
            for hour, width, weight in _MEALS.get(reg.sensors[int(i)].tags.get("site", ""), ()):
                gap = (hours - hour + 12) % 24 - 12
                bumps[:, j] += cooking[j] * weight * np.exp(-0.5 * (gap / width) ** 2)
        noisy = baseline[None, :] + bumps + rng.normal(0.0, p.gas_noise, (n_t, gas_i.size))
        values[:, gas_i] = np.round(np.maximum(noisy, 0.0), 1)

    for j, kind in enumerate(sites.kinds):
        spec = reg.kinds[kind]
        if kind not in ("rain", "water_level", "ponding", "gas"):
            values[:, j] = min(max(0.0, spec.min), spec.max)
        values[:, j] = np.clip(values[:, j], spec.min, spec.max)
    return values


def battery_pct(p: BackgroundParams, sites: Sites, tick_ts: npt.NDArray[np.int64]) -> FloatArray:
    """Battery level of every sensor at every tick: a stable site level, draining slowly."""
    level = site_uniform(sites.ids, "battery", p.battery_pct)
    days = (tick_ts - (tick_ts[0] if tick_ts.size else 0)).astype(np.float64) / 86_400_000
    out: FloatArray = np.round(level[None, :] - p.battery_drain_pct_day * days[:, None], 1)
    return out
