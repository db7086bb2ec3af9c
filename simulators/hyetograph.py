"""Design-storm hyetographs from a storm-intensity formula i = A / (t + b)^n.

The Chicago (Keifer-Chu) hyetograph puts the formula's depth for every duration into a single
storm: any window of duration t around the peak holds exactly A·t / (t + b)^n millimetres.
Its cumulative curve has a closed form, so interval depths are exact differences of it rather
than samples of the very sharp instantaneous peak.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

# q = 3618.427 (1 + 0.438 lg P) / (t + 11.259)^0.750  [L/(s·ha), t in minutes], the
# storm-intensity formula for central Guangzhou; 1 mm/min = 166.7 L/(s·ha).
GUANGZHOU_Q1 = 3618.427
GUANGZHOU_C = 0.438
GUANGZHOU_B = 11.259
GUANGZHOU_N = 0.750
_L_PER_S_HA_PER_MM_MIN = 166.7


@dataclass(frozen=True, slots=True)
class IntensityFormula:
    """i = a / (t + b)^n in mm/min, t in minutes."""

    a: float
    b: float
    n: float

    @classmethod
    def guangzhou(cls, return_period_years: float) -> IntensityFormula:
        if return_period_years < 1:
            raise ValueError("return period must be at least 1 year")
        q1 = GUANGZHOU_Q1 * (1 + GUANGZHOU_C * math.log10(return_period_years))
        return cls(q1 / _L_PER_S_HA_PER_MM_MIN, GUANGZHOU_B, GUANGZHOU_N)

    def depth(self, duration_min: float) -> float:
        """Depth (mm) of the heaviest window of this duration."""
        return self.a * duration_min / (duration_min + self.b) ** self.n


def chicago_cumulative(
    t_min: FloatArray, duration_min: float, peak_ratio: float, f: IntensityFormula
) -> FloatArray:
    """Cumulative depth (mm) from the storm's start to each time t (minutes), 0 <= t <= duration."""
    if not 0 < peak_ratio < 1:
        raise ValueError("peak_ratio must lie strictly between 0 and 1")
    t = np.clip(np.asarray(t_min, np.float64), 0.0, duration_min)
    tp = peak_ratio * duration_min
    r = peak_ratio

    def side(tau: FloatArray, share: float) -> FloatArray:
        u = tau / share
        out: FloatArray = share * f.a * u / (u + f.b) ** f.n
        return out

    before_total = side(np.array(tp), r)
    before = before_total - side(np.maximum(tp - t, 0.0), r)
    after = side(np.maximum(t - tp, 0.0), 1 - r)
    return np.where(t <= tp, before, before_total + after)


def chicago_depths(
    edges_min: FloatArray, duration_min: float, peak_ratio: float, f: IntensityFormula
) -> FloatArray:
    """Depth (mm) falling in each interval between consecutive edges (minutes from start)."""
    return np.diff(chicago_cumulative(edges_min, duration_min, peak_ratio, f))
