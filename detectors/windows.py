"""Per-sensor ring buffers of recent readings, kept sorted by event time.

Layout: three 2-D arrays (n_sensors x capacity) for the event time (int64 epoch ms), the value
and the running sum of all earlier values (`before`, the exclusive prefix sum used by
rolling accumulation). A sensor's readings occupy the logical positions
``[end - count, end)`` of its row, position ``j`` being stored in slot ``j % capacity``; the
newest reading is at ``end - 1``. Appending is O(1) and vectorised over the sensors of a round.

Insertion rules (event time, never the wall clock):

- newer than the sensor's newest reading: appended (the common, vectorised path);
- the same ts as a stored reading: the value REPLACES the stored one, so a redelivered
  duplicate changes nothing;
- older than the newest but inside the window: inserted in place (a rare, per-reading slow
  path that also repairs the prefix sums after it);
- at or before ``newest - span``, or older than everything a full row holds: ignored, since
  no window evaluated from now on can contain it.

The capacity bounds memory: ``capacity_for(span, interval)`` leaves a margin for sensors that
report somewhat faster than their nominal interval; a sensor reporting much faster loses its
oldest readings first (its long-window sums then undercount).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

# insert() outcome per reading
APPENDED = 0  # newer than everything stored: evaluate the detectors at its ts
REPLACED_NEWEST = 1  # same ts as the newest: re-evaluate at that ts (idempotent for duplicates)
LATE = 2  # stored in place, older than the newest: the window changed, detectors do not rewind
IGNORED = 3  # older than the window


def capacity_for(span_ms: int, interval_ms: int, margin: float = 1.5, extra: int = 8) -> int:
    """Slots needed to hold `span_ms` of readings arriving every `interval_ms`, with margin."""
    if interval_ms <= 0:
        raise ValueError("interval must be positive")
    return math.ceil(span_ms / interval_ms * margin) + extra


class Windows:
    """Sorted ring buffers of (ts_ms, value) for `n` sensors (rows are dense sensor indices)."""

    def __init__(self, n: int, capacity: int, span_ms: int):
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.n = n
        self.capacity = capacity
        self.span_ms = int(span_ms)
        self.ts = np.zeros((n, capacity), np.int64)
        self.value = np.zeros((n, capacity), np.float64)
        self.before = np.zeros((n, capacity), np.float64)
        self.end = np.zeros(n, np.int64)  # readings ever appended (logical end)
        self.count = np.zeros(n, np.int64)  # readings held, <= capacity

    @property
    def nbytes(self) -> int:
        return int(self.ts.nbytes + self.value.nbytes + self.before.nbytes + 2 * self.end.nbytes)

    def newest_ts(self, rows: IntArray) -> IntArray:
        """Event time of each row's newest reading (int64 min where the row is empty)."""
        last = (self.end[rows] - 1) % self.capacity
        out = self.ts[rows, last]
        return np.where(self.count[rows] > 0, out, np.iinfo(np.int64).min)

    def insert(self, rows: IntArray, ts: IntArray, value: FloatArray) -> npt.NDArray[np.int8]:
        """Insert one reading per row (rows must be unique); returns an outcome per reading."""
        cap = self.capacity
        outcome = np.full(rows.shape[0], APPENDED, np.int8)
        has = self.count[rows] > 0
        last_slot = (self.end[rows] - 1) % cap
        last_ts = np.where(has, self.ts[rows, last_slot], np.iinfo(np.int64).min)

        app = ts > last_ts
        if app.any():
            r = rows[app]
            slot = self.end[r] % cap
            prev = (self.end[r] - 1) % cap
            prev_sum = np.where(
                self.count[r] > 0, self.before[r, prev] + self.value[r, prev], 0.0
            )
            self.ts[r, slot] = ts[app]
            self.value[r, slot] = value[app]
            self.before[r, slot] = prev_sum
            self.end[r] += 1
            self.count[r] = np.minimum(self.count[r] + 1, cap)

        same = ts == last_ts
        if same.any():
            # the prefix sum before the newest is unchanged, so replacing is exact
            self.value[rows[same], last_slot[same]] = value[same]
            outcome[same] = REPLACED_NEWEST

        for i in np.flatnonzero(ts < last_ts):
            outcome[i] = self._insert_late(int(rows[i]), int(ts[i]), float(value[i]))
        return outcome

    def _insert_late(self, row: int, t: int, v: float) -> int:
        cap, end, count = self.capacity, int(self.end[row]), int(self.count[row])
        slots = np.arange(end - count, end) % cap
        ts = self.ts[row, slots]
        if t <= ts[-1] - self.span_ms:
            return IGNORED
        pos = int(np.searchsorted(ts, t))
        vals = self.value[row, slots].copy()
        before = self.before[row, slots].copy()
        if ts[pos] == t:
            vals[pos] = v
            new_ts = ts
        else:
            if pos == 0 and count == cap:
                return IGNORED  # older than everything a full row holds
            new_ts = np.insert(ts, pos, t)
            vals = np.insert(vals, pos, v)
            before = np.insert(before, pos, before[pos])
            end += 1
            if new_ts.shape[0] > cap:
                new_ts, vals, before = new_ts[1:], vals[1:], before[1:]
                pos -= 1
        # repair the running sums after the change in the same order appends would add them
        for j in range(max(pos, 0) + 1, new_ts.shape[0]):
            before[j] = before[j - 1] + vals[j - 1]
        n_new = new_ts.shape[0]
        new_slots = np.arange(end - n_new, end) % cap
        self.ts[row, new_slots] = new_ts
        self.value[row, new_slots] = vals
        self.before[row, new_slots] = before
        self.end[row] = end
        self.count[row] = n_new
        return LATE

    def last(self, row: int, n: int, until_ts: int | None = None) -> list[tuple[int, float]]:
        """Up to `n` most recent (ts, value) of one row, oldest first, optionally up to a ts."""
        end, count = int(self.end[row]), int(self.count[row])
        newest = int(self.ts[row, (end - 1) % self.capacity]) if count else 0
        if until_ts is None or until_ts >= newest:
            count = min(count, n)  # the common case: the change is at the newest reading
            until_ts = None
        slots = np.arange(end - count, end) % self.capacity
        ts = self.ts[row, slots]
        vals = self.value[row, slots]
        if until_ts is not None:
            k = int(np.searchsorted(ts, until_ts, side="right"))
            ts, vals = ts[:k], vals[:k]
        return [(int(a), float(b)) for a, b in zip(ts[-n:], vals[-n:], strict=True)]
