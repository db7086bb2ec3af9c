"""Sensor faults: readings that say more about the sensor than about the world.

Each detector takes one in-order reading per subject (rows unique, ts newer than the
subject's previous reading; the engine handles duplicates and late readings) and returns a
flag per reading. A flagged reading is kept out of the hazard windows, so a broken sensor never
raises a hazard level, and it feeds a device-fault warning instead.

- out of range: outside the sensor's plausible limits (tighter than the kind's valid range,
  which ingest already enforces), e.g. above a river station's record stage plus a margin;
- spike: a jump of more than `max_jump` from the last good reading. A real level shift (the
  sensor was moved, the river rose in a surge) is accepted once `confirm` consecutive readings
  agree with each other, so a spike can never hide a lasting change for long;
- stuck: the same value (within `tolerance`) for at least `duration` and `min_readings`
  readings; values that may repeat for ever (0 from a dry rain gauge) can be exempted;
- drift against neighbours: the sensor's exponentially weighted mean (time constant tau, on
  event time) is far below or above the median of its neighbours' (`low`/`high` ratios),
  while that median is large enough to judge, for at least `duration`. Compared every
  `every` of event time per sensor, which is plenty for a slow fault and keeps rounds cheap.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from detectors.windows import NO_TS, BoolArray, Commit, FloatArray, IntArray, leading, previous, unchanged
from ews.compiled import kernel


class OutOfRange:
    def __init__(self, lo: FloatArray, hi: FloatArray):
        self.lo = np.asarray(lo, np.float64)  # NaN: no lower limit
        self.hi = np.asarray(hi, np.float64)

    def flags(self, s: IntArray, v: FloatArray) -> BoolArray:
        out: BoolArray = (v < self.lo[s]) | (v > self.hi[s])
        return out

    def quiet(self, s: IntArray, t: IntArray, v: FloatArray, n: IntArray) -> Commit | None:
        """Several in-order readings per subject (row i's first n[i] of (k, m)): the function
        that stores what `flags` reading by reading would, if none is flagged, else None."""
        bad = (v < self.lo[s][:, None]) | (v > self.hi[s][:, None])
        return None if (bad & leading(n, v.shape[1])).any() else unchanged


class Spike:
    def __init__(self, max_jump: FloatArray, confirm: int):
        self.max_jump = np.asarray(max_jump, np.float64)
        n = self.max_jump.shape[0]
        self.confirm = max(1, int(confirm))
        self.good = np.full(n, np.nan)  # last accepted value
        self.cand = np.full(n, np.nan)  # last rejected value
        self.run = np.zeros(n, np.int64)  # consecutive rejected readings that agree

    def flags(self, s: IntArray, v: FloatArray) -> BoolArray:
        good, lim = self.good[s], self.max_jump[s]
        jump = np.abs(v - good) > lim  # False for the first reading (good is NaN)
        agrees = np.abs(v - self.cand[s]) <= lim
        run = np.where(jump, np.where((self.run[s] > 0) & agrees, self.run[s] + 1, 1), 0)
        shift = jump & (run >= self.confirm)
        flagged = jump & ~shift
        self.good[s] = np.where(flagged, good, v)
        self.cand[s] = np.where(flagged, v, np.nan)
        self.run[s] = np.where(flagged, run, 0)
        return flagged

    def quiet(self, s: IntArray, t: IntArray, v: FloatArray, n: IntArray) -> Commit | None:
        if (self.run[s] > 0).any():
            return None  # a candidate level shift is being confirmed
        if ((np.abs(v - previous(v, self.good[s])) > self.max_jump[s][:, None]) & leading(n, v.shape[1])).any():
            return None
        last = v[np.arange(s.shape[0]), n - 1]

        def store() -> None:
            self.good[s] = last
            self.cand[s] = np.nan
            self.run[s] = 0

        return store


class Stuck:
    def __init__(self, tolerance: FloatArray, duration_ms: int, min_readings: int = 3,
                 ignore: list[float] | None = None):
        self.tolerance = np.asarray(tolerance, np.float64)
        n = self.tolerance.shape[0]
        self.duration_ms = int(duration_ms)
        self.min_readings = int(min_readings)
        self.ignore = np.asarray(ignore or [], np.float64)
        self.ref = np.full(n, np.nan)  # value the current run started with
        self.since = np.full(n, NO_TS, np.int64)
        self.count = np.zeros(n, np.int64)

    def flags(self, s: IntArray, t: IntArray, v: FloatArray) -> BoolArray:
        same = np.abs(v - self.ref[s]) <= self.tolerance[s]
        self.ref[s] = np.where(same, self.ref[s], v)
        since = np.where(same, self.since[s], t)
        count = np.where(same, self.count[s] + 1, 1)
        self.since[s], self.count[s] = since, count
        exempt = (np.abs(v[:, None] - self.ignore[None, :]) <= self.tolerance[s][:, None]).any(axis=1)
        out: BoolArray = (t - since >= self.duration_ms) & (count >= self.min_readings) & ~exempt
        return out

    def quiet(self, s: IntArray, t: IntArray, v: FloatArray, n: IntArray) -> Commit | None:
        if (self.tolerance[s] != 0).any():
            return None  # a run's reference is its first value: only exact repeats are compiled
        ref, since, count = self.ref[s], self.since[s], self.count[s]
        if not _stuck_runs(ref, since, count, t, v, n, self.ignore, self.duration_ms, self.min_readings):
            return None

        def store() -> None:
            self.ref[s], self.since[s], self.count[s] = ref, since, count

        return store


@kernel
def _stuck_runs(ref: FloatArray, since: IntArray, count: IntArray, t: IntArray, v: FloatArray, n: IntArray,
                ignore: FloatArray, duration_ms: int, min_readings: int) -> bool:
    """`Stuck.flags` reading by reading along each row, on copies of its state (updated in
    place); False as soon as one reading would be flagged."""
    for i in range(v.shape[0]):
        r, since_i, count_i = ref[i], since[i], count[i]
        for c in range(n[i]):
            x = v[i, c]
            if x == r:  # NaN never equals: a new run, as in `flags`
                count_i += 1
            else:
                r, since_i, count_i = x, t[i, c], 1
            if t[i, c] - since_i >= duration_ms and count_i >= min_readings:
                exempt = False
                for g in ignore:
                    exempt |= x == g
                if not exempt:
                    return False
        ref[i], since[i], count[i] = r, since_i, count_i
    return True


class Drift:
    def __init__(self, neighbours: IntArray, tau_ms: int, low: float, high: float, min_level: float,
                 min_neighbours: int, duration_ms: int, every_ms: int):
        """`neighbours` (n, K): subject indices of each subject's neighbours, -1 padded."""
        self.neighbours = np.asarray(neighbours, np.int64)
        n = self.neighbours.shape[0]
        self.tau_ms, self.low, self.high = float(tau_ms), float(low), float(high)
        self.min_level, self.min_neighbours = float(min_level), int(min_neighbours)
        self.duration_ms, self.every_ms = int(duration_ms), max(1, int(every_ms))
        self.mean = np.full(n, np.nan)
        self.last_ts = np.full(n, NO_TS, np.int64)
        self.next_check = np.full(n, NO_TS, np.int64)
        self.off_since = np.full(n, NO_TS, np.int64)  # when the sensor first looked off
        self.flagged = np.zeros(n, np.bool_)

    def flags(self, s: IntArray, t: IntArray, v: FloatArray) -> BoolArray:
        prev, last = self.mean[s], self.last_ts[s]
        dt = np.where(last == NO_TS, 0, t - last)
        alpha = np.where(np.isnan(prev), 1.0, -np.expm1(-dt / self.tau_ms))
        self.mean[s] = np.where(np.isnan(prev), v, prev + alpha * (v - prev))
        self.last_ts[s] = t
        due = t >= self.next_check[s]
        if due.any():
            d = s[due]
            td = t[due]
            off = self._off(d)
            since = np.where(off, np.where(self.off_since[d] == NO_TS, td, self.off_since[d]), NO_TS)
            self.off_since[d] = since
            self.flagged[d] = off & (td - since >= self.duration_ms)
            self.next_check[d] = td + self.every_ms
        out: BoolArray = self.flagged[s]
        return out

    def quiet(self, s: IntArray, t: IntArray, v: FloatArray, n: IntArray) -> Commit | None:
        """When no neighbourhood can reach `min_level` in this stretch, no sensor can be judged,
        so none is flagged; the means and check times still advance reading by reading."""
        if self.flagged[s].any() or not self.min_level > 0:
            return None
        valid = leading(n, v.shape[1])
        # an exponentially weighted mean stays within its old value and the new readings
        held = self.mean[~np.isnan(self.mean)]
        top = max(float(held.max()) if held.shape[0] else -np.inf, float(np.where(valid, v, -np.inf).max()))
        if not top < self.min_level:
            return None
        mean, last, next_check = self.mean[s], self.last_ts[s], self.next_check[s]
        # the smoothing factor of every reading at once (the same ufunc as `flags`), then the
        # means reading by reading along each row, compiled
        prev = previous(t, last)
        with np.errstate(invalid="ignore"):
            alpha = -np.expm1(-np.where(prev == NO_TS, 0, t - prev) / self.tau_ms)
        checked = _drift_means(mean, last, next_check, t, v, alpha, n, self.every_ms)

        def store() -> None:
            self.mean[s], self.last_ts[s], self.next_check[s] = mean, last, next_check
            self.off_since[s[checked]] = NO_TS
            self.flagged[s[checked]] = False

        return store

    def _off(self, s: IntArray) -> BoolArray:
        nb = self.neighbours[s]
        vals = np.where(nb >= 0, self.mean[np.maximum(nb, 0)], np.nan)
        med, count = nanmedian_rows(vals)
        x = self.mean[s]
        judged = (count >= self.min_neighbours) & (med >= self.min_level) & ~np.isnan(x)
        high = x > self.high * med if np.isfinite(self.high) else np.zeros_like(judged)
        out: BoolArray = judged & ((x < self.low * med) | high)
        return out


@kernel
def _drift_means(mean: FloatArray, last: IntArray, next_check: IntArray, t: IntArray, v: FloatArray,
                 alpha: FloatArray, n: IntArray, every_ms: int) -> BoolArray:
    """`Drift.flags`' means and check times reading by reading along each row, in place;
    which rows came to a check."""
    checked = np.zeros(v.shape[0], np.bool_)
    for i in range(v.shape[0]):
        m, due = mean[i], next_check[i]
        for c in range(n[i]):
            m = v[i, c] if np.isnan(m) else m + alpha[i, c] * (v[i, c] - m)
            if t[i, c] >= due:
                checked[i] = True
                due = t[i, c] + every_ms
        mean[i], next_check[i] = m, due
        if n[i]:
            last[i] = t[i, n[i] - 1]
    return checked


def nanmedian_rows(x: FloatArray) -> tuple[FloatArray, npt.NDArray[np.int64]]:
    """Median of the non-NaN values of each row (NaN if none) and their count."""
    srt = np.sort(x, axis=1)  # NaN sorts last
    count = (~np.isnan(x)).sum(axis=1)
    k = np.arange(x.shape[0])
    lo = srt[k, np.maximum(count - 1, 0) // 2]
    hi = srt[k, np.maximum(count, 1) // 2 - (count == 0)]
    med = np.where(count > 0, (lo + hi) / 2, np.nan)
    return med, count
