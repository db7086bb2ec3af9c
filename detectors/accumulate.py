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

from detectors.windows import FloatArray, IntArray, Windows

ROUND_DECIMALS = 6


def first_after(win: Windows, rows: IntArray, x: IntArray, lo: IntArray | None = None) -> IntArray:
    """Logical index of each row's first stored reading with ts > x (row's end if none).

    `x` has shape (k,) or (k, m); the result has the shape of `x`. `lo`, if given, is a known
    lower bound of the answer (at least the row's oldest stored position).
    """
    cap = win.capacity
    shape = x.shape
    r = rows.reshape((-1,) + (1,) * (len(shape) - 1))
    if lo is None:
        lo = np.broadcast_to((win.end[rows] - win.count[rows]).reshape(r.shape), shape).copy()
    hi = np.broadcast_to(win.end[rows].reshape(r.shape), shape).copy()
    rr = np.broadcast_to(r, shape)
    for _ in range(int(np.ceil(np.log2(cap + 1))) + 1):
        open_ = lo < hi
        if not open_.any():
            break
        mid = (lo + hi) // 2
        right = win.ts[rr, mid % cap] <= x
        lo = np.where(open_ & right, mid + 1, lo)
        hi = np.where(open_ & ~right, mid, hi)
    return lo


def _prefix(win: Windows, rows: IntArray, j: IntArray) -> FloatArray:
    """Sum of all values before logical index j (j may equal the row's end)."""
    cap = win.capacity
    r = rows.reshape((-1,) + (1,) * (j.ndim - 1))
    end = win.end[r]
    last = (end - 1) % cap
    total = np.where(win.count[r] > 0, win.before[r, last] + win.value[r, last], 0.0)
    inside = np.where(j < end, win.before[r, j % cap], 0.0)
    return np.where(j < end, inside, total)


def rolling_sums(win: Windows, rows: IntArray, t: IntArray, spans_ms: IntArray) -> FloatArray:
    """Sum of values with ts in (t - W, t] for each row (k,) and window W (m,): shape (k, m)."""
    t = t.astype(np.int64)
    upper = first_after(win, rows, t)
    lower = first_after(win, rows, t[:, None] - spans_ms[None, :].astype(np.int64))
    sums = _prefix(win, rows, upper)[:, None] - _prefix(win, rows, lower)
    return np.round(sums, ROUND_DECIMALS)


class Accumulator:
    """Rolling sums at each sensor's newest reading, over fixed windows, with remembered starts."""

    STEPS = 2  # forward steps tried before falling back to a binary search

    def __init__(self, win: Windows, spans_ms: IntArray):
        self.win = win
        self.spans_ms = np.asarray(spans_ms, np.int64)
        self.start = np.zeros((win.n, self.spans_ms.shape[0]), np.int64)

    def sums_at_newest(self, rows: IntArray) -> FloatArray:
        """(k, m) sums of values with ts in (t - W, t], t = each row's newest reading."""
        win, cap = self.win, self.win.capacity
        end = win.end[rows]
        last = (end - 1) % cap
        t = win.ts[rows, last]
        total = win.before[rows, last] + win.value[rows, last]
        x = t[:, None] - self.spans_ms[None, :]
        lo = np.maximum(self.start[rows], (end - win.count[rows])[:, None])
        end2 = np.broadcast_to(end[:, None], lo.shape)
        r2 = np.broadcast_to(rows[:, None], lo.shape)
        for _ in range(self.STEPS):
            step = (lo < end2) & (win.ts[r2, lo % cap] <= x)
            if not step.any():
                break
            lo = lo + step
        else:
            far = (lo < end2) & (win.ts[r2, lo % cap] <= x)
            if far.any():
                i, j = np.nonzero(far)
                lo[i, j] = first_after(win, rows[i], x[i, j], lo[i, j])
        self.start[rows] = lo
        inside = np.where(lo < end2, win.before[r2, lo % cap], total[:, None])
        return np.round(total[:, None] - inside, ROUND_DECIMALS)
