"""Per-sensor ring buffers of recent readings, kept sorted by event time.

Layout: one float64 array of shape (capacity * n_sensors, 3) holding, per slot, the event
time (epoch ms, exact in a float64 up to year 287 000), the value, and the running sum of all
earlier values (`before`, the exclusive prefix sum used by rolling accumulation). The three
fields of a reading share a cache line and every access is a flat `take`/`put`. Slots are
stored slot-major (slot j of every sensor, then slot j + 1 ...): sensors that report at the
same cadence hold the same number of readings, so a round writes, and a window start reads,
one contiguous stretch instead of one cache line per sensor scattered over the whole array,
which is what makes a round over 100 000 sensors cheap.
A sensor's readings occupy the logical positions ``[end - count, end)`` of its row, position
``j`` being stored in slot ``j % capacity``; the newest reading is at ``end - 1``.

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
oldest readings first (its long-window sums then undercount). It also leaves 32 slots beyond
the window: a backlog's stretch is evaluated in one pass only while every reading inside a
window of its first one is still held (rules/quiet.py), so a ring with little room beyond its
window would split a backlog into pieces that each pay the pass's fixed cost again.
Capacities are powers of two so a logical position maps to its slot with a mask instead of an
integer division.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from ews.compiled import kernel

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
G = TypeVar("G", bound=np.generic)

TS, VAL, BEF = 0, 1, 2  # fields of a slot

# insert() outcome per reading
APPENDED = 0  # newer than everything stored: evaluate the detectors at its ts
REPLACED_NEWEST = 1  # same ts as the newest: re-evaluate at that ts (idempotent for duplicates)
LATE = 2  # stored in place, older than the newest: the window changed, detectors do not rewind
IGNORED = 3  # older than the window

NO_TS = np.iinfo(np.int64).min

# a stretch of readings in one go (rules/quiet.py): (k, m) arrays, row i's readings in its
# first n[i] columns; a detector that proves the stretch changes no level returns a Commit
# that stores the state it would have reached reading by reading
Commit = Callable[[], None]


def leading(n: IntArray, m: int) -> BoolArray:
    """(k, m) mask of each row's first n[i] columns."""
    out: BoolArray = np.arange(m)[None, :] < n[:, None]
    return out


def subjects_in(subject_of_row: IntArray, rows: IntArray) -> tuple[IntArray, IntArray | None]:
    """The subjects a rule or fault has among a stretch's `rows` (its subject of each row, -1
    where it has none), and where they are in `rows`: None when every row is one, so that the
    stretch is used as it is, not copied to select them."""
    s: IntArray = subject_of_row[rows]
    if s.shape[0] and s.min() >= 0:
        return s, None
    sel = np.flatnonzero(s >= 0)
    return s[sel], sel


def previous(v: npt.NDArray[G], before: npt.NDArray[G]) -> npt.NDArray[G]:
    """(k, m) the reading before each one in its row: `before[i]` (the held state) for the first."""
    out: npt.NDArray[G] = np.empty_like(v)
    out[:, 0] = before
    out[:, 1:] = v[:, :-1]
    return out


def unchanged() -> None:
    """The Commit of a stretch that leaves a detector's state as it is."""


def capacity_for(span_ms: int, interval_ms: int, margin: float = 1.25, extra: int = 32) -> int:
    """Slots (a power of two) to hold `span_ms` of readings every `interval_ms`, with margin,
    and `extra` beyond them for a backlog's step."""
    if interval_ms <= 0:
        raise ValueError("interval must be positive")
    return pow2(math.ceil(span_ms / interval_ms * margin) + extra)


def pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


@dataclass(frozen=True, slots=True)
class Undo:
    """The slots and row state an `append_runs` overwrote."""

    rows: IntArray
    flat: IntArray
    data: FloatArray
    end: IntArray
    count: IntArray
    last_ts: IntArray
    total: FloatArray
    newest_before: FloatArray
    rewritten: BoolArray


class Windows:
    """Sorted ring buffers of (ts_ms, value) for `n` sensors (rows are dense indices)."""

    def __init__(self, n: int, capacity: int, span_ms: int):
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        capacity = pow2(capacity)
        self.n = n
        self.capacity = capacity
        self.mask = capacity - 1
        self.span_ms = int(span_ms)
        self.data = np.zeros((n * capacity, 3), np.float64)
        self.end = np.zeros(n, np.int64)  # readings ever appended (logical end)
        self.count = np.zeros(n, np.int64)  # readings held, <= capacity
        # per row, kept up to date so the hot path reads no slot to learn them
        self.last_ts = np.full(n, NO_TS, np.int64)  # ts of the newest reading
        self.total = np.zeros(n, np.float64)  # running sum up to and including the newest
        self.newest_before = np.zeros(n, np.float64)  # running sum before the newest
        self.rewritten = np.zeros(n, np.bool_)  # a late insert moved slots (readers re-derive)
        self.all_rows = np.arange(n, dtype=np.int64)

    # 2-D views for readers that want them (tests, plots); the hot path uses flat indices
    @property
    def ts(self) -> FloatArray:
        out: FloatArray = self.data[:, TS].reshape(self.capacity, self.n).T
        return out

    @property
    def value(self) -> FloatArray:
        out: FloatArray = self.data[:, VAL].reshape(self.capacity, self.n).T
        return out

    @property
    def before(self) -> FloatArray:
        out: FloatArray = self.data[:, BEF].reshape(self.capacity, self.n).T
        return out

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes + self.end.nbytes + self.count.nbytes + self.last_ts.nbytes
                   + self.total.nbytes + self.newest_before.nbytes + self.rewritten.nbytes)

    def flat(self, rows: IntArray | np.int64, pos: IntArray) -> IntArray:
        """Flat slot index of logical position(s) `pos` of `rows` (shapes broadcast)."""
        out: IntArray = (pos & self.mask) * self.n + rows
        return out

    def field(self, f: int, flat: IntArray) -> FloatArray:
        """One field of the slots at `flat` (a take on the flat buffer: a strided column view
        would be copied whole by `take`)."""
        out: FloatArray = self.data.reshape(-1).take(flat * 3 + f)
        return out

    def newest(self, rows: IntArray) -> tuple[IntArray, FloatArray, FloatArray]:
        """(ts, value, total) of each row's newest reading; ts = NO_TS where the row is empty."""
        total = self.total[rows]
        return self.last_ts[rows], total - self.newest_before[rows], total

    def newest_ts(self, rows: IntArray) -> IntArray:
        out: IntArray = self.last_ts[rows]
        return out

    def insert(self, rows: IntArray, ts: IntArray, value: FloatArray) -> npt.NDArray[np.int8]:
        """Insert one reading per row (rows must be unique); returns an outcome per reading."""
        last_ts = self.last_ts[rows]
        app = ts > last_ts
        if app.all():
            self._append(rows, ts, value)
            return np.full(rows.shape[0], APPENDED, np.int8)
        outcome = np.full(rows.shape[0], APPENDED, np.int8)
        if app.any():
            self._append(rows[app], ts[app], value[app])
        same = ts == last_ts
        if same.any():
            # the prefix sum before the newest is unchanged, so replacing is exact
            r = rows[same]
            self.data[self.flat(r, self.end[r] - 1), VAL] = value[same]
            self.total[r] = self.newest_before[r] + value[same]
            outcome[same] = REPLACED_NEWEST
        for i in np.flatnonzero(ts < last_ts):
            outcome[i] = self._insert_late(int(rows[i]), int(ts[i]), float(value[i]))
        return outcome

    def _append(self, rows: IntArray, ts: IntArray, value: FloatArray) -> None:
        every = rows.shape[0] == self.n and np.array_equal(rows, self.all_rows)
        end = self.end if every else self.end[rows]
        total = self.total if every else self.total[rows]
        block = np.empty((rows.shape[0], 3))
        block[:, TS] = ts
        block[:, VAL] = value
        block[:, BEF] = total
        self.data[self.flat(rows, end)] = block
        if every:
            self.end = end + 1
            np.minimum(self.count + 1, self.capacity, out=self.count)
            self.last_ts = ts.astype(np.int64, copy=True)
            self.newest_before = total
            self.total = total + value
            return
        self.end[rows] = end + 1
        self.count[rows] = np.minimum(self.count[rows] + 1, self.capacity)
        self.last_ts[rows] = ts
        self.newest_before[rows] = total
        self.total[rows] = total + value

    def append_runs(self, rows: IntArray, ts: IntArray, value: FloatArray, n: IntArray) -> Undo:
        """Append several readings per row at once: exactly what `n[i]` appends of one reading
        each would store (the running sums are the same additions, left to right).

        `rows` unique; `ts`, `value` of shape (k, m), row i's readings in its first `n[i]`
        columns, ts increasing and newer than the row's newest. Of more readings than the ring
        holds only the newest are stored, as appends would leave it. Returns what `undo` needs
        to put the rows back as they were.
        """
        before = (self.end[rows], self.count[rows], self.last_ts[rows], self.total[rows],
                  self.newest_before[rows], self.rewritten[rows])
        flat, old = _append_runs(self.data, self.end, self.count, self.last_ts, self.total, self.newest_before,
                                 self.capacity, self.mask, self.n, np.ascontiguousarray(rows, np.int64),
                                 np.ascontiguousarray(ts, np.int64), np.ascontiguousarray(value, np.float64),
                                 np.ascontiguousarray(n, np.int64))
        return Undo(rows, flat, old, *before)

    def undo(self, u: Undo) -> None:
        self.data[u.flat] = u.data
        r = u.rows
        self.end[r], self.count[r], self.last_ts[r] = u.end, u.count, u.last_ts
        self.total[r], self.newest_before[r], self.rewritten[r] = u.total, u.newest_before, u.rewritten

    def row(self, row: int) -> tuple[IntArray, FloatArray, FloatArray]:
        """All readings of one row, oldest first: (ts, value, before)."""
        end, count = int(self.end[row]), int(self.count[row])
        d = self.data.take(self.flat(np.int64(row), np.arange(end - count, end)), axis=0)
        return d[:, TS].astype(np.int64), d[:, VAL].copy(), d[:, BEF].copy()

    def _insert_late(self, row: int, t: int, v: float) -> int:
        cap, end = self.capacity, int(self.end[row])
        ts, vals, before = self.row(row)
        count = ts.shape[0]
        if t <= ts[-1] - self.span_ms:
            return IGNORED
        pos = int(np.searchsorted(ts, t))
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
        flat = self.flat(np.int64(row), np.arange(end - n_new, end))
        self.data[flat] = np.stack([new_ts.astype(np.float64), vals, before], axis=1)
        self.end[row] = end
        self.count[row] = n_new
        self.newest_before[row] = before[-1]
        self.total[row] = before[-1] + vals[-1]
        self.rewritten[row] = True
        return LATE

    def recent(self, rows: IntArray, m: int) -> tuple[IntArray, FloatArray, BoolArray]:
        """The last `m` slots of each row, oldest first: ts (k, m), value (k, m), valid (k, m)."""
        pos = self.end[rows][:, None] - m + np.arange(m)[None, :]
        valid = pos >= (self.end[rows] - self.count[rows])[:, None]
        d = self.data.take(self.flat(rows[:, None], pos).ravel(), axis=0).reshape(rows.shape[0], m, 3)
        return d[:, :, TS].astype(np.int64), d[:, :, VAL], valid

    def last(self, row: int, n: int, until_ts: int | None = None) -> list[tuple[int, float]]:
        """Up to `n` most recent (ts, value) of one row, oldest first, optionally up to a ts."""
        end, count = int(self.end[row]), int(self.count[row])
        if count == 0:
            return []
        newest = int(self.last_ts[row])
        if until_ts is None or until_ts >= newest:
            # the common case (a change at the newest reading): read only the slots needed
            k = min(n, count)
            d = self.data.take(self.flat(np.int64(row), np.arange(end - k, end)), axis=0)
            return [(int(a), float(b)) for a, b in zip(d[:, TS], d[:, VAL], strict=True)]
        ts, vals, _ = self.row(row)
        if until_ts is not None:
            k = int(np.searchsorted(ts, until_ts, side="right"))
            ts, vals = ts[:k], vals[:k]
        return [(int(a), float(b)) for a, b in zip(ts[-n:], vals[-n:], strict=True)]


@kernel
def _append_runs(data: FloatArray, end: IntArray, count: IntArray, last_ts: IntArray, total: FloatArray,
                 newest_before: FloatArray, capacity: int, mask: int, n_rows: int, rows: IntArray, ts: IntArray,
                 value: FloatArray, n: IntArray) -> tuple[IntArray, FloatArray]:
    """`Windows.append_runs` row by row, in place; the slots written and what they held."""
    size = 0
    for i in range(rows.shape[0]):
        size += min(n[i], capacity)
    flat = np.empty(size, np.int64)
    old = np.empty((size, 3))
    q = 0
    for i in range(rows.shape[0]):
        r, e0 = rows[i], end[rows[i]]
        s = prior = total[r]
        for c in range(n[i]):
            prior = s
            s = s + value[i, c]
            if c >= n[i] - capacity:  # of more than the ring holds, the newest
                f = ((e0 + c) & mask) * n_rows + r
                flat[q] = f
                old[q] = data[f]
                data[f, TS] = ts[i, c]
                data[f, VAL] = value[i, c]
                data[f, BEF] = prior
                q += 1
        end[r] = e0 + n[i]
        count[r] = min(count[r] + n[i], capacity)
        if n[i]:
            last_ts[r] = ts[i, n[i] - 1]
            newest_before[r] = prior
        total[r] = s
    return flat, old
