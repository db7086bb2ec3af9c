"""Rate of change and trend: the least-squares line through the readings of a window.

For each sensor and a window W ending at t, the readings with ts in ``(t - W, t]`` are fitted
with ``v = a + b * (ts - t)``: ``b`` is the trend in the reading's unit per hour (a river
rising 0.3 m/h), ``a`` the fitted value at t, which extrapolates without the noise of the
last reading alone. A window with fewer than `min_points` readings, or all of them at one
instant, has no trend (NaN), and a rule's condition on it holds neither way.

The readings are the last `m` slots of each row in the ring buffers, masked to the window.
`slopes`, the hot path's form, reads them in one compiled pass over the rows: the whole-array
form it replaced (detectors/reference.py) spent two dozen (k, m) array passes on what a quiet
stretch of river gauges asks, the largest cost of that kind. Its sums are numpy's own
(pairwise, eight lanes), so both forms give the same bits. `fit` stays the whole-array form
for a few readings (`slope_of`, when a warning is worded). Times are taken relative to t, in
hours, so the sums stay small and exact enough; results are rounded to 1e-9 of the unit, so a
river rising exactly 0.3 m/h meets a 0.3 m/h threshold instead of missing it by an ulp.
"""

from __future__ import annotations

import numpy as np

from detectors.windows import TS, VAL, FloatArray, IntArray, Windows
from ews.compiled import kernel

HOUR_MS = 3_600_000
ROUND_DECIMALS = 9


def fit(ts: IntArray, vals: FloatArray, valid: np.ndarray, t: IntArray, span_ms: IntArray | int,
        min_points: int = 3) -> tuple[FloatArray, FloatArray]:
    """Least-squares (a, b) per row over readings with ts in (t - span, t]: (k,), (k,)."""
    a, b = least_squares(ts, vals, valid, t, span_ms, min_points)
    return np.round(a, ROUND_DECIMALS), np.round(b, ROUND_DECIMALS)


def least_squares(ts: IntArray, vals: FloatArray, valid: np.ndarray, t: IntArray, span_ms: IntArray | int,
                  min_points: int = 3) -> tuple[FloatArray, FloatArray]:
    """`fit` unrounded: the whole-array form, (k, m) arrays in, (k,) out."""
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
    return np.asarray(a, np.float64), np.asarray(b, np.float64)


def slopes(win: Windows, rows: IntArray, t: IntArray, spans_ms: IntArray, m: int,
           upto: IntArray | None = None, min_points: int = 3) -> tuple[FloatArray, FloatArray]:
    """Fitted value at t and slope (per hour) for each row and span: two (k, len(spans))."""
    rows = np.ascontiguousarray(rows, np.int64)
    end = win.end[rows] if upto is None else np.ascontiguousarray(upto, np.int64)
    a, b = _fit_rows(win.data.reshape(-1), win.end, win.count, win.mask, win.n, rows, end,
                     np.ascontiguousarray(t, np.int64), np.ascontiguousarray(spans_ms, np.int64), m,
                     min_points)
    return np.round(a, ROUND_DECIMALS), np.round(b, ROUND_DECIMALS)


@kernel
def _block_sum(a: FloatArray, lo: int, n: int) -> float:
    # numpy's own summation of a contiguous run of at most 128 (pairwise_sum in its loops),
    # step for step, so that the compiled fit gives the whole-array form's bits
    if n < 8:
        res = 0.0
        for i in range(n):
            res += a[lo + i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    while i < n - n % 8:
        r0 += a[lo + i]
        r1 += a[lo + i + 1]
        r2 += a[lo + i + 2]
        r3 += a[lo + i + 3]
        r4 += a[lo + i + 4]
        r5 += a[lo + i + 5]
        r6 += a[lo + i + 6]
        r7 += a[lo + i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@kernel
def _pairwise_sum(a: FloatArray, n: int) -> float:
    """numpy's sum of a[:n]: runs over 128 are halved (on a multiple of 8) and the halves' sums
    added. Walked with a stack of its own: numba's cache cannot load a recursive function."""
    if n <= 128:
        return _block_sum(a, 0, n)
    lo = np.empty(64, np.int64)
    size = np.empty(64, np.int64)
    stage = np.zeros(64, np.int64)
    sums = np.empty(64)
    lo[0], size[0], depth, held = 0, n, 1, 0
    while depth:
        f = depth - 1
        if size[f] <= 128:
            sums[held] = _block_sum(a, lo[f], size[f])
            held += 1
            depth -= 1
            continue
        half = size[f] // 2
        half -= half % 8
        if stage[f] < 2:  # the left half, then the right one
            lo[depth] = lo[f] + (half if stage[f] else 0)
            size[depth] = size[f] - half if stage[f] else half
            stage[depth] = 0
            stage[f] += 1
            depth += 1
        else:
            held -= 1
            sums[held - 1] = sums[held - 1] + sums[held]
            depth -= 1
    return sums[0]


@kernel
def _fit_rows(data: FloatArray, end: IntArray, count: IntArray, mask: int, n: int, rows: IntArray,
              upto: IntArray, t: IntArray, spans: IntArray, m: int, min_points: int
              ) -> tuple[FloatArray, FloatArray]:
    """Unrounded (a, b) of each row (its last `m` slots up to logical position `upto`) and
    span, one row at a time: what `least_squares` gives on those slots."""
    k, n_spans = rows.shape[0], spans.shape[0]
    a_out = np.empty((k, n_spans))
    b_out = np.empty((k, n_spans))
    rel = np.empty(m, np.int64)
    v = np.empty(m)
    held = np.empty(m, np.bool_)
    x = np.empty(m)
    y = np.empty(m)
    xx = np.empty(m)
    xy = np.empty(m)
    for i in range(k):
        r = rows[i]
        first = end[r] - count[r]
        for j in range(m):
            pos = upto[i] - m + j
            held[j] = pos >= first
            if held[j]:
                slot = ((pos & mask) * n + r) * 3
                rel[j] = np.int64(data[slot + TS]) - t[i]
                v[j] = data[slot + VAL]
        for s in range(n_spans):
            count_in = 0
            for j in range(m):
                if held[j] and rel[j] <= 0 and rel[j] > -spans[s] and not np.isnan(v[j]):
                    x[j] = rel[j] / HOUR_MS
                    y[j] = v[j]
                    count_in += 1
                else:
                    x[j] = 0.0
                    y[j] = 0.0
                xx[j] = x[j] * x[j]
                xy[j] = x[j] * y[j]
            nf = np.float64(count_in)
            sx, sy = _pairwise_sum(x, m), _pairwise_sum(y, m)
            sxx, sxy = _pairwise_sum(xx, m), _pairwise_sum(xy, m)
            den = nf * sxx - sx * sx
            scale = nf * sxx
            if scale < 1e-300:
                scale = 1e-300
            if count_in >= min_points and den > 1e-12 * scale:
                b = (nf * sxy - sx * sy) / den
                b_out[i, s] = b
                a_out[i, s] = (sy - b * sx) / nf
            else:
                a_out[i, s] = np.nan
                b_out[i, s] = np.nan
    return a_out, b_out


def slope_of(points: list[tuple[int, float]], t: int, span_ms: int, min_points: int = 3
             ) -> tuple[float, float]:
    """(a, b) for one sensor's readings: the scalar twin used when a warning is worded."""
    if not points:
        return float("nan"), float("nan")
    ts = np.asarray([[p[0] for p in points]], np.int64)
    vals = np.asarray([[p[1] for p in points]], np.float64)
    a, b = fit(ts, vals, np.ones_like(vals, np.bool_), np.asarray([t], np.int64), span_ms, min_points)
    return float(a[0]), float(b[0])
