"""Typhoon rain: a moving vortex with a radial rain profile and spiral rain bands.

The rain rate around the centre follows the shape of R-CLIPER, the rainfall climatology and
persistence model of the US National Hurricane Center (Marks and DeMaria 2003; Tuleya,
DeMaria and Kuligowski 2007): rising linearly from the eye to a maximum at radius `rm`, then
falling off exponentially with e-folding distance `re`. R-CLIPER's coefficients are fitted to
Atlantic storms; the magnitudes here are chosen so a strong typhoon passing within some tens
of kilometres gives the 100-250 mm a day that Guangzhou's landfalling typhoons bring, and
should be set from the forecast of the event being drilled.

Spiral bands modulate the rate: `arms` logarithmic spirals (pitch `band_pitch_deg`, turning
inward anticlockwise as in the northern hemisphere) concentrate it in bands and lower it to
(1 - `band_amplitude`) of the profile between them, keeping the average; as the centre moves,
a gauge sees bursts of heavy rain as the bands pass, inside a long wet spell. Embedded
convective cells (a few kilometres across, living an hour or so, drifting with the cyclonic
flow) make neighbouring gauges differ, as they do under a real typhoon; they are born where
the vortex already rains, in proportion to the local rate. The seed turns the band pattern
and draws the cells, so each run puts the bursts elsewhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from simulators.hydrology import STEP_S
from simulators.sites import KM_PER_DEG_LAT, km_per_deg_lon

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class TyphoonParams:
    start: tuple[float, float] = (22.10, 114.60)  # (lat, lon) of the centre when the model starts
    end: tuple[float, float] = (23.90, 112.40)  # the direction it heads for (it may not get there)
    speed_kmh: float = 18.0
    max_rain_mm_h: float = 24.0  # Tm: the rate at radius rm
    eye_rain_mm_h: float = 4.0  # T0: the rate at the centre
    rm_km: float = 45.0
    re_km: float = 160.0
    arms: int = 2
    band_amplitude: float = 0.7  # 0: no bands; between bands the rate falls to (1 - a) of the profile
    band_pitch_deg: float = 18.0
    band_width: float = 0.5  # fraction of the gap between arms a band occupies
    cells_per_hour: float = 6.0  # convective cells born over the area, where it rains hardest
    cell_rain_mm_h: float = 35.0  # median peak rate of a cell
    cell_radius_km: float = 2.5
    cell_life_min: tuple[float, float] = (30.0, 90.0)
    flow_kmh: float = 30.0  # speed at which cells drift round the centre

    def __post_init__(self) -> None:
        problems = []
        if self.start == self.end:
            problems.append("start and end must differ")
        if not self.speed_kmh > 0:
            problems.append("speed_kmh must be positive")
        if not (self.max_rain_mm_h >= 0 and self.eye_rain_mm_h >= 0):
            problems.append("rain rates must not be negative")
        if not (self.rm_km > 0 and self.re_km > 0):
            problems.append("rm_km and re_km must be positive")
        if not 0 <= self.band_amplitude < 1:
            problems.append("band_amplitude must lie in [0, 1)")
        if not 0 < self.band_pitch_deg < 90 or self.arms < 0:
            problems.append("band_pitch_deg must lie in (0, 90) and arms must not be negative")
        if not 0 < self.band_width <= 1:
            problems.append("band_width must lie in (0, 1]")
        if self.cells_per_hour < 0 or self.cell_rain_mm_h < 0 or self.cell_radius_km <= 0:
            problems.append("cells need a rate and count not negative and a positive radius")
        if not 0 < self.cell_life_min[0] <= self.cell_life_min[1]:
            problems.append("cell_life_min must be (shortest, longest), both positive")
        if problems:
            raise ValueError("invalid typhoon parameters: " + "; ".join(problems))


@dataclass(frozen=True, slots=True)
class _Cells:
    born_min: FloatArray
    life_min: FloatArray
    x0: FloatArray  # km east of the track start at birth
    y0: FloatArray
    vx: FloatArray  # km per minute
    vy: FloatArray
    peak_mm_h: FloatArray


class Typhoon:
    """`area` (lat_min, lat_max, lon_min, lon_max) is where convective cells may form: the
    district, with a margin so cells drift in from outside too."""

    def __init__(
        self, params: TyphoonParams, seed: int = 0, area: tuple[float, float, float, float] | None = None,
        hours: float = 24.0,
    ):
        self.p = params
        self.kx = km_per_deg_lon(params.start[0])
        dx = (params.end[1] - params.start[1]) * self.kx
        dy = (params.end[0] - params.start[0]) * KM_PER_DEG_LAT
        length = math.hypot(dx, dy)
        self.ux, self.uy = dx / length, dy / length
        rng = np.random.default_rng([seed, 0x7F])
        self.phase = float(rng.uniform(0, 2 * math.pi))
        self.cells = self._draw_cells(rng, area, hours)

    def _draw_cells(
        self, rng: np.random.Generator, area: tuple[float, float, float, float] | None, hours: float
    ) -> _Cells:
        p = self.p
        n = 0 if area is None else int(rng.poisson(p.cells_per_hour * hours))
        lat_min, lat_max, lon_min, lon_max = area or (0.0, 0.0, 0.0, 0.0)
        margin = 3 * p.cell_radius_km
        x_lo = (lon_min - p.start[1]) * self.kx - margin
        x_hi = (lon_max - p.start[1]) * self.kx + margin
        y_lo = (lat_min - p.start[0]) * KM_PER_DEG_LAT - margin
        y_hi = (lat_max - p.start[0]) * KM_PER_DEG_LAT + margin
        born = rng.uniform(0, hours * 60, n)
        x0 = rng.uniform(x_lo, x_hi, n)
        y0 = rng.uniform(y_lo, y_hi, n)
        cx, cy = self.centre_km(born)
        rx, ry = x0 - cx, y0 - cy
        r = np.maximum(np.hypot(rx, ry), 1e-6)
        # drift anticlockwise round the centre, carried along with it
        vx = (-ry / r * p.flow_kmh + p.speed_kmh * self.ux) / 60
        vy = (rx / r * p.flow_kmh + p.speed_kmh * self.uy) / 60
        # cells form where the vortex rains: thin them by the local rate
        keep = rng.uniform(0, 1, n) < self._radial(r) / max(p.max_rain_mm_h, 1e-9)
        peak = p.cell_rain_mm_h * np.exp(rng.normal(0, 0.4, n))
        life = rng.uniform(*p.cell_life_min, n)
        return _Cells(born[keep], life[keep], x0[keep], y0[keep], vx[keep], vy[keep], peak[keep])

    def _radial(self, r_km: FloatArray) -> FloatArray:
        p = self.p
        inner = p.eye_rain_mm_h + (p.max_rain_mm_h - p.eye_rain_mm_h) * r_km / p.rm_km
        outer = p.max_rain_mm_h * np.exp(-(r_km - p.rm_km) / p.re_km)
        out: FloatArray = np.where(r_km < p.rm_km, inner, outer)
        return out

    def centre_km(self, minutes: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Centre position (east, north km from the start) at these minutes."""
        s = self.p.speed_kmh * minutes / 60
        return s * self.ux, s * self.uy

    def centre_at(self, minutes: FloatArray) -> FloatArray:
        x, y = self.centre_km(minutes)
        return np.column_stack([self.p.start[0] + y / KM_PER_DEG_LAT, self.p.start[1] + x / self.kx])

    def rate_mm_h(self, r_km: FloatArray, theta: FloatArray) -> FloatArray:
        p = self.p
        radial = self._radial(r_km)
        if p.arms == 0 or p.band_amplitude == 0:
            return np.asarray(radial)
        # phase of a log spiral: constant along an arm, so bands follow r = rm·e^(θ·tan pitch)
        spiral = p.arms * (theta - np.log(np.maximum(r_km, 1.0) / p.rm_km) / math.tan(math.radians(p.band_pitch_deg)))
        # narrower bands are sharper peaks of a raised cosine; dividing by its mean keeps the
        # radial profile the average, so bands move rain around without adding any
        sharp = 1.0 / p.band_width
        shaped = ((np.cos(spiral + self.phase) + 1) / 2) ** sharp
        modulation = 1 + p.band_amplitude * (shaped / _mean_of_power(sharp) - 1)
        out: FloatArray = radial * modulation
        return out

    def point_rain(self, lat: FloatArray, lon: FloatArray, n_steps: int) -> FloatArray:
        """mm per one-minute step at each point: (steps, points)."""
        minutes = (np.arange(n_steps, dtype=np.float64) + 0.5) * STEP_S / 60
        cx, cy = self.centre_km(minutes)
        x = (np.asarray(lon) - self.p.start[1]) * self.kx
        y = (np.asarray(lat) - self.p.start[0]) * KM_PER_DEG_LAT
        dx = x[None, :] - cx[:, None]
        dy = y[None, :] - cy[:, None]
        r = np.hypot(dx, dy)
        theta = np.arctan2(dy, dx)
        rate = self.rate_mm_h(r, theta) + self._cell_rate(minutes, x, y)
        out: FloatArray = rate * STEP_S / 3600
        return out

    def _cell_rate(self, minutes: FloatArray, x: FloatArray, y: FloatArray) -> FloatArray:
        c = self.cells
        out = np.zeros((minutes.shape[0], x.shape[0]))
        two_s2 = 2 * self.p.cell_radius_km**2
        for k in range(c.born_min.shape[0]):
            age = minutes - c.born_min[k]
            alive = (age >= 0) & (age <= c.life_min[k])
            if not alive.any():
                continue
            a = age[alive]
            # grows to its peak at mid-life and decays: a triangle in time
            strength = c.peak_mm_h[k] * (1 - np.abs(2 * a / c.life_min[k] - 1))
            px = c.x0[k] + c.vx[k] * a
            py = c.y0[k] + c.vy[k] * a
            d2 = (x[None, :] - px[:, None]) ** 2 + (y[None, :] - py[:, None]) ** 2
            out[alive] += strength[:, None] * np.exp(-d2 / two_s2)
        return out

    def areal_rain(self, lat: FloatArray, lon: FloatArray, n_steps: int, catchment_km: float) -> FloatArray:
        # the vortex varies over tens of km, a catchment spans one or two: the point will do
        return self.point_rain(lat, lon, n_steps)


def _mean_of_power(k: float) -> float:
    """Mean of ((cos u + 1) / 2)^k over a period: Γ(k + 1/2) / (√π Γ(k + 1))."""
    return math.exp(math.lgamma(k + 0.5) - math.lgamma(k + 1)) / math.sqrt(math.pi)
