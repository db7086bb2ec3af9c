"""The detectors' compiled kernels written as whole-array numpy, the form they replaced.

Same arguments and results as each kernel (`detectors.accumulate._first_after`,
`detectors.accumulate._rolling_sums`, `detectors.trend._fit_rows`,
`detectors.faults._stuck_runs`, `detectors.faults._drift_means`,
`detectors.windows._append_runs`, `detectors.threshold._quiet_since`): the tests hold every
kernel to its form here on random inputs, bit for bit, and `bench/rules.py` runs the engine on
these as the baseline of the kernels' figures. Nothing on the hot path calls them.
"""

from __future__ import annotations

import numpy as np

from detectors.trend import least_squares
from detectors.windows import BEF, NO_TS, TS, VAL, BoolArray, FloatArray, IntArray, leading, previous


def first_after(data: FloatArray, end: IntArray, count: IntArray, mask: int, n: int, rows: IntArray,
                x: IntArray) -> IntArray:
    """(k, m) logical index of each row's first stored reading with ts > x (the row's end if
    none): a binary search over all of them at once, a dozen array passes per halving."""
    k, m = x.shape
    r = np.broadcast_to(rows[:, None], (k, m))
    hi = np.broadcast_to(end[rows][:, None], (k, m)).copy()
    lo = hi - count[rows][:, None]
    capacity = mask + 1
    for _ in range(int(np.ceil(np.log2(capacity + 1))) + 1):
        open_ = lo < hi
        if not open_.any():
            break
        mid = (lo + hi) // 2
        right = data.take(((mid & mask) * n + r) * 3 + TS) <= x
        lo = np.where(open_ & right, mid + 1, lo)
        hi = np.where(open_ & ~right, mid, hi)
    return lo


def rolling_sums(data: FloatArray, end: IntArray, count: IntArray, mask: int, n: int, rows: IntArray,
                 t: IntArray, spans: IntArray) -> FloatArray:
    """(k, m) unrounded sums of values with ts in (t - W, t]: two searches over all windows
    at once, then the difference of the prefix sums found."""

    def prefix(j: IntArray) -> FloatArray:  # sum of all values before logical index j
        r = np.broadcast_to(rows.reshape((-1,) + (1,) * (j.ndim - 1)), j.shape)
        e = end[r]
        last = data.reshape(-1, 3).take(((e - 1) & mask) * n + r, axis=0)
        total = np.where(count[r] > 0, last[..., BEF] + last[..., VAL], 0.0)
        inside = data.take(((np.minimum(j, e - 1) & mask) * n + r) * 3 + BEF)
        return np.where(j < e, inside, total)

    upper = first_after(data, end, count, mask, n, rows, t[:, None])[:, 0]
    lower = first_after(data, end, count, mask, n, rows, t[:, None] - spans[None, :])
    return prefix(upper)[:, None] - prefix(lower)


def fit_rows(data: FloatArray, end: IntArray, count: IntArray, mask: int, n: int, rows: IntArray,
             upto: IntArray, t: IntArray, spans: IntArray, m: int, min_points: int
             ) -> tuple[FloatArray, FloatArray]:
    """(k, spans) unrounded least-squares (a, b): the last `m` slots of every row up to `upto`
    gathered into (k, m) arrays, then the whole-array fit once a span."""
    pos = upto[:, None] - m + np.arange(m)[None, :]
    held = pos >= (end[rows] - count[rows])[:, None]
    d = data.reshape(-1, 3).take(((pos & mask) * n + rows[:, None]).ravel(), axis=0).reshape(rows.shape[0], m, 3)
    ts, vals = d[:, :, TS].astype(np.int64), d[:, :, VAL]
    a = np.empty((rows.shape[0], spans.shape[0]))
    b = np.empty_like(a)
    for j, span in enumerate(spans):
        a[:, j], b[:, j] = least_squares(ts, vals, held, t, int(span), min_points)
    return a, b


def stuck_runs(ref: FloatArray, since: IntArray, count: IntArray, t: IntArray, v: FloatArray, n: IntArray,
               ignore: FloatArray, duration_ms: int, min_readings: int) -> bool:
    """Each row's runs of equal values at once (a running maximum of where runs begin); False
    if a reading would be flagged, else the state after each row's n[i] readings, in place."""
    k, m = v.shape
    same = v == previous(v, ref)  # NaN never equals: a new run
    pos = np.arange(m)[None, :]
    start = np.maximum.accumulate(np.where(same, -1, pos), axis=1)  # -1: the run began earlier
    i = np.arange(k)[:, None]
    begun = start >= 0
    since2 = np.where(begun, t[i, np.maximum(start, 0)], since[:, None])
    count2 = np.where(begun, pos - start + 1, count[:, None] + pos + 1)
    exempt = (v[:, :, None] == ignore[None, None, :]).any(axis=2)
    flagged = (t - since2 >= duration_ms) & (count2 >= min_readings) & ~exempt
    if (flagged & leading(n, m)).any():
        return False
    j = np.arange(k)
    at = n - 1
    ref[:] = np.where(begun[j, at], v[j, np.maximum(start[j, at], 0)], ref)
    since[:], count[:] = since2[j, at], count2[j, at]
    return True


def drift_means(mean: FloatArray, last: IntArray, next_check: IntArray, t: IntArray, v: FloatArray,
                alpha: FloatArray, n: IntArray, every_ms: int) -> BoolArray:
    """The means and check times column by column, all rows at once, in place; which rows came
    to a check."""
    valid = leading(n, v.shape[1])
    checked = np.zeros(v.shape[0], np.bool_)
    m, lt, due = mean.copy(), last.copy(), next_check.copy()
    for c in range(v.shape[1]):
        ok = valid[:, c]
        tc, vc = t[:, c], v[:, c]
        m = np.where(ok, np.where(np.isnan(m), vc, m + alpha[:, c] * (vc - m)), m)
        lt = np.where(ok, tc, lt)
        now_due = ok & (tc >= due)
        checked |= now_due
        due = np.where(now_due, tc + every_ms, due)
    mean[:], last[:], next_check[:] = m, lt, due
    return checked


def append_runs(data: FloatArray, end: IntArray, count: IntArray, last_ts: IntArray, total: FloatArray,
                newest_before: FloatArray, capacity: int, mask: int, n_rows: int, rows: IntArray, ts: IntArray,
                value: FloatArray, n: IntArray) -> tuple[IntArray, FloatArray]:
    """Every row's readings into the ring as one block, the running sums as one cumsum along
    the rows (the same additions, left to right), in place; the slots written and what they
    held."""
    k, m = ts.shape
    pos = np.arange(m)[None, :]
    valid = leading(n, m)
    end0, count0 = end[rows], count[rows]
    sums = np.empty((k, m + 1))
    sums[:, 0] = total[rows]
    sums[:, 1:] = np.where(valid, value, 0.0)
    np.cumsum(sums, axis=1, out=sums)
    kept = valid & (pos >= n[:, None] - capacity)
    flat = (((end0[:, None] + pos) & mask) * n_rows + rows[:, None])[kept]
    old = data[flat]
    block = np.empty((flat.shape[0], 3))
    block[:, TS] = ts[kept]
    block[:, VAL] = value[kept]
    block[:, BEF] = sums[:, :m][kept]
    data[flat] = block
    i = np.arange(k)
    end[rows] = end0 + n
    count[rows] = np.minimum(count0 + n, capacity)
    last_ts[rows] = ts[i, n - 1]
    newest_before[rows] = sums[i, n - 1]
    total[rows] = sums[i, n]
    return flat, old


def quiet_since(enter: FloatArray, exit_: FloatArray, below_since: IntArray, rows: IntArray, ts: IntArray,
                value: FloatArray, n: IntArray, timed: bool) -> IntArray | None:
    """None if a reading is above an enter threshold; else each (subject, column)'s exit timer
    after the readings, from where the trailing run of readings below began (NO_TS untimed)."""
    k, m = ts.shape
    valid = leading(n, m)
    e = enter[rows][:, None, :]
    with np.errstate(invalid="ignore"):
        if ((value >= e) & valid[:, :, None]).any():
            return None
        if not timed:
            return np.full((k, enter.shape[1]), NO_TS, np.int64)
        below = (value < exit_[rows][:, None, :]) | np.isnan(e)
    pos = np.arange(m)[None, :, None]
    last_not = np.where(~below & valid[:, :, None], pos, -1).max(axis=1)  # (k, C)
    first = np.minimum(last_not + 1, m - 1)
    i = np.arange(k)[:, None]
    since = np.where(last_not + 1 < n[:, None], ts[i, first], NO_TS)
    old = below_since[rows]
    carried = np.where(old == NO_TS, ts[:, :1], old)
    out: IntArray = np.where(last_not < 0, carried, since)
    return out
