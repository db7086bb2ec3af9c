"""Detectors over arrays of readings, on event time: numpy, and numba kernels where a loop
along each sensor's readings beats a dozen passes over whole arrays."""

from functools import cache

import numpy as np

from detectors.accumulate import _first_after, _rolling_sums, rolling_sums
from detectors.faults import _drift_means, _stuck_runs
from detectors.threshold import ThresholdDetector, _quiet_since
from detectors.trend import _fit_rows
from detectors.windows import Windows, _append_runs, capacity_for

__all__ = ["ThresholdDetector", "Windows", "capacity_for", "load_kernels", "rolling_sums"]


@cache
def load_kernels() -> None:
    """Load the compiled kernels now (or compile them: the first start after an install), with
    the argument types of the hot path. A rules engine calls this when it is built, so that
    its first batch does not wait for them."""
    i1, f1 = np.zeros(1, np.int64), np.zeros(1)
    i2, f2 = np.zeros((1, 1), np.int64), np.zeros((1, 1))
    _first_after(np.zeros(3), i1, i1.copy(), 0, 1, i1, i2)
    _rolling_sums(np.zeros(3), i1, i1.copy(), 0, 1, i1, i1.copy(), i1.copy())
    _fit_rows(np.zeros(3), i1, i1.copy(), 0, 1, i1, i1.copy(), i1.copy(), i1.copy(), 1, 3)
    _stuck_runs(f1, i1, i1.copy(), i2, f2, i1.copy(), np.zeros(0), 1, 1)
    _drift_means(f1, i1, i1.copy(), i2, f2, f2.copy(), i1.copy(), 1)
    _append_runs(np.zeros((1, 3)), i1, i1.copy(), i1.copy(), f1, f1.copy(), 1, 0, 1, i1.copy(), i2, f2, i1.copy())
    _quiet_since(f2, f2.copy(), i2, i1, i2.copy(), np.zeros((1, 1, 1)), i1.copy(), True)
