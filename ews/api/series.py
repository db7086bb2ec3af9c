"""The measures a rule compares with its thresholds, recomputed from stored readings for a chart.

A rain gauge's 3-hour accumulation is what crosses 50 mm, not its 5-minute readings, so the
chart draws the rolling sums the rule uses; the sums follow the engine's definition (readings
in (t - window, t]) and are computed over the whole fetched history, then cut to the range
shown, so the first points already carry the hours before it.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def rolling_sum(ts_ms: IntArray, value: FloatArray, window_ms: int) -> FloatArray:
    """Sum of the readings in (t - window, t] at every reading's time t (ts sorted)."""
    if ts_ms.shape[0] == 0:
        return np.empty(0, np.float64)
    csum = np.concatenate([[0.0], np.cumsum(value)])
    first = np.searchsorted(ts_ms, ts_ms - window_ms, side="right")
    out: FloatArray = csum[1:] - csum[first]
    return out


def increments(value: FloatArray) -> FloatArray:
    """Per-interval amounts of a cumulative counter; a drop is a reset, counted from zero."""
    if value.shape[0] == 0:
        return value
    d = np.diff(value, prepend=value[0])
    out: FloatArray = np.where(d < 0, value, d)
    return out
