"""Threshold with hysteresis and hold time, vectorised over subjects and levels.

State and parameters are arrays of shape (n_subjects, n_columns); column ``c`` is warning level
``levels[c]`` (default ``c + 1``: 1 blue, 2 yellow, 3 orange, 4 red), so the level a subject
is at is a small int. Columns do not descend in level; several columns may share a level when
a rule reaches it by several conditions (e.g. yellow by the 6 h rain or by a forecast), and
each column may be fed its own value (``value`` of shape (k, n_columns)), so one detector
serves a whole rule.

Semantics, per subject and level L (a Schmitt trigger with two hold timers):

- enter threshold ``T_L``: the condition "above" is ``value >= T_L``. ``T_L = NaN`` means the
  level is absent for that subject (e.g. Guangdong issues no blue rainstorm signal); an absent
  level is never active. Thresholds differ per subject (each river station's own 警戒水位) and
  ascend with the level.
- exit threshold ``T_L - hysteresis_L``: the condition "below" is ``value < T_L - h_L``.
- a level becomes ACTIVE once the value has stayed above for ``hold_enter_L`` of event time:
  the hold starts at the first reading that is above and is met at a reading whose ts is at
  least ``hold_enter_L`` later, with every reading in between above (0 = immediately);
- it becomes INACTIVE once the value has stayed below for ``hold_exit_L`` in the same way;
- in the band ``[T_L - h_L, T_L)``, or while a hold runs, the level keeps its state; a reading
  in the band (or a NaN value) restarts both hold timers.
- the subject's level is the highest active level, ``0`` (Level.NONE) if none is active.

Time is the readings' event time only, so the state depends on the sequence of readings, never
on how they were batched or when they were processed. Conditions are judged at readings: a gap
between two readings that are both above counts as time spent above.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from detectors.windows import BoolArray, Commit, FloatArray, IntArray, unchanged
from ews.compiled import kernel

NO_TS = np.iinfo(np.int64).min  # a hold timer that is not running


class ThresholdDetector:
    def __init__(
        self,
        enter: FloatArray,
        hysteresis: FloatArray | float = 0.0,
        hold_enter_ms: IntArray | int = 0,
        hold_exit_ms: IntArray | int = 0,
        levels: npt.ArrayLike | None = None,
    ):
        enter = np.ascontiguousarray(enter, np.float64)  # the compiled quiet pass reads it row by row
        if enter.ndim != 2:
            raise ValueError("enter thresholds must be an array (n_subjects, n_levels)")
        hyst = np.broadcast_to(np.asarray(hysteresis, np.float64), enter.shape)
        if (hyst < 0).any():
            raise ValueError("hysteresis must not be negative")
        self.enter = enter
        self.exit = enter - hyst
        n_levels = enter.shape[1]
        self.hold_enter = np.broadcast_to(np.asarray(hold_enter_ms, np.int64), (n_levels,)).copy()
        self.hold_exit = np.broadcast_to(np.asarray(hold_exit_ms, np.int64), (n_levels,)).copy()
        self.level_values = np.asarray(
            np.arange(1, n_levels + 1) if levels is None else levels, np.int8
        )
        if self.level_values.shape != (n_levels,) or (np.diff(self.level_values) < 0).any():
            raise ValueError("levels must name each column, not descending")
        # without hold times the timers are never read: skip them on the hot path
        self._timed = bool(self.hold_enter.any() or self.hold_exit.any())
        self.active: BoolArray = np.zeros(enter.shape, np.bool_)
        self.above_since: IntArray = np.full(enter.shape, NO_TS, np.int64)
        self.below_since: IntArray = np.full(enter.shape, NO_TS, np.int64)

    @property
    def n_subjects(self) -> int:
        return int(self.enter.shape[0])

    def update(self, rows: IntArray | None, ts: IntArray, value: FloatArray) -> npt.NDArray[np.int8]:
        """Feed one reading per subject and return the subjects' new levels.

        `rows` are unique subject indices, or None for all subjects in order (the fast path of
        a full round); `value` is (k,) for every column or (k, n_columns) per column.
        """
        t = ts.astype(np.int64)[:, None]
        v = value[:, None] if value.ndim == 1 else value
        enter = self.enter if rows is None else self.enter[rows]
        exit_ = self.exit if rows is None else self.exit[rows]
        with np.errstate(invalid="ignore"):
            above = v >= enter  # NaN thresholds (absent levels) compare False
            below = (v < exit_) | np.isnan(enter)
        prev = self.active if rows is None else self.active[rows]
        if not self._timed:
            active = (prev | above) & ~below
            self._store(rows, active)
            return level_of(active, self.level_values)

        since = self.above_since if rows is None else self.above_since[rows]
        since = np.where(above, np.where(since == NO_TS, t, since), NO_TS)
        went_up = above & (t - since >= self.hold_enter)
        since_b = self.below_since if rows is None else self.below_since[rows]
        since_b = np.where(below, np.where(since_b == NO_TS, t, since_b), NO_TS)
        went_down = below & (t - since_b >= self.hold_exit)
        if rows is None:
            self.above_since, self.below_since = since, since_b
        else:
            self.above_since[rows], self.below_since[rows] = since, since_b
        active = (prev | went_up) & ~went_down
        self._store(rows, active)
        return level_of(active, self.level_values)

    def quiet(self, rows: IntArray, ts: IntArray, value: FloatArray, n: IntArray) -> Commit | None:
        """Several readings per subject at once, when none of them can raise a level.

        `rows` unique subjects; `ts` (k, m) and `value` (k, m, n_columns) hold row i's readings
        in their first `n[i]` columns, in event-time order. When no subject is active and no
        reading is above any threshold, every level stays NONE and only the exit timers move:
        returns the function that stores them (exactly where `update` reading by reading would
        leave them). Otherwise None, and nothing has changed.
        """
        if self.active[rows].any():
            return None
        since = _quiet_since(self.enter, self.exit, self.below_since, np.ascontiguousarray(rows, np.int64),
                             np.ascontiguousarray(ts, np.int64), np.ascontiguousarray(value, np.float64),
                             np.ascontiguousarray(n, np.int64), self._timed)
        if since is None:
            return None
        if not self._timed:
            return unchanged

        def store() -> None:
            self.above_since[rows] = NO_TS
            self.below_since[rows] = since

        return store

    def _store(self, rows: IntArray | None, active: BoolArray) -> None:
        if rows is None:
            self.active = active
        else:
            self.active[rows] = active

    def levels(self, rows: IntArray | None = None) -> npt.NDArray[np.int8]:
        return level_of(self.active if rows is None else self.active[rows], self.level_values)


def level_of(active: BoolArray, level_values: npt.NDArray[np.int8]) -> npt.NDArray[np.int8]:
    """Level of the highest active column per row, 0 where none is active."""
    out = np.zeros(active.shape[0], np.int8)
    # column by column: faster than an axis-1 reduction over a handful of columns
    for c in range(active.shape[1]):
        np.maximum(out, active[:, c] * level_values[c], out=out)
    return out


@kernel
def _quiet_since(enter: FloatArray, exit_: FloatArray, below_since: IntArray, rows: IntArray, ts: IntArray,
                 value: FloatArray, n: IntArray, timed: bool) -> IntArray | None:
    """None if a reading is above an enter threshold; else each (subject, column)'s exit timer
    after the readings: from the first reading of the trailing run of readings below (a
    reading in the band restarts it), carried over if every reading was below."""
    k, _, columns = value.shape
    since = np.full((k, columns), NO_TS, np.int64)
    for i in range(k):
        r = rows[i]
        for c in range(columns):
            e, x = enter[r, c], exit_[r, c]
            last_not = -1
            for j in range(n[i]):
                v = value[i, j, c]
                if v >= e:  # NaN thresholds (absent levels) compare False
                    return None
                if not (v < x or np.isnan(e)):
                    last_not = j
            if not timed:
                continue
            if last_not < 0:
                since[i, c] = ts[i, 0] if below_since[r, c] == NO_TS else below_since[r, c]
            elif last_not + 1 < n[i]:
                since[i, c] = ts[i, last_not + 1]
    return since
