"""Rate of change and trend: the least-squares line through the readings of a window.

For each sensor and a window W ending at t, the readings with ts in ``(t - W, t]`` are fitted
with ``v = a + b * (ts - t)``: ``b`` is the trend in the reading's unit per hour (a river
rising 0.3 m/h), ``a`` the fitted value at t, which extrapolates without the noise of the
last reading alone. A window with fewer than `min_points` readings, or all of them at one
instant, has no trend (NaN), and a rule's condition on it holds neither way.

The readings are gathered from the ring buffers (the last `m` slots of each row, masked to the
window), so one call is a handful of (k, m) array operations whatever the number of sensors.
Times are taken relative to t, in hours, so the sums stay small and exact enough; results are
rounded to 1e-9 of the unit, so a river rising exactly 0.3 m/h meets a 0.3 m/h threshold
instead of missing it by an ulp.
"""

from __future__ import annotations

import numpy as np

from detectors.windows import TS, VAL, FloatArray, IntArray, Windows

HOUR_MS = 3_600_000
ROUND_DECIMALS = 9


def gather(win: Windows, rows: IntArray, m: int, upto: IntArray | None = None
           ) -> tuple[IntArray, FloatArray, np.ndarray]:
    """Up to `m` readings of each row ending at logical position `upto` (default: the end)."""
    end = win.end[rows] if upto is None else upto
    pos = end[:, None] - m + np.arange(m)[None, :]
    valid = pos >= (win.end[rows] - win.count[rows])[:, None]
    d = win.data.take(win.flat(rows[:, None], pos).ravel(), axis=0).reshape(rows.shape[0], m, 3)
    return d[:, :, TS].astype(np.int64), d[:, :, VAL], valid


def fit(ts: IntArray, vals: FloatArray, valid: np.ndarray, t: IntArray, span_ms: IntArray | int,
        min_points: int = 3) -> tuple[FloatArray, FloatArray]:
    """Least-squares (a, b) per row over readings with ts in (t - span, t]: (k,), (k,)."""
    span = np.asarray(span_ms, np.int64)
    rel = ts - t[:, None]
    w = valid & (rel <= 0) & (rel > -(span[:, None] if span.ndim else span)) & ~np.isnan(vals)
    x = np.where(w, rel / HOUR_MS, 0.0)
    y = np.where(w, vals, 0.0)
    n = w.sum(axis=1).astype(np.float64)
    sx, sy = x.sum(axis=1), y.sum(axis=1)
    sxx, sxy = (x * x).sum(axis=1), (x * y).sum(axis=1)
    den = n * sxx - sx * sx
    ok = (n >= min_points) & (den > 1e-12 * np.maximum(n * sxx, 1e-300))
    with np.errstate(invalid="ignore", divide="ignore"):
        b = np.where(ok, (n * sxy - sx * sy) / np.where(ok, den, 1.0), np.nan)
        a = np.where(ok, (sy - b * sx) / np.where(n > 0, n, 1.0), np.nan)
    a_r = np.asarray(np.round(a, ROUND_DECIMALS), np.float64)
    b_r = np.asarray(np.round(b, ROUND_DECIMALS), np.float64)
    return a_r, b_r


def slopes(win: Windows, rows: IntArray, t: IntArray, spans_ms: IntArray, m: int,
           upto: IntArray | None = None, min_points: int = 3) -> tuple[FloatArray, FloatArray]:
    """Fitted value at t and slope (per hour) for each row and span: two (k, len(spans))."""
    ts, vals, valid = gather(win, rows, m, upto)
    a = np.empty((rows.shape[0], spans_ms.shape[0]))
    b = np.empty_like(a)
    for j, span in enumerate(spans_ms):
        a[:, j], b[:, j] = fit(ts, vals, valid, t, int(span), min_points)
    return a, b


def slope_of(points: list[tuple[int, float]], t: int, span_ms: int, min_points: int = 3
             ) -> tuple[float, float]:
    """(a, b) for one sensor's readings: the scalar twin used when a warning is worded."""
    if not points:
        return float("nan"), float("nan")
    ts = np.asarray([[p[0] for p in points]], np.int64)
    vals = np.asarray([[p[1] for p in points]], np.float64)
    a, b = fit(ts, vals, np.ones_like(vals, np.bool_), np.asarray([t], np.int64), span_ms, min_points)
    return float(a[0]), float(b[0])
