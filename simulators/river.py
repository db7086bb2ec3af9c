"""A river flood: a flood wave from upstream travelling down the river's stations, on top of a
high tide backing up from the mouth (洪潮叠加, the classic flood threat of the Pearl River
delta's tidal creeks).

The wave entering at the first (most upstream) station is the unit hydrograph of a Nash
cascade (a gamma-shaped rise and a long recession; Nash 1957), scaled so the station peaks at
`margin_m` above its own `peak_param` level (e.g. its 保证水位). Each station further down sees
it later (distance / `celerity_kmh`) and lower (attenuated by e^(-distance / attenuation_km))
in proportion to its own rise to that level. The surge adds `surge_m` at the mouth for the
duration of the wave, fading upstream with e-folding distance `surge_reach_km`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from simulators.hydrology import STEP_S
from simulators.rainstorm import base_level
from simulators.sites import Sites, river_positions

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class RiverFloodParams:
    peak_after_min: float = 180.0  # when the wave peaks at the first station, after the model starts
    rise_min: float = 120.0  # time from the start of the rise to the peak at the first station
    reservoirs: float = 3.0  # n of the Nash cascade: larger is a more symmetric wave
    peak_param: str = "guarantee_level"
    margin_m: float = 0.2
    celerity_kmh: float = 4.0
    attenuation_km: float = 20.0
    flow_bearing_deg: float = 180.0  # Tianhe's creeks flow south into the Pearl River
    surge_m: float = 0.0
    surge_reach_km: float = 3.0

    def __post_init__(self) -> None:
        problems = []
        if not (self.rise_min > 0 and self.peak_after_min >= 0):
            problems.append("rise_min must be positive and peak_after_min not negative")
        if not self.reservoirs > 1:
            problems.append("reservoirs must be more than 1")
        if not (self.celerity_kmh > 0 and self.attenuation_km > 0 and self.surge_reach_km > 0):
            problems.append("celerity_kmh, attenuation_km and surge_reach_km must be positive")
        if problems:
            raise ValueError("invalid river flood parameters: " + "; ".join(problems))


def nash_wave(minutes: FloatArray, rise_min: float, n: float) -> FloatArray:
    """Nash unit hydrograph shape with its peak (= 1) at `rise_min`; 0 before time 0."""
    k = rise_min / (n - 1)  # the gamma density (t/k)^(n-1) e^(-t/k) peaks at (n-1)k
    t = np.maximum(minutes, 0.0) / k
    peak = (n - 1) ** (n - 1) * math.exp(-(n - 1))
    out: FloatArray = np.where(minutes > 0, t ** (n - 1) * np.exp(-t) / peak, 0.0)
    return out


def stage_rise(p: RiverFloodParams, sites: Sites, cols: IntArray, n_steps: int) -> FloatArray:
    """Metres added to each station's stage at the end of every step: (steps, stations)."""
    down, up = river_positions(sites, cols, p.flow_bearing_deg)
    stations = [sites.registry.sensors[int(i)] for i in cols]
    reach = np.array([
        s.params.get(p.peak_param, base_level(s.params) + 1.3) - base_level(s.params) + p.margin_m
        for s in stations
    ])
    minutes = (np.arange(n_steps, dtype=np.float64) + 1) * STEP_S / 60
    lag = down / p.celerity_kmh * 60
    start = p.peak_after_min - p.rise_min
    wave = nash_wave(minutes[:, None] - start - lag[None, :], p.rise_min, p.reservoirs)
    rise: FloatArray = wave * (reach * np.exp(-down / p.attenuation_km))[None, :]
    if p.surge_m:
        # the surge rides with the flood wave's passage at each station
        rise += p.surge_m * np.exp(-up / p.surge_reach_km)[None, :] * np.sqrt(wave)
    return rise
