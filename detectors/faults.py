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

from detectors.windows import NO_TS, BoolArray, FloatArray, IntArray


class OutOfRange:
    def __init__(self, lo: FloatArray, hi: FloatArray):
        self.lo = np.asarray(lo, np.float64)  # NaN: no lower limit
        self.hi = np.asarray(hi, np.float64)

    def flags(self, s: IntArray, v: FloatArray) -> BoolArray:
        out: BoolArray = (v < self.lo[s]) | (v > self.hi[s])
        return out


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

    def _off(self, s: IntArray) -> BoolArray:
        nb = self.neighbours[s]
        vals = np.where(nb >= 0, self.mean[np.maximum(nb, 0)], np.nan)
        med, count = nanmedian_rows(vals)
        x = self.mean[s]
        judged = (count >= self.min_neighbours) & (med >= self.min_level) & ~np.isnan(x)
        high = x > self.high * med if np.isfinite(self.high) else np.zeros_like(judged)
        out: BoolArray = judged & ((x < self.low * med) | high)
        return out


def nanmedian_rows(x: FloatArray) -> tuple[FloatArray, npt.NDArray[np.int64]]:
    """Median of the non-NaN values of each row (NaN if none) and their count."""
    srt = np.sort(x, axis=1)  # NaN sorts last
    count = (~np.isnan(x)).sum(axis=1)
    k = np.arange(x.shape[0])
    lo = srt[k, np.maximum(count - 1, 0) // 2]
    hi = srt[k, np.maximum(count, 1) // 2 - (count == 0)]
    med = np.where(count > 0, (lo + hi) / 2, np.nan)
    return med, count
