"""Cumulative rain counters turned into per-reading increments, with resets and roll-over.

Some gauges report a running total (mm since they were powered on, or since the daily reset)
instead of the rain of each interval. The windows sum increments, so a counter's reading
becomes ``total - previous total``. A total that goes down is a reset: the counter restarted
from zero, so the increment is the new total itself; with a known roll-over value R (a counter
that wraps, e.g. at 9999.9 mm) a drop of more than R/2 is read as a wrap and the increment is
``total + R - previous``.

Event time, per sensor:

- the first reading of a sensor (nothing known before it) counts 0: the rain it already holds
  fell at unknown times, and a false burst would be worse than a missed interval;
- a reading with the same ts as the newest replaces it (its increment is taken against the
  total before it), so a redelivered duplicate changes nothing;
- a reading older than the newest is dropped (``keep`` False): the newer reading's difference
  already holds its rain, and placing it would count that rain twice.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from detectors.windows import NO_TS, BoolArray, FloatArray, IntArray

JITTER = 1e-6  # a total this much below the previous one is rounding, not a reset


class CounterDecoder:
    def __init__(self, rollover: FloatArray):
        """`rollover` per subject: the value a counter wraps at, NaN when it never wraps."""
        self.rollover = np.asarray(rollover, np.float64)
        n = self.rollover.shape[0]
        self.total = np.full(n, np.nan)  # newest total
        self.prev = np.full(n, np.nan)  # the total before the newest
        self.last_ts = np.full(n, NO_TS, np.int64)

    def update(self, rows: IntArray, ts: IntArray, total: FloatArray) -> tuple[FloatArray, BoolArray]:
        """Increments for one reading per row (rows unique), and which readings to keep."""
        last_ts = self.last_ts[rows]
        newer = ts > last_ts
        same = ts == last_ts
        base = np.where(newer, self.total[rows], self.prev[rows])
        inc = increments(base, total, self.rollover[rows])
        self.prev[rows] = np.where(newer, self.total[rows], self.prev[rows])
        keep = newer | same
        self.total[rows] = np.where(keep, total, self.total[rows])
        self.last_ts[rows] = np.where(newer, ts, last_ts)
        return inc, keep


def increments(base: FloatArray, total: FloatArray, rollover: FloatArray) -> FloatArray:
    """Rain between a previous total `base` (NaN: unknown) and `total`."""
    d = total - base
    wrapped = ~np.isnan(rollover) & (d < -rollover / 2)
    out: npt.NDArray[np.float64] = np.where(
        np.isnan(base), 0.0,
        np.where(d >= -JITTER, np.maximum(d, 0.0), np.where(wrapped, total + rollover - base, total)),
    )
    return out
