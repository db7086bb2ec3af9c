"""Quiet stretches: many readings per sensor evaluated in one pass instead of round by round.

A batch that holds several readings per sensor (a gateway flushing its buffer, a backlog after
an outage, a replay) is evaluated by the engine in event-time rounds, one reading per sensor
each, and a round costs the same hundred-odd small array operations whether it holds ten
readings or ten thousand. Most such stretches are quiet: nothing is raised, nothing is open,
no reading is flagged. This pass proves that for a whole stretch of one kind at once and then
stores exactly the state the rounds would have left (windows, running sums, fault and exit
timers), so the result never depends on which path ran. Every proof works on (sensors x
readings) arrays: readings into the windows as one block, every measure at every reading's
own time, every threshold against every value.

It declines, changing nothing, when any part is not provably quiet (a level open or about to
open, a fault flagged or open, a flapping subject, an area rule with flapping suppression, a
cumulative gauge, a reading out of order or repeated, a stretch that would push readings still
inside a window out of the ring); the rounds then do the work as before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from detectors.accumulate import first_after
from detectors.windows import Commit, FloatArray, IntArray, leading, subjects_in, unchanged

if TYPE_CHECKING:
    from rules.engine import KindState, RuleState

MIN_ROUNDS = 2  # one reading per sensor is already a single round


def quiet_rounds(ks: KindState, rows: IntArray, ts: IntArray, value: FloatArray, rank: IntArray,
                 total: int) -> int:
    """Evaluate leading rounds of a kind's readings (sorted by row, then ts; `rank` = round of
    each, `total` rounds in all) in one pass, piece by piece while the stretch stays quiet;
    returns how many rounds were done (0: none, the rounds do it all)."""
    done = piece = 0
    while total - done >= MIN_ROUNDS:
        if piece:
            rest = rank >= piece  # rank counts from the start of the rest
            rows, ts, value, rank = rows[rest], ts[rest], value[rest], rank[rest] - piece
        fits = _fits(ks, rows, ts, rank)
        if fits < MIN_ROUNDS:
            break
        piece = min(fits, total - done)
        if piece < total - done:
            head = rank < piece
            ok = quiet_pass(ks, rows[head], ts[head], value[head])
        else:
            ok = quiet_pass(ks, rows, ts, value)
        if not ok:
            break
        done += piece
    return done


def _fits(ks: KindState, rows: IntArray, ts: IntArray, rank: IntArray) -> int:
    """Rounds the ring takes at once: readings inside a window of a row's first reading of the
    piece must still be there when its last one is in, since measures are read from the ring."""
    if ks.plan.n_columns == 1:
        return int(rank.max()) + 1
    win = ks.windows
    starts = np.flatnonzero(rank == 0)
    u = rows[starts]
    held = win.end[u] - first_after(win, u, ts[starts] - win.span_ms)
    return int((win.capacity - held).min())


def quiet_pass(ks: KindState, rows: IntArray, ts: IntArray, value: FloatArray) -> bool:
    """Evaluate a kind's readings (sorted by row, then ts; the ring holds them all) in one pass
    if the stretch is quiet; False (nothing changed) when the rounds must do it."""
    n_all = rows.shape[0]
    first = np.ones(n_all, np.bool_)
    first[1:] = rows[1:] != rows[:-1]
    starts = np.flatnonzero(first)
    u = rows[starts]
    n = np.diff(np.append(starts, n_all))
    m = int(n.max())
    win = ks.windows
    if ks.counter is not None and ks.is_counter[u].any():
        return False
    if ((ts[1:] <= ts[:-1]) & ~first[1:]).any() or (ts[starts] <= win.last_ts[u]).any():
        return False  # repeated or out-of-order readings take the rounds' careful path
    if not all(_calm(rs, u) for rs in ks.rules):
        return False
    at = starts[:, None] + np.minimum(np.arange(m)[None, :], (n - 1)[:, None])
    t2, v2 = ts[at], value[at]
    commits: list[Commit] = []
    for fs in ks.faults:
        c = fs.quiet(u, t2, v2, n)
        if c is None:
            return False
        commits.append(c)
    if ks.rules:
        undo = win.append_runs(u, t2, v2, n)
        measures = _measures(ks, u, t2, v2, n, n_all)
        for rs in ks.rules:
            c = _rule(rs, u, t2, measures, n)
            if c is None:
                win.undo(undo)
                return False
            commits.append(c)
        if ks.accumulator is not None:
            ks.accumulator.valid[u] = False  # remembered window starts: found again next round
    for c in commits:
        c()
    return True


def _measures(ks: KindState, u: IntArray, t2: IntArray, v2: FloatArray, n: IntArray, total: int) -> FloatArray:
    """(k, m, columns) the kind's measures at each of the readings laid out (k, m); past
    row i's n[i] readings the values are unspecified. The padding repeats each row's last
    reading, whose measures are its own: while it is a small part of the layout (rows of a
    stretch hold about as many readings each), every slot is computed at once, with no mask
    to gather the readings by and scatter their measures back."""
    k, m = t2.shape
    if (k * m - total) * 8 <= total:
        return ks.plan.compute(ks.windows, ks.accumulator, np.repeat(u, m), v2.reshape(-1),
                               t=t2.reshape(-1)).reshape(k, m, -1)
    valid = leading(n, m)
    measures = np.full((k, m, ks.plan.n_columns), np.nan)
    measures[valid] = ks.plan.compute(ks.windows, ks.accumulator, np.broadcast_to(u[:, None], (k, m))[valid],
                                      v2[valid], t=t2[valid])
    return measures


def _calm(rs: RuleState, u: IntArray) -> bool:
    """Nothing raised or held for the rule's subjects among rows `u` (checked before any work)."""
    s, _ = subjects_in(rs.subject_of_row, u)
    if rs.raw[s].any() or rs.level[s].any():
        return False
    if rs.flap is None:
        return True
    return rs.area is None and not rs.flap.flapping[s].any()


def _rule(rs: RuleState, u: IntArray, t2: IntArray, measures: FloatArray, n: IntArray
          ) -> Commit | None:
    s, sel = subjects_in(rs.subject_of_row, u)
    if s.shape[0] == 0:
        return unchanged
    if sel is None:
        vals = measures[:, :, rs.cols]
    else:
        vals, t2, n = measures[sel][:, :, rs.cols], t2[sel], n[sel]
    store = rs.detector.quiet(s, t2, vals, n)
    if store is None or rs.area is None:
        return store
    last = vals[np.arange(s.shape[0]), n - 1]
    detector_store = store

    def store_area() -> None:
        detector_store()
        rs.values[s] = last  # an area rule words its region warnings from its members' last values

    return store_area
