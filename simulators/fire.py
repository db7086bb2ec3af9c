"""A fire whose smoke spreads and trips neighbouring smoke alarms in sequence.

The fire grows as a t-squared fire, Q = α t² (kW), with the growth rates of NFPA 72 and
ISO/TS 16733 (slow 0.00293, medium 0.01172, fast 0.0469, ultrafast 0.1876 kW/s²), until fuel
or ventilation caps it at `max_kw`; once it is put out the smoke output dies away with time
constant `decay_min`. Smoke production is taken as proportional to the heat release. Smoke
reaches an alarm `d` metres away after d / `smoke_speed_m_s` (a ceiling jet and corridor flow
of some tenths of a metre per second) and thinned by e^(-d / `smoke_reach_m`). The alarm in
the room of origin trips when the fire reaches `trip_kw`; each alarm's own sensitivity differs
by up to ±`sensitivity_spread` (a stable property of the device), and an alarm goes quiet again
when the smoke falls below `reset_fraction` of what tripped it. Alarms report the state flag
(1 alarm, 0 quiet), as standalone IoT smoke alarms do.

Smoke stays in its building: only alarms of the origin's building (the `building` tag, where
the registry has one) or else of its community, within `max_distance_m`, can trip.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from simulators.sites import Sites, distance_km, site_uniform

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Growth = Literal["slow", "medium", "fast", "ultrafast"]

ALPHA_KW_S2: dict[str, float] = {"slow": 0.00293, "medium": 0.01172, "fast": 0.0469, "ultrafast": 0.1876}


@dataclass(frozen=True, slots=True)
class FireParams:
    start_min: float = 10.0  # ignition, after the model starts
    growth: Growth = "fast"
    max_kw: float = 3000.0
    burn_min: float | None = 40.0  # from ignition until it is put out; None: to the end
    decay_min: float = 8.0
    trip_kw: float = 50.0
    smoke_speed_m_s: float = 0.5
    smoke_reach_m: float = 25.0
    sensitivity_spread: float = 0.25
    reset_fraction: float = 0.5
    max_distance_m: float = 300.0

    def __post_init__(self) -> None:
        problems = []
        if self.start_min < 0 or (self.burn_min is not None and not self.burn_min > 0):
            problems.append("start_min must not be negative and burn_min must be positive")
        if not (self.max_kw > self.trip_kw > 0):
            problems.append("trip_kw must be positive and below max_kw")
        if not (self.smoke_speed_m_s > 0 and self.smoke_reach_m > 0 and self.decay_min > 0):
            problems.append("smoke_speed_m_s, smoke_reach_m and decay_min must be positive")
        if not (0 <= self.sensitivity_spread < 1 and 0 < self.reset_fraction < 1):
            problems.append("sensitivity_spread must lie in [0, 1) and reset_fraction in (0, 1)")
        if problems:
            raise ValueError("invalid fire parameters: " + "; ".join(problems))


def heat_release_kw(p: FireParams, seconds: FloatArray) -> FloatArray:
    """Heat release of the fire at these seconds after the model starts."""
    t = seconds - p.start_min * 60
    grown = np.minimum(ALPHA_KW_S2[p.growth] * np.maximum(t, 0.0) ** 2, p.max_kw)
    if p.burn_min is None:
        return np.where(t > 0, grown, 0.0)
    out_at = p.burn_min * 60
    at_out = min(ALPHA_KW_S2[p.growth] * out_at**2, p.max_kw)
    dying = at_out * np.exp(-(t - out_at) / (p.decay_min * 60))
    out: FloatArray = np.where(t <= 0, 0.0, np.where(t <= out_at, grown, dying))
    return out


def reachable(sites: Sites, origin: int, cols: IntArray, max_distance_m: float) -> IntArray:
    """The alarms among `cols` the smoke can reach: same building (or community), near enough."""
    reg = sites.registry.sensors
    o = reg[origin]
    building = o.tags.get("building")
    same = np.array([
        (reg[int(i)].tags.get("building") == building) if building is not None
        else reg[int(i)].community == o.community
        for i in cols
    ], np.bool_)
    d = distance_km(sites.lat[cols], sites.lon[cols], float(sites.lat[origin]), float(sites.lon[origin])) * 1000
    out: IntArray = cols[same & (d <= max_distance_m)]
    return out


def alarm_states(p: FireParams, sites: Sites, origin: int, cols: IntArray, tick_s: FloatArray) -> FloatArray:
    """Alarm flag (0/1) of each alarm in `cols` at each tick (seconds after the model starts)."""
    out = np.zeros((tick_s.shape[0], cols.shape[0]))
    if cols.size == 0 or tick_s.size == 0:
        return out
    d = distance_km(sites.lat[cols], sites.lon[cols], float(sites.lat[origin]), float(sites.lon[origin])) * 1000
    d[cols == origin] = 0.0
    spread = p.sensitivity_spread
    sensitivity = site_uniform(sites.ids_of(cols), "smoke-sensitivity", (1 - spread, 1 + spread))
    # one-second resolution: the order in which neighbours trip is seconds apart
    seconds = np.arange(0.0, float(tick_s[-1]) + 1.0)
    for j in range(cols.shape[0]):
        arrival = seconds - d[j] / p.smoke_speed_m_s
        smoke = heat_release_kw(p, arrival) / p.trip_kw * np.exp(-d[j] / p.smoke_reach_m) * sensitivity[j]
        state = _latch(smoke, 1.0, p.reset_fraction)
        out[:, j] = state[np.minimum(tick_s.astype(np.int64), seconds.shape[0] - 1)]
    return out


def _latch(level: FloatArray, on: float, off_fraction: float) -> FloatArray:
    """1 from when `level` reaches `on` until it falls below `on * off_fraction`."""
    decided = np.where(level >= on, 1.0, np.where(level < on * off_fraction, 0.0, np.nan))
    decided[0] = 0.0 if np.isnan(decided[0]) else decided[0]
    # in the band between the thresholds an alarm keeps its last state: carry it forward
    last = np.maximum.accumulate(np.where(np.isnan(decided), 0, np.arange(level.shape[0])))
    out: FloatArray = decided[last]
    return out
