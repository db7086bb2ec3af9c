"""Forecasts by extrapolation: the value a measure is expected to reach within a horizon H.

A rule compares the forecast with its thresholds like any other measure, so "the river will
reach 警戒水位 within 1 h" is ``forecast >= warning_level``. When such a condition raises a
warning, the scalar functions here give the predicted time of the crossing, which the warning
states together with the lead it gives.

- A reading (river stage, ponding depth): the least-squares line of the fit window
  (`detectors.trend`) carried H ahead: ``a + b * H``.
- A rolling accumulation over W (rain in 3 h), as the CMA signals word it ("3 小时内降雨量将达
  50 毫米以上"): if it keeps raining at the mean intensity I of the fit window F, the W-sum at
  t + h is the rain already inside that future window, ``S_{W-h}(t)``, plus ``I * h``. The
  forecast is the largest of these at h = 0, H/4, H/2, 3H/4, H (``H <= W``), so a crossing
  that the old rain leaving the window would hide by t + H still counts.
"""

from __future__ import annotations

import math

import numpy as np

from detectors.windows import FloatArray

HOUR_MS = 3_600_000
GRID = (0.25, 0.5, 0.75, 1.0)  # fractions of the horizon evaluated for accumulations


def value_forecast(a: FloatArray, b: FloatArray, horizon_ms: int) -> FloatArray:
    out: FloatArray = np.round(a + b * (horizon_ms / HOUR_MS), 9)
    return out


def accumulation_spans(window_ms: int, horizon_ms: int) -> list[int]:
    """The shortened windows W - h whose sums the accumulation forecast needs."""
    return [window_ms - round(f * horizon_ms) for f in GRID]


def accumulation_forecast(now: FloatArray, shortened: FloatArray, fit_sum: FloatArray,
                          fit_ms: int, horizon_ms: int) -> FloatArray:
    """max(S_W, S_{W-h} + I*h over the grid) per row; `shortened` is (k, len(GRID))."""
    intensity = fit_sum / fit_ms
    hs = np.asarray([f * horizon_ms for f in GRID])
    ahead = np.round(shortened + intensity[:, None] * hs[None, :], 6)
    out: FloatArray = np.maximum(now, ahead.max(axis=1))
    return out


def eta_value(a: float, b: float, threshold: float) -> float | None:
    """Milliseconds until the fitted line reaches `threshold` (0 if it is there), else None."""
    if math.isnan(a) or math.isnan(b):
        return None
    if a >= threshold:
        return 0.0
    if b <= 0:
        return None
    return (threshold - a) / b * HOUR_MS


def eta_accumulation(points: list[tuple[int, float]], t: int, threshold: float, window_ms: int,
                     fit_ms: int, horizon_ms: int, step_ms: int = 60_000) -> float | None:
    """Milliseconds until the W-sum is expected to reach `threshold` (within H), else None.

    `points` are one sensor's (ts, increment) readings up to t, oldest first.
    """
    fit_sum = sum(v for ts, v in points if t - fit_ms < ts <= t)
    intensity = fit_sum / fit_ms
    for h in range(0, horizon_ms + 1, step_ms):
        inside = sum(v for ts, v in points if t + h - window_ms < ts <= t)
        if round(inside + intensity * h, 6) >= threshold:
            return float(h)
    return None
