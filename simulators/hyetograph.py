"""Design-storm hyetographs from a storm-intensity formula i = A / (t + b)^n.

The Chicago (Keifer-Chu) hyetograph puts the formula's depth for every duration into a single
storm: any window of duration t around the peak holds exactly A·t / (t + b)^n millimetres.
Its cumulative curve has a closed form, so interval depths are exact differences of it rather
than samples of the very sharp instantaneous peak. (Keifer, C. J. and Chu, H. H., 1957,
"Synthetic storm pattern for drainage design", J. Hydraulics Division, ASCE, 83(HY4); widely
used in Chinese drainage practice for short-duration design storms.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

# The general formula (总公式) of 《广州市中心城区暴雨公式及计算图表》, published by the
# Guangzhou Water Authority (广州市水务局) in June 2011 and adopted as Appendix I of the city's
# drainage rules (穗水规字〔2018〕5号):
#     q = 3618.427 (1 + 0.438 lg P) / (t + 11.259)^0.750   [L/(s·ha), t in minutes, P in years]
# The same publication gives single-return-period and return-period-interval formulas that fit
# better for a given P, and the city has revised the tables since; the coefficients here are
# the 2011 general formula as it is commonly reproduced in design documents and must be checked
# against the current official edition before any design use. 1 mm/min = 166.7 L/(s·ha).
_L_PER_S_HA_PER_MM_MIN = 166.7


@dataclass(frozen=True, slots=True)
class StormFormula:
    """A city's storm-intensity formula q = q1 (1 + c lg P) / (t + b)^n in L/(s·ha)."""

    q1: float
    c: float
    b: float
    n: float
    source: str = ""

    def for_period(self, return_period_years: float) -> IntensityFormula:
        if return_period_years < 1:
            raise ValueError("return period must be at least 1 year")
        q = self.q1 * (1 + self.c * math.log10(return_period_years))
        return IntensityFormula(q / _L_PER_S_HA_PER_MM_MIN, self.b, self.n)


GUANGZHOU_2011 = StormFormula(
    3618.427, 0.438, 11.259, 0.750,
    "广州市中心城区暴雨强度总公式 (广州市水务局, 2011年6月); check against the current edition",
)


@dataclass(frozen=True, slots=True)
class IntensityFormula:
    """i = a / (t + b)^n in mm/min, t in minutes."""

    a: float
    b: float
    n: float

    @classmethod
    def guangzhou(cls, return_period_years: float) -> IntensityFormula:
        return GUANGZHOU_2011.for_period(return_period_years)

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
