"""Device-fault rules in the engine: reading faults per kind, and no data across the registry.

Reading faults (stuck, spike, out of range, drift) see each sensor's in-order readings before
the hazard windows do. A flagged reading is kept out of the windows; the flags drive a
one-column threshold detector whose exit hold is the rule's `clear_after`, so a fault warning
opens at the first flagged reading and resolves once the sensor has been clean that long (on
event time). A redelivered duplicate keeps the flag it had; a late reading can only be judged
by the stateless range check.

No data is judged on the wall clock by `check`, grouped by district: when more than
`feed_down.fraction` of a district's sensors (and at least `min_sensors`) are silent at once,
or when the caller says the feed itself is down (the collector lost the broker), one
"feed down" warning is raised for the district instead of a warning per sensor, and when the
feed returns every sensor of the district gets a full timeout before it can be called silent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from detectors.faults import Drift, OutOfRange, Spike, Stuck
from detectors.nodata import NoData
from detectors.threshold import ThresholdDetector
from detectors.windows import NO_TS, BoolArray, Commit, FloatArray, IntArray, subjects_in, unchanged
from rules.binding import FaultBinding

Levels = npt.NDArray[np.int8]
FEED = "feed_down"


def make_detector(b: FaultBinding) -> OutOfRange | Spike | Stuck | Drift:
    spec, n = b.spec, b.n_subjects
    nan = np.full(n, np.nan)
    if spec.detector == "out_of_range":
        return OutOfRange(b.params.get("min", nan), b.params.get("max", nan))
    if spec.detector == "spike":
        return Spike(b.params["max_jump"], spec.confirm)
    if spec.detector == "stuck":
        return Stuck(b.params.get("tolerance", np.zeros(n)), spec.duration_ms, spec.min_readings,
                     list(spec.ignore))
    if spec.detector == "drift":
        return Drift(b.neighbours, spec.tau_ms, spec.low, spec.high, spec.min_level,
                     spec.min_neighbours, spec.duration_ms, spec.every_ms)
    raise ValueError(f"{spec.detector} is not a reading fault")


@dataclass
class FaultState:
    """One reading-fault rule over the sensors of one kind."""

    binding: FaultBinding
    subject_of_row: IntArray  # kind window row -> subject, -1 if not selected
    detector: OutOfRange | Spike | Stuck | Drift
    signal: ThresholdDetector
    level: Levels
    last_ts: IntArray = field(default_factory=lambda: np.empty(0, np.int64))
    last_flag: BoolArray = field(default_factory=lambda: np.empty(0, np.bool_))

    @classmethod
    def build(cls, b: FaultBinding, subject_of_row: IntArray) -> FaultState:
        n = b.n_subjects
        signal = ThresholdDetector(np.ones((n, 1)), 0.0, 0, b.spec.clear_after_ms,
                                   levels=[int(b.spec.level)])
        return cls(b, subject_of_row, make_detector(b), signal, np.zeros(n, np.int8),
                   np.full(n, NO_TS, np.int64), np.zeros(n, np.bool_))

    def flags(self, rows: IntArray, ts: IntArray, value: FloatArray
              ) -> tuple[BoolArray, IntArray, Levels, Levels]:
        """Flags per reading, and (positions, old, new levels) of the subjects that changed."""
        s, pos = subjects_in(self.subject_of_row, rows)
        if s.shape[0] == 0:
            none = np.empty(0, np.int8)
            return np.zeros(rows.shape[0], np.bool_), np.empty(0, np.int64), none, none
        t, v = (ts, value) if pos is None else (ts[pos], value[pos])
        last = self.last_ts[s]
        newer = t > last
        det = self.detector
        if newer.all():  # the common case: every reading newer than the subject's last
            f = det.flags(s, v) if isinstance(det, OutOfRange | Spike) else det.flags(s, t, v)
            self.last_ts[s] = t
            self.last_flag[s] = f
            judged: IntArray | None = None
        else:
            same = t == last
            f = np.zeros(s.shape[0], np.bool_)
            if newer.any():
                i = np.flatnonzero(newer)
                f[i] = det.flags(s[i], v[i]) if isinstance(det, OutOfRange | Spike) else det.flags(s[i], t[i], v[i])
            f = np.where(same, self.last_flag[s], f)
            if isinstance(det, OutOfRange):
                f = np.where(~newer & ~same, det.flags(s, v), f)
            self.last_ts[s] = np.where(newer, t, last)
            self.last_flag[s] = np.where(newer | same, f, self.last_flag[s])
            judged = np.flatnonzero(newer | same)
        if pos is None:
            flagged = f
        else:
            flagged = np.zeros(rows.shape[0], np.bool_)
            flagged[pos] = f
        # only flagged readings and open warnings move the signal: for the others an update
        # would leave the level and every timer that matters where they are
        moving = f | (self.level[s] > 0)
        cand = np.flatnonzero(moving) if judged is None else judged[moving[judged]]
        if cand.shape[0] == 0:
            return flagged, cand, np.empty(0, np.int8), np.empty(0, np.int8)
        sc = s[cand]
        old = self.level[sc]
        new = self.signal.update(sc, t[cand], f[cand].astype(np.float64))
        self.level[sc] = new
        moved = np.flatnonzero(new != old)
        at = cand[moved] if pos is None else pos[cand[moved]]
        return flagged, at, old[moved], new[moved]

    def quiet(self, rows: IntArray, t: IntArray, v: FloatArray, n: IntArray) -> Commit | None:
        """Several in-order readings per row ((k, m), row i's first n[i]), none of them flagged
        and no warning open: the function that stores the state `flags` would leave, else None."""
        s, sel = subjects_in(self.subject_of_row, rows)
        if s.shape[0] == 0:
            return unchanged
        if sel is not None:
            t, v, n = t[sel], v[sel], n[sel]
        if (self.level[s] > 0).any() or (t[:, 0] <= self.last_ts[s]).any():
            return None
        detector = self.detector.quiet(s, t, v, n)
        if detector is None:
            return None
        last = t[np.arange(s.shape[0]), n - 1]

        def store() -> None:
            detector()
            self.last_ts[s] = last
            self.last_flag[s] = False

        return store


@dataclass
class NoDataState:
    """One no-data rule: silence per sensor, and feed-down per district."""

    binding: FaultBinding
    subject_of_sensor: IntArray  # registry index -> subject, -1
    detector: NoData
    level: Levels  # per subject
    district_of: IntArray  # per subject
    districts: list[str]
    feed_level: Levels  # per district
    feed_was_up: bool = True

    @classmethod
    def build(cls, b: FaultBinding, n_registry: int, district_codes: list[str], start_ms: int) -> NoDataState:
        sub = np.full(n_registry, -1, np.int64)
        sub[b.sensors] = np.arange(b.n_subjects)
        districts = list(dict.fromkeys(district_codes))
        index = {d: i for i, d in enumerate(districts)}
        return cls(b, sub, NoData(b.timeout_ms, start_ms), np.zeros(b.n_subjects, np.int8),
                   np.asarray([index[d] for d in district_codes], np.int64), districts,
                   np.zeros(len(districts), np.int8))

    def seen(self, sensors: IntArray, now_ms: int) -> IntArray:
        """Note readings; returns the subjects that were silent (their warnings resolve)."""
        s = self.subject_of_sensor[sensors]
        s = s[s >= 0]
        self.detector.seen(s, now_ms)  # a sensor twice in the batch is simply seen twice
        back = np.unique(s[self.level[s] > 0])
        self.level[back] = 0
        return back

    def check(self, now_ms: int, feed_up: bool) -> tuple[IntArray, Levels, IntArray, Levels]:
        """(subjects, new levels) that changed, and (districts, new feed levels) that changed."""
        spec = self.binding.spec
        lvl = np.int8(int(spec.level))
        if feed_up and not self.feed_was_up:
            # the collector is back: nothing could arrive while it was away
            self.detector.grace(self.level == 0, now_ms)
        self.feed_was_up = feed_up
        silent = self.detector.silent(now_ms)
        n_d = len(self.districts)
        total = np.bincount(self.district_of, minlength=n_d)
        quiet = np.bincount(self.district_of, weights=silent & (self.level == 0), minlength=n_d)
        quiet_all = np.bincount(self.district_of, weights=silent, minlength=n_d)
        if not feed_up:
            down = np.ones(n_d, np.bool_)
        elif spec.feed_fraction > 0:
            # sensors already known silent do not make a feed outage; the newly silent do
            down = (quiet > spec.feed_fraction * total) & (quiet >= spec.feed_min)
            down |= (self.feed_level > 0) & (quiet_all > spec.feed_fraction * total)
        else:
            down = np.zeros(n_d, np.bool_)
        new_feed = np.where(down, lvl, 0).astype(np.int8)
        came_back = (self.feed_level > 0) & ~down
        if came_back.any():
            # everyone in a district whose feed returns gets a full timeout from now
            self.detector.grace(came_back[self.district_of] & (self.level == 0), now_ms)
            silent = self.detector.silent(now_ms)
        feed_changed = np.flatnonzero(new_feed != self.feed_level)
        self.feed_level = new_feed
        # per-sensor warnings only where the district's feed is up; silence does not resolve
        # a warning (a reading does)
        judged = ~down[self.district_of]
        new = np.where(judged & silent, lvl, self.level).astype(np.int8)
        changed = np.flatnonzero(new != self.level)
        self.level = new
        return changed, new[changed], feed_changed, new_feed[feed_changed]
