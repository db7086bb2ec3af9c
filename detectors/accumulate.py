"""Rolling accumulation over several windows at once, on event time.

Rain gauges report the rain that fell in each interval (tipping-bucket increments, mm), so
the rain of the last W is the sum of the values with ts in ``(t - W, t]``. The windows keep an
exclusive prefix sum per reading, so every window is the difference of two prefix sums found
by a binary search: O(log capacity) per sensor and window, vectorised over the sensors of a
round, whatever the window lengths (1 h ... 24 h).

On the hot path (`Accumulator`) the sums are taken at each sensor's newest reading, whose time
never goes back, so the start of every window only moves forward: it is remembered per sensor
and window, stepped forward once or twice (one reading in, one out, in steady reporting), and
found by binary search only after a gap. A reading inserted late lands at or after the start
it falls in, and logical positions before it do not move, so the remembered starts stay valid.

Sums are rounded to 1e-6 (a micrometre of rain, far below any gauge's resolution) so that
prefix-sum differences land exactly on thresholds such as 50 mm instead of an ulp below.
"""

from __future__ import annotations

import numpy as np

from detectors.windows import BEF, TS, VAL, FloatArray, IntArray, Windows
from ews.compiled import kernel

ROUND_DECIMALS = 6


def first_after(win: Windows, rows: IntArray, x: IntArray) -> IntArray:
    """Logical index of each row's first stored reading with ts > x (row's end if none).

    `x` has shape (k,) or (k, m); the result has the shape of `x`. A binary search per value,
    compiled: the vectorised form it replaced (detectors/reference.py) made a dozen passes
    over (k, m) arrays per halving, the largest single cost of a quiet stretch.
    """
    shape = x.shape
    m = int(np.prod(shape[1:], dtype=np.int64))
    x2 = np.ascontiguousarray(x, np.int64).reshape(shape[0], m)
    out: IntArray = _first_after(win.data.reshape(-1), win.end, win.count, win.mask, win.n,
                                 np.ascontiguousarray(rows, np.int64), x2)
    return out.reshape(shape)


@kernel
def _first_after(data: FloatArray, end: IntArray, count: IntArray, mask: int, n: int, rows: IntArray,
                 x: IntArray) -> IntArray:
    k, m = x.shape
    out = np.empty((k, m), np.int64)
    for i in range(k):
        r = rows[i]
        for j in range(m):
            out[i, j] = _search(data, end[r] - count[r], end[r], mask, n, r, x[i, j])
    return out


@kernel
def _search(data: FloatArray, a: int, b: int, mask: int, n: int, r: int, x: int) -> int:
    # the ts is compared as the float64 it is stored as, as numpy compares an int64 with a
    # float64 (exact below 2^53); the window's readings are sorted, so a search finds the one
    xf = np.float64(x)
    while a < b:
        mid = (a + b) // 2
        if data[((mid & mask) * n + r) * 3 + TS] <= xf:
            a = mid + 1
        else:
            b = mid
    return a


def rolling_sums(win: Windows, rows: IntArray, t: IntArray, spans_ms: IntArray) -> FloatArray:
    """Sum of values with ts in (t - W, t] for each row (k,) and window W (m,): shape (k, m).

    Two searches a window and two prefix sums, compiled: the whole-array form it replaced
    (detectors/reference.py) was the largest single cost of a quiet stretch of rain gauges."""
    sums = _rolling_sums(win.data.reshape(-1), win.end, win.count, win.mask, win.n,
                         np.ascontiguousarray(rows, np.int64), np.ascontiguousarray(t, np.int64),
                         np.ascontiguousarray(spans_ms, np.int64))
    return np.round(sums, ROUND_DECIMALS)


@kernel
def _rolling_sums(data: FloatArray, end: IntArray, count: IntArray, mask: int, n: int, rows: IntArray,
                  t: IntArray, spans: IntArray) -> FloatArray:
    """Unrounded: the prefix sum before each row's first reading after t, less the one before
    its first reading after t - W (a prefix past the newest reading is the row's total)."""
    k, m = rows.shape[0], spans.shape[0]
    out = np.empty((k, m))
    for i in range(k):
        r = rows[i]
        e, first = end[r], end[r] - count[r]
        total = 0.0
        if count[r] > 0:
            newest = (((e - 1) & mask) * n + r) * 3
            total = data[newest + BEF] + data[newest + VAL]
        upper = _search(data, first, e, mask, n, r, t[i])
        top = data[(((upper & mask) * n + r) * 3) + BEF] if upper < e else total
        for j in range(m):
            lower = _search(data, first, e, mask, n, r, t[i] - spans[j])
            bottom = data[(((lower & mask) * n + r) * 3) + BEF] if lower < e else total
            out[i, j] = top - bottom
    return out


class Accumulator:
    """Rolling sums at each sensor's newest reading, over fixed windows.

    Per sensor and window it remembers where the window starts and caches that reading's ts
    and prefix sum, so the steady state (one reading in, one out) reads one slot per window
    instead of searching. A row whose slots moved (a late insert) or whose window start fell
    out of the ring is found again by binary search.
    """

    STEPS = 3  # forward steps tried before falling back to a binary search

    def __init__(self, win: Windows, spans_ms: IntArray):
        self.win = win
        self.spans_ms = np.asarray(spans_ms, np.int64)
        n, m = win.n, self.spans_ms.shape[0]
        self.start = np.zeros((n, m), np.int64)  # logical position of each window's oldest reading
        self.start_ts = np.full((n, m), np.inf)  # its ts (inf: the window is empty)
        self.start_before = np.zeros((n, m))  # its prefix sum (the total, when empty)
        self.valid = np.zeros(n, np.bool_)

    def sums_at_newest(self, rows: IntArray) -> FloatArray:
        """(k, m) sums of values with ts in (t - W, t], t = each row's newest reading."""
        win = self.win
        every = rows.shape[0] == win.n and np.array_equal(rows, win.all_rows)

        def g(a: np.ndarray) -> np.ndarray:
            return a if every else a[rows]

        end, total, newest_ts = g(win.end), g(win.total), g(win.last_ts)
        x = newest_ts.astype(np.float64)[:, None] - self.spans_ms[None, :]
        lo, lts, lbf = g(self.start), g(self.start_ts), g(self.start_before)
        first = end - g(win.count)
        ok = g(self.valid) & ~g(win.rewritten)
        for j in range(lo.shape[1]):  # column by column: numpy's axis-1 reductions are slow on 3 columns
            ok &= lo[:, j] >= first
        r2 = np.broadcast_to(rows[:, None], lo.shape)
        # the newest reading is always inside its windows, so a start never passes it
        for _ in range(self.STEPS):
            step = lts <= x
            step &= ok[:, None]
            if not step.any():
                break
            lo = lo + step
            # an unmoved start reads back what it cached: no need to pick
            slot = win.data.take(win.flat(r2, lo).ravel(), axis=0).reshape((*lo.shape, 3))
            lts, lbf = slot[:, :, TS], slot[:, :, BEF]
        else:
            ok &= ~(lts <= x).any(axis=1)  # still more to skip (a gap): search instead
        if not ok.all():
            bad = np.flatnonzero(~ok)
            lo[bad], lts[bad], lbf[bad] = self._search(rows[bad], x[bad])
        if every:
            self.start, self.start_ts, self.start_before = lo, lts, lbf
            self.valid[:] = True
            win.rewritten[:] = False
        else:
            self.start[rows], self.start_ts[rows], self.start_before[rows] = lo, lts, lbf
            self.valid[rows] = True
            win.rewritten[rows] = False
        return np.round(total[:, None] - lbf, ROUND_DECIMALS)

    def _search(self, rows: IntArray, x: FloatArray) -> tuple[IntArray, FloatArray, FloatArray]:
        win = self.win
        lo = first_after(win, rows, x.astype(np.int64))
        end2 = win.end[rows][:, None]
        slot = win.data.take(win.flat(np.broadcast_to(rows[:, None], lo.shape), lo).ravel(), axis=0)
        slot = slot.reshape((*lo.shape, 3))
        empty = lo >= end2
        lts = np.where(empty, np.inf, slot[:, :, TS])
        lbf = np.where(empty, win.total[rows][:, None], slot[:, :, BEF])
        return lo, lts, lbf
