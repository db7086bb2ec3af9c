"""The detectors' compiled kernels written as whole-array numpy, the form they replaced.

Same arguments and results as each kernel (`detectors.accumulate._first_after`,
`detectors.faults._stuck_runs`, `detectors.faults._drift_means`): the tests hold every kernel
to its form here on random inputs, bit for bit, and `bench/rules.py` runs the engine on these
as the baseline of the kernels' figures. Nothing on the hot path calls them.
"""

from __future__ import annotations

import numpy as np

from detectors.windows import TS, BoolArray, FloatArray, IntArray, leading, previous


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
