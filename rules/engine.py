"""The rules engine: readings in, level changes out.

Per sensor kind the engine keeps one set of ring-buffer windows (rows = the kind's bound
sensors), the decoders of cumulative gauges, the reading-fault rules of the kind, and per
hazard rule one threshold detector whose columns are the rule's (measure, level) conditions.
A batch is processed kind by kind in event-time rounds: round r holds the r-th reading (in ts
order) of every sensor in the batch, so each reading is evaluated at its own timestamp and the
result does not depend on how readings were split into batches. Area rules count their regions
after the rounds, in event time across sensors (`_flush_area`); the neighbour drift check alone
reads other sensors round by round (docs/rules.md). Work in a round is vectorised
over its sensors; Python loops run per round, per rule and per change. All measures of a kind
(rolling sums, trends, forecasts) are computed once per round for the union of its rules.
Many rounds at once (a backlog) are first offered to `rules/quiet.py`, which evaluates a
provably quiet stretch in one pass with exactly the result of its rounds.

In a round a reading goes: counter decoding (gauges that report a running total) -> reading
faults (a flagged reading never reaches the hazard windows) -> windows -> measures -> each
rule's detector -> flapping suppression or area aggregation -> level changes.

A reading that arrives later than a newer reading of the same sensor is stored in its window
in place (later sums include it) but not evaluated: the detectors never go back in event time.
A redelivered duplicate (same ts, same value) changes nothing. The wall clock is used only by
the no-data rules (`check_nodata`, called on a timer, and the arrival of readings).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from detectors import load_kernels
from detectors.accumulate import Accumulator
from detectors.area import AreaCounter
from detectors.counter import CounterDecoder
from detectors.flap import FlapGuard
from detectors.forecast import eta_accumulation, eta_value
from detectors.threshold import ThresholdDetector
from detectors.trend import slope_of
from detectors.windows import NO_TS, REPLACED_NEWEST, Windows, capacity_for
from ews.levels import HAZARD_LEVELS, Level
from ews.models import LevelChange, ReadingBatch
from ews.sensors import SensorRegistry
from rules.binding import Binding, FaultBinding, bind, bind_fault
from rules.devices import FaultState, NoDataState
from rules.measures import MeasurePlan
from rules.model import RuleSet
from rules.quiet import quiet_rounds

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
Levels = npt.NDArray[np.int8]
RECENT_READINGS = 6  # readings attached to a level change
VALUE_WINDOW_SLOTS = 8  # enough history for the readings of a change on value-only kinds
COUNTER_TAG = ("reports", "cumulative")  # sensor tag of gauges that report a running total
ROLLOVER_PARAM = "counter_rollover"
DEVICE = "device"
Out = list[tuple[int, int, int, LevelChange]]  # (event ts, rule order, subject order, change)


@dataclass
class RuleState:
    binding: Binding
    subject_of_row: IntArray  # kind window row -> subject index, -1 if the rule skips it
    all_rows: bool  # subjects are exactly the kind's rows, in order
    cols: IntArray  # measure-matrix column of each detector column
    detector: ThresholdDetector
    raw: Levels  # the detector's level per subject
    level: Levels  # the reported level per subject (after flapping suppression)
    which: npt.NDArray[np.int16]  # detector column that set the reported level
    flap: FlapGuard | None = None
    area: AreaCounter | None = None
    values: FloatArray = field(default_factory=lambda: np.empty((0, 0)))  # area: last values
    group_raw: Levels = field(default_factory=lambda: np.empty(0, np.int8))  # area: k-of-n level
    group_level: Levels = field(default_factory=lambda: np.empty(0, np.int8))  # area: reported
    # area: (subjects, ts, raw before, raw after, values) of each round of the batch, aggregated
    # in event-time order once the batch's rounds are done (_flush_area)
    pending: list[tuple[IntArray, IntArray, Levels, Levels, FloatArray]] = field(default_factory=list)

    @property
    def spec_id(self) -> str:
        return self.binding.spec.id


@dataclass
class KindState:
    kind: str
    unit: str
    interval_ms: int
    sensors: IntArray  # window row -> registry index
    windows: Windows
    accumulator: Accumulator | None
    plan: MeasurePlan
    counter: CounterDecoder | None
    is_counter: npt.NDArray[np.bool_]
    faults: list[FaultState] = field(default_factory=list)
    rules: list[RuleState] = field(default_factory=list)
    mark: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))  # scratch, one per row


def _subset(b: FaultBinding, rows: IntArray) -> FaultBinding:
    """The part of a fault binding on some of its subjects (neighbours remapped)."""
    remap = np.full(b.n_subjects, -1, np.int64)
    remap[rows] = np.arange(rows.shape[0])
    nb = b.neighbours[rows] if b.neighbours.size else b.neighbours
    if nb.size:
        nb = np.where(nb >= 0, remap[np.maximum(nb, 0)], -1)
    return FaultBinding(b.spec, b.sensors[rows], {k: v[rows] for k, v in b.params.items()},
                        b.timeout_ms[rows], nb)


class RuleEngine:
    def __init__(self, ruleset: RuleSet, sensors: SensorRegistry, start_ms: int | None = None):
        self.ruleset = ruleset
        self.registry = sensors
        self.start_ms = int(time.time() * 1000) if start_ms is None else int(start_ms)
        self.bind_problems: list[str] = []
        load_kernels()
        self.quiet_stretches = True  # several readings per sensor: try the one-pass path first
        self.bindings: list[Binding] = []
        for spec in ruleset.rules:
            b, problems = bind(spec, sensors)
            self.bind_problems += problems
            if b.n_subjects:
                self.bindings.append(b)
        self.fault_bindings: list[FaultBinding] = []
        for fspec in ruleset.faults:
            fb, problems = bind_fault(fspec, sensors)
            self.bind_problems += problems
            if fb.n_subjects:
                self.fault_bindings.append(fb)
        ids = [b.spec.id for b in self.bindings] + [fb.spec.id for fb in self.fault_bindings]
        self._rule_order = {rid: i for i, rid in enumerate(ids)}
        n = len(sensors)
        self._kind_of_sensor = np.full(n, -1, np.int64)
        self._row_of_sensor = np.full(n, -1, np.int64)
        self._heard = np.zeros(n, np.bool_)  # scratch for `_distinct`, all False between calls
        self._kinds: list[KindState] = []
        kind_of = np.asarray([s.kind for s in sensors.sensors]) if n else np.empty(0, str)
        reading_faults = [fb for fb in self.fault_bindings if fb.spec.detector != "no_data"]
        kinds = dict.fromkeys([*(b.spec.kind for b in self.bindings),
                               *(str(kind_of[i]) for fb in reading_faults for i in fb.sensors)])
        for kind in kinds:
            parts = []
            for fb in reading_faults:
                rows = np.flatnonzero(kind_of[fb.sensors] == kind)
                if rows.shape[0]:
                    parts.append(_subset(fb, rows))
            self._kinds.append(self._build_kind(kind, [b for b in self.bindings if b.spec.kind == kind], parts))
        districts = [s.community[:6] for s in sensors.sensors]
        self._nodata = [
            NoDataState.build(fb, n, [districts[int(i)] for i in fb.sensors], self.start_ms)
            for fb in self.fault_bindings if fb.spec.detector == "no_data"
        ]

    # --- construction -------------------------------------------------------------------------

    def _build_kind(self, kind: str, bindings: list[Binding], faults: list[FaultBinding]) -> KindState:
        k = len(self._kinds)
        members = np.unique(np.concatenate([*(b.sensors for b in bindings), *(f.sensors for f in faults)]))
        self._kind_of_sensor[members] = k
        self._row_of_sensor[members] = np.arange(members.shape[0])
        plan = MeasurePlan.for_rules(bindings)
        spec = self.registry.kinds.get(kind)
        interval_ms = int((spec.interval_s if spec else 60) * 1000)
        if plan.longest_ms:
            span = plan.longest_ms
            cap = capacity_for(span, interval_ms)
        else:
            cap = VALUE_WINDOW_SLOTS
            span = cap * interval_ms
        windows = Windows(members.shape[0], cap, span)
        if plan.fits:
            # the readings one fit window holds at the nominal interval, and a quarter more
            plan.gather = min(windows.capacity, math.ceil(max(plan.fits) / interval_ms * 1.25) + 2)
        acc = Accumulator(windows, np.asarray(plan.spans, np.int64)) if plan.spans else None
        sensors = [self.registry.sensors[int(i)] for i in members]
        is_counter = np.asarray([s.tags.get(COUNTER_TAG[0]) == COUNTER_TAG[1] for s in sensors], np.bool_)
        counter = None
        if is_counter.any():
            counter = CounterDecoder(np.asarray([s.params.get(ROLLOVER_PARAM, np.nan) for s in sensors]))
        ks = KindState(kind, spec.unit if spec else "", interval_ms, members, windows, acc, plan,
                       counter, is_counter, mark=np.zeros(members.shape[0], np.int64))
        for fb in faults:
            sub = np.full(members.shape[0], -1, np.int64)
            sub[self._row_of_sensor[fb.sensors]] = np.arange(fb.n_subjects)
            ks.faults.append(FaultState.build(fb, sub))
        for b in bindings:
            ks.rules.append(self._build_rule(ks, b))
        return ks

    def _build_rule(self, ks: KindState, b: Binding) -> RuleState:
        rows = self._row_of_sensor[b.sensors]
        sub = np.full(ks.sensors.shape[0], -1, np.int64)
        sub[rows] = np.arange(b.n_subjects)
        all_rows = bool(b.n_subjects == ks.sensors.shape[0] and (rows == np.arange(b.n_subjects)).all())
        cols = np.asarray([ks.plan.columns[ks.plan.key_of(b, m)] for m in b.column_measure], np.int64)
        levels = np.asarray(b.column_level, np.int64)
        det = ThresholdDetector(b.column_enter, b.hysteresis[levels - 1] if levels.size else 0.0,
                                b.spec.hold_ms, b.spec.hold_exit_ms, levels=levels)
        n = b.n_subjects
        rs = RuleState(b, sub, all_rows, cols, det, np.zeros(n, np.int8), np.zeros(n, np.int8),
                       np.zeros(n, np.int16))
        n_subjects_shown = n
        if b.spec.area_by is not None:
            rs.area = AreaCounter(b.group_of, b.need)
            rs.values = np.full((n, cols.shape[0]), np.nan)
            rs.group_level = np.zeros(len(b.groups), np.int8)
            rs.group_raw = np.zeros(len(b.groups), np.int8)
            n_subjects_shown = len(b.groups)
        if b.spec.flap_changes:
            rs.flap = FlapGuard(n_subjects_shown, b.spec.flap_changes, b.spec.flap_within_ms)
        return rs

    # --- hot path -----------------------------------------------------------------------------

    def process(self, batch: ReadingBatch, now_ms: int | None = None, replay: bool = False) -> list[LevelChange]:
        """Feed a batch; return the level changes it caused, in event-time order.

        `now_ms` is the arrival time for the no-data rules (default: the wall clock); a
        `replay` (rebuilding state from stored history) does not count as arrival.
        """
        if len(batch) == 0:
            return []
        sensor = np.asarray(batch.sensor, np.int64)
        ts = np.asarray(batch.ts_ms, np.int64)
        value = np.asarray(batch.value, np.float64)
        ok = (sensor >= 0) & (sensor < self._kind_of_sensor.shape[0]) & np.isfinite(value)
        out: Out = []
        if not replay and self._nodata:
            now = int(time.time() * 1000) if now_ms is None else int(now_ms)
            heard = self._distinct(sensor[ok])
            for nd in self._nodata:
                for s in nd.seen(heard, now):
                    out.append(self._nodata_change(nd, int(s), now, Level(int(nd.binding.spec.level)),
                                                   Level.NONE))
        kind = np.where(ok, self._kind_of_sensor[np.where(ok, sensor, 0)], -1)
        present = np.flatnonzero(np.bincount(kind[kind >= 0], minlength=len(self._kinds)))
        for k in present:
            idx = np.flatnonzero(kind == k) if present.shape[0] > 1 or not (kind >= 0).all() else None
            ks = self._kinds[int(k)]
            if idx is None:
                self._process_kind(ks, sensor, ts, value, batch.drill, out)
            else:
                self._process_kind(ks, sensor[idx], ts[idx], value[idx], batch.drill, out)
            for rs in ks.rules:
                if rs.pending:
                    self._flush_area(ks, rs, batch.drill, out)
        out.sort(key=lambda c: (c[0], c[1], c[2]))
        return [c[3] for c in out]

    def _distinct(self, sensor: IntArray) -> IntArray:
        """The sensors of a batch, each once and in order: a batch of a gateway's backlog holds
        each sensor many times, and the no-data rules need only who was heard."""
        self._heard[sensor] = True
        out: IntArray = np.flatnonzero(self._heard)
        self._heard[out] = False
        return out

    def _process_kind(self, ks: KindState, sensor: IntArray, ts: IntArray, value: FloatArray, drill: bool,
                      out: Out) -> None:
        rows = self._row_of_sensor[sensor]
        n_rows = ks.sensors.shape[0]
        # one reading per sensor (the common case) is found in O(batch), not O(sensors): a
        # position written twice keeps only its last writer
        pos = np.arange(rows.shape[0])
        ks.mark[rows] = pos
        if np.array_equal(ks.mark[rows], pos):
            if rows.shape[0] == n_rows:
                # every sensor of the kind once: put them in row order, the detectors' fast path
                perm = np.empty(n_rows, np.int64)
                perm[rows] = np.arange(n_rows)
                self._round(ks, np.arange(n_rows), ts[perm], value[perm], drill, out)
            else:
                # in row order the per-sensor state is read front to back, not at random
                order = np.argsort(rows)
                self._round(ks, rows[order], ts[order], value[order], drill, out)
            return
        # by row, then event time; duplicates keep their arrival order. Readings mostly arrive
        # in event-time order, and then a stable sort by row alone is that order: a radix
        # sort on 16 bits, a third of a two-key sort's time
        order = np.argsort(rows.astype(np.int16) if n_rows <= 1 << 15 else rows, kind="stable")
        rows, ts, value = rows[order], ts[order], value[order]
        n = rows.shape[0]
        first = np.ones(n, np.bool_)
        first[1:] = rows[1:] != rows[:-1]
        if ((ts[1:] < ts[:-1]) & ~first[1:]).any():
            order = np.lexsort((ts, rows))  # stable: the row sort kept the arrival order
            rows, ts, value = rows[order], ts[order], value[order]
        rank = np.arange(n) - np.maximum.accumulate(np.where(first, np.arange(n), 0))
        rounds = int(rank.max()) + 1
        done = quiet_rounds(ks, rows, ts, value, rank, rounds) if self.quiet_stretches else 0
        if done == rounds:
            return  # all of it was one quiet stretch
        by_round = np.lexsort((rows, rank))
        bounds = np.searchsorted(rank[by_round], np.arange(rounds + 1))
        for r in range(done, rounds):
            sel = by_round[bounds[r]:bounds[r + 1]]
            self._round(ks, rows[sel], ts[sel], value[sel], drill, out)

    def _round(self, ks: KindState, rows: IntArray, ts: IntArray, value: FloatArray, drill: bool,
               out: Out) -> None:
        full = rows.shape[0] == ks.sensors.shape[0]  # then rows == arange (see _process_kind)
        keep: npt.NDArray[np.bool_] | None = None
        if ks.counter is not None:
            m = ks.is_counter[rows]
            if m.any():
                inc, kept = ks.counter.update(rows[m], ts[m], value[m])
                value = value.copy()
                value[m] = inc
                keep = np.ones(rows.shape[0], np.bool_)
                keep[m] = kept
        for fs in ks.faults:
            flagged, pos, old, new = fs.flags(rows, ts, value)
            for p, a, b in zip(pos, old, new, strict=True):
                out.append(self._fault_change(ks, fs, int(rows[p]), int(ts[p]), float(value[p]), int(a),
                                              int(b), drill))
            if flagged.any():
                keep = ~flagged if keep is None else keep & ~flagged
        if not ks.rules:
            return
        win = ks.windows
        if keep is not None and keep.all():
            keep = None
        if keep is not None:
            if full and (win.last_ts[rows[~keep]] != NO_TS).all():
                # a few readings kept out of a full round: the round stays full, and their
                # sensors are evaluated again at their newest stored reading, which changes
                # nothing (a repeated reading is idempotent), so the fast path is kept
                outcome = win.insert(rows[keep], ts[keep], value[keep])
                stale = ~keep
                stale[np.flatnonzero(keep)[outcome > REPLACED_NEWEST]] = True
                self._restate(ks, rows, ts, value, stale)
            else:
                rows, ts, value = rows[keep], ts[keep], value[keep]
                full = False
                if rows.shape[0] == 0:
                    return
                keep = None
        if keep is None:
            outcome = win.insert(rows, ts, value)
            fresh = outcome <= REPLACED_NEWEST
            if not fresh.all():
                stale = ~fresh
                if full and (win.last_ts[rows[stale]] != NO_TS).all():
                    self._restate(ks, rows, ts, value, stale)
                else:
                    rows, ts, value = rows[fresh], ts[fresh], value[fresh]
                    full = False
                    if rows.shape[0] == 0:
                        return
        measures = ks.plan.compute(win, ks.accumulator, rows, value)
        for rs in ks.rules:
            self._rule_round(ks, rs, rows, ts, measures, drill, out, full)

    @staticmethod
    def _restate(ks: KindState, rows: IntArray, ts: IntArray, value: FloatArray, which: npt.NDArray[np.bool_]
                 ) -> None:
        """Put each `which` sensor's newest stored reading in place of its reading (in place)."""
        r = rows[which]
        t, v, _ = ks.windows.newest(r)
        ts[which] = t
        value[which] = v

    def _rule_round(self, ks: KindState, rs: RuleState, rows: IntArray, ts: IntArray, measures: FloatArray,
                    drill: bool, out: Out, full: bool) -> None:
        if rs.all_rows:
            s, pos = rows, None
        else:
            subj = rs.subject_of_row[rows]
            pos = np.flatnonzero(subj >= 0)
            if pos.shape[0] == 0:
                return
            s = subj[pos]
        t = ts if pos is None else ts[pos]
        vals = (measures if pos is None else measures[pos])[:, rs.cols]
        fast = full and rs.all_rows
        raw_new = rs.detector.update(None if fast else s, t, vals)
        raw_old = rs.raw.copy() if fast else rs.raw[s]
        if fast:
            rs.raw = raw_new
        else:
            rs.raw[s] = raw_new
        if rs.area is not None:
            rs.pending.append((s, t, raw_old, raw_new.copy(), vals))  # raw_new may be rs.raw itself
            return
        shown_old = rs.level if fast else rs.level[s]
        shown = raw_new if rs.flap is None else rs.flap.report(s, t, raw_old, raw_new, shown_old)
        changed = np.flatnonzero(shown != shown_old)
        for i in changed:
            row = int(rows[i] if pos is None else rows[pos[i]])
            out.append(self._change(ks, rs, row, int(s[i]), int(t[i]), int(shown_old[i]), int(shown[i]),
                                    vals[i], drill))
        if fast:
            rs.level = shown.copy() if shown is raw_new else shown
        else:
            rs.level[s] = shown

    def _flush_area(self, ks: KindState, rs: RuleState, drill: bool, out: Out) -> None:
        """Aggregate an area rule's sensor levels of a batch in event-time order.

        Rounds take the r-th reading of every sensor, so in a batch of hours per sensor (a
        backlog, a gateway's buffer) one round can pair one sensor's 06:00 with another's
        09:00; counted round by round, a region would reach k of n at times its sensors never
        shared. Here every sensor's level moves are replayed in time order across the region:
        a region changes at the reading that makes or breaks its k, whatever the batching.
        """
        parts, rs.pending = rs.pending, []
        if len(parts) == 1:
            self._area_round(ks, rs, *parts[0], drill, out)
            return
        s, t, old, new = (np.concatenate([p[i] for p in parts]) for i in range(4))
        vals = np.concatenate([p[4] for p in parts])
        order = np.argsort(t, kind="stable")  # a sensor's own readings keep their order
        s, t, old, new, vals = s[order], t[order], old[order], new[order], vals[order]
        final = rs.raw
        rs.raw = final.copy()
        first = np.unique(s, return_index=True)[1]
        rs.raw[s[first]] = old[first]  # each sensor as it was before the batch
        # stop at every time a level moves (every reading's time where flapping is judged)
        stops = t if rs.flap is not None else t[new != old]
        ends = np.searchsorted(t, np.unique(stops), side="right").tolist()
        if not ends or ends[-1] != t.shape[0]:
            ends.append(t.shape[0])
        a = 0
        for b in ends:
            cs, ct, cn = s[a:b], t[a:b], new[a:b]
            last = cs.shape[0] - 1 - np.unique(cs[::-1], return_index=True)[1]  # each sensor's newest
            rs.raw[cs[last]] = cn[last]
            self._area_round(ks, rs, cs, ct, old[a:b], cn, vals[a:b], drill, out)
            a = b
        rs.raw = final

    def _area_round(self, ks: KindState, rs: RuleState, s: IntArray, t: IntArray, raw_old: Levels,
                    raw_new: Levels, vals: FloatArray, drill: bool, out: Out) -> None:
        assert rs.area is not None
        rs.values[s] = vals
        moved = np.flatnonzero(raw_new != raw_old)
        groups = rs.area.move(s[moved], raw_old[moved], raw_new[moved]) if moved.shape[0] else (
            np.empty(0, np.int64))
        group_of = rs.binding.group_of
        # quiet periods of flapping regions end at any reading of their sensors
        touched = np.unique(np.concatenate([groups, group_of[s]])) if rs.flap is not None else groups
        if touched.shape[0] == 0:
            return
        latest = np.full(rs.group_level.shape[0], np.iinfo(np.int64).min, np.int64)
        np.maximum.at(latest, group_of[s], t)
        at = latest[touched]
        new_raw = rs.area.levels(touched)
        old_shown = rs.group_level[touched]
        shown = new_raw if rs.flap is None else rs.flap.report(touched, at, rs.group_raw[touched], new_raw,
                                                               old_shown)
        rs.group_raw[touched] = new_raw
        for j in np.flatnonzero(shown != old_shown):
            out.append(self._region_change(ks, rs, int(touched[j]), int(at[j]), int(old_shown[j]),
                                           int(shown[j]), drill))
        rs.group_level[touched] = shown

    # --- level changes ------------------------------------------------------------------------

    def _column_for(self, rs: RuleState, subject: int, level: int) -> int:
        """The first detector column at `level` that is active for the subject."""
        lv = rs.detector.level_values
        active = rs.detector.active[subject]
        for c in range(lv.shape[0]):
            if lv[c] == level and active[c]:
                return c
        return int(np.flatnonzero(lv == level)[0]) if (lv == level).any() else 0

    def _change(self, ks: KindState, rs: RuleState, row: int, subject: int, t: int, before: int, after: int,
                vals: FloatArray, drill: bool) -> tuple[int, int, int, LevelChange]:
        spec = rs.binding.spec
        if after > 0:
            col = self._column_for(rs, subject, after)
            rs.which[subject] = col
        else:
            col = int(rs.which[subject])
        measure = rs.binding.column_measure[col] if rs.binding.column_measure else "value"
        threshold = float(rs.detector.enter[subject, col]) if rs.detector.enter.shape[1] else None
        value = float(vals[col]) if vals.shape[0] > col else float("nan")
        predicted: int | None = None
        lead: float | None = None
        fc = spec.forecasts.get(measure)
        if fc is not None:
            base = fc.of
            value = self._current(ks, rs, row, t, base)
            if after > before and threshold is not None:
                eta = self._eta(ks, row, t, fc, threshold, spec.windows_ms.get(base, 0))
                if eta is not None:
                    predicted, lead = t + round(eta), eta / 1000
            measure = base
        sensor = self.registry.sensors[int(ks.sensors[row])]
        change = LevelChange(
            rule_id=spec.id, rule_version=spec.version, kind=ks.kind, subject=sensor.id,
            community=sensor.community, measure=ks.kind if measure == "value" else measure,
            unit=ks.unit if measure not in spec.trends_ms else f"{ks.unit}/h",
            before=Level(before), after=Level(after), value=value, threshold=threshold,
            event_ts_ms=t, readings=ks.windows.last(row, RECENT_READINGS, until_ts=t), drill=drill,
            rule_name=spec.name, predicted_ts_ms=predicted, lead_s=lead,
        )
        return (t, self._rule_order[spec.id], int(ks.sensors[row]), change)

    def _current(self, ks: KindState, rs: RuleState, row: int, t: int, measure: str) -> float:
        """The observed value of a base measure (`value` or a window) at a sensor's reading t."""
        spec = rs.binding.spec
        if measure == "value":
            pts = ks.windows.last(row, 1, until_ts=t)
            return pts[-1][1] if pts else float("nan")
        w = spec.windows_ms[measure]
        pts = ks.windows.last(row, ks.windows.capacity, until_ts=t)
        return round(sum(v for ts, v in pts if t - w < ts <= t), 6)

    def _eta(self, ks: KindState, row: int, t: int, fc: object, threshold: float, window_ms: int) -> float | None:
        from rules.model import Forecast

        assert isinstance(fc, Forecast)
        pts = ks.windows.last(row, ks.windows.capacity, until_ts=t)
        if fc.of == "value":
            a, b = slope_of(pts, t, fc.fit_ms)
            return eta_value(a, b, threshold)
        return eta_accumulation(pts, t, threshold, window_ms, fc.fit_ms, fc.horizon_ms)

    def _region_change(self, ks: KindState, rs: RuleState, group: int, t: int, before: int, after: int,
                       drill: bool) -> tuple[int, int, int, LevelChange]:
        b = rs.binding
        spec = b.spec
        lvl = after if after > 0 else before
        cols = [c for c, lv in enumerate(b.column_level) if lv == lvl]
        col = cols[0] if cols else 0
        members = np.flatnonzero((b.group_of == group) & (rs.raw >= lvl)) if after > 0 else (
            np.flatnonzero(b.group_of == group))
        value, threshold, readings = float("nan"), None, []
        if members.shape[0] and rs.values.shape[1]:
            vals = rs.values[members, col]
            best = int(members[int(np.nanargmax(vals))]) if not np.isnan(vals).all() else int(members[0])
            value = float(rs.values[best, col])
            threshold = float(rs.detector.enter[best, col])
            readings = ks.windows.last(int(self._row_of_sensor[b.sensors[best]]), RECENT_READINGS, until_ts=t)
        measure = b.column_measure[col] if b.column_measure else "value"
        if measure in spec.forecasts:
            measure = spec.forecasts[measure].of
        code = b.groups[group]
        change = LevelChange(
            rule_id=spec.id, rule_version=spec.version, kind=ks.kind, subject=code, community=code,
            measure=ks.kind if measure == "value" else measure, unit=ks.unit, before=Level(before),
            after=Level(after), value=value, threshold=threshold, event_ts_ms=t, readings=readings,
            drill=drill, rule_name=spec.name,
        )
        return (t, self._rule_order[spec.id], -1 - group, change)

    def _fault_change(self, ks: KindState, fs: FaultState, row: int, t: int, value: float, before: int,
                      after: int, drill: bool) -> tuple[int, int, int, LevelChange]:
        spec = fs.binding.spec
        sensor = self.registry.sensors[int(ks.sensors[row])]
        threshold = None
        if spec.detector == "out_of_range":
            s = int(fs.subject_of_row[row])
            lo, hi = (fs.binding.params.get(k) for k in ("min", "max"))
            if hi is not None and value > hi[s]:
                threshold = float(hi[s])
            elif lo is not None and value < lo[s]:
                threshold = float(lo[s])
        change = LevelChange(
            rule_id=spec.id, rule_version=spec.version, kind=DEVICE, subject=sensor.id,
            community=sensor.community, measure=spec.detector, unit=ks.unit, before=Level(before),
            after=Level(after), value=value, threshold=threshold, event_ts_ms=t,
            readings=[(t, value)], drill=drill, rule_name=spec.name,
        )
        return (t, self._rule_order[spec.id], int(ks.sensors[row]), change)

    def _nodata_change(self, nd: NoDataState, subject: int, now_ms: int, before: Level, after: Level
                       ) -> tuple[int, int, int, LevelChange]:
        spec = nd.binding.spec
        idx = int(nd.binding.sensors[subject])
        sensor = self.registry.sensors[idx]
        silent_s = (now_ms - int(nd.detector.last_seen[subject])) / 1000
        change = LevelChange(
            rule_id=spec.id, rule_version=spec.version, kind=DEVICE, subject=sensor.id,
            community=sensor.community, measure="no_data", unit="s", before=before, after=after,
            value=round(silent_s, 3), threshold=float(nd.binding.timeout_ms[subject]) / 1000,
            event_ts_ms=now_ms, rule_name=spec.name,
        )
        return (now_ms, self._rule_order[spec.id], idx, change)

    def _feed_change(self, nd: NoDataState, district: int, now_ms: int, before: Level, after: Level
                     ) -> tuple[int, int, int, LevelChange]:
        spec = nd.binding.spec
        members = nd.district_of == district
        silent = int((nd.detector.silent(now_ms) & members).sum())
        code = nd.districts[district]
        change = LevelChange(
            rule_id=feed_rule_id(spec.id), rule_version=spec.version, kind=DEVICE, subject=code,
            community=code, measure="feed_down", unit="", before=before, after=after,
            value=float(silent), threshold=None, event_ts_ms=now_ms, rule_name=spec.name,
        )
        return (now_ms, self._rule_order[spec.id], -1 - district, change)

    # --- wall clock ---------------------------------------------------------------------------

    def check_nodata(self, now_ms: int | None = None, feed_up: bool = True) -> list[LevelChange]:
        """Judge silence now; call on a timer, whether or not readings arrive."""
        now = int(time.time() * 1000) if now_ms is None else int(now_ms)
        out: Out = []
        for nd in self._nodata:
            before_feed = nd.feed_level.copy()
            before = nd.level.copy()
            changed, new, feed_changed, feed_new = nd.check(now, feed_up)
            for d, f in zip(feed_changed, feed_new, strict=True):
                out.append(self._feed_change(nd, int(d), now, Level(int(before_feed[d])), Level(int(f))))
            for s, v in zip(changed, new, strict=True):
                out.append(self._nodata_change(nd, int(s), now, Level(int(before[s])), Level(int(v))))
        out.sort(key=lambda c: (c[0], c[1], c[2]))
        return [c[3] for c in out]

    # --- state carried across reloads and restarts -------------------------------------------

    def warm_rule(self, ks: KindState, rs: RuleState) -> None:
        """Bring a new or changed rule up to date from the readings its kind already holds."""
        win = ks.windows
        rows = np.flatnonzero(rs.subject_of_row >= 0)
        count = win.count[rows]
        start = win.end[rows] - count
        discard: Out = []
        for r in range(int(count.max()) if rows.shape[0] else 0):
            m = count > r
            sel = rows[m]
            slot = win.data.take(win.flat(sel, start[m] + r), axis=0)
            ts = slot[:, 0].astype(np.int64)
            measures = ks.plan.compute(win, ks.accumulator, sel, slot[:, 1], t=ts)
            self._rule_round(ks, rs, sel, ts, measures, False, discard, False)

    def describe(self, rule_id: str, subject: str, before: Level, after: Level,
                 now_ms: int | None = None) -> LevelChange | None:
        """A level change of one (rule, subject) worded from the current state (reload, restart)."""
        now = int(time.time() * 1000) if now_ms is None else int(now_ms)
        for nd in self._nodata:
            if rule_id == nd.binding.spec.id and subject in self.registry:
                s = int(nd.subject_of_sensor[self.registry.index[subject]])
                return self._nodata_change(nd, s, now, before, after)[3] if s >= 0 else None
            if rule_id == feed_rule_id(nd.binding.spec.id) and subject in nd.districts:
                return self._feed_change(nd, nd.districts.index(subject), now, before, after)[3]
        for ks in self._kinds:
            for rs in ks.rules:
                if rs.spec_id != rule_id:
                    continue
                b = rs.binding
                if rs.area is not None:
                    if subject not in b.groups:
                        return None
                    g = b.groups.index(subject)
                    rows = self._row_of_sensor[b.sensors[b.group_of == g]]
                    ts = [t for t in (_newest_t(ks, int(r)) for r in rows) if t is not None]
                    return self._region_change(ks, rs, g, max(ts, default=now), int(before), int(after),
                                               False)[3]
                idx = self.registry.index.get(subject)
                if idx is None or int(self._kind_of_sensor[idx]) < 0:
                    return None
                row = int(self._row_of_sensor[idx])
                s = int(rs.subject_of_row[row])
                t = _newest_t(ks, row)
                if s < 0:
                    return None
                if t is None:
                    vals = np.full(rs.cols.shape[0], np.nan)
                    t = now
                else:
                    r = np.asarray([row], np.int64)
                    value = np.asarray([ks.windows.last(row, 1)[-1][1]])
                    vals = ks.plan.compute(ks.windows, ks.accumulator, r, value,
                                           t=np.asarray([t], np.int64))[0, rs.cols]
                return self._change(ks, rs, row, s, t, int(before), int(after), vals, False)[3]
            for fs in ks.faults:
                if fs.binding.spec.id != rule_id or subject not in self.registry:
                    continue
                row = int(self._row_of_sensor[self.registry.index[subject]])
                if row < 0 or fs.subject_of_row[row] < 0:
                    return None
                pts = ks.windows.last(row, 1)
                t, v = pts[-1] if pts else (now, float("nan"))
                return self._fault_change(ks, fs, row, t, v, int(before), int(after), False)[3]
        return None

    def seed_open(self, open_levels: dict[tuple[str, str], Level]) -> None:
        """Take no-data and feed-down levels from the stored open warnings.

        Silence cannot be replayed from history (it is the absence of arrivals), so after a
        restart these levels are what the store says; a reading (or the feed's return) moves
        them on as usual.
        """
        for nd in self._nodata:
            rid, feed = nd.binding.spec.id, feed_rule_id(nd.binding.spec.id)
            for (rule, subj), lv in open_levels.items():
                if rule == rid and subj in self.registry:
                    s = int(nd.subject_of_sensor[self.registry.index[subj]])
                    if s >= 0:
                        nd.level[s] = int(lv)
                elif rule == feed and subj in nd.districts:
                    nd.feed_level[nd.districts.index(subj)] = int(lv)

    # --- inspection ---------------------------------------------------------------------------

    def levels(self, rule_id: str) -> dict[str, Level]:
        """Current level of every subject of a rule (sensor id or region code -> level)."""
        if rule_id not in self.rule_ids():
            raise KeyError(rule_id)
        return {subj: lv for (rid, subj), lv in self.all_levels(include_none=True).items() if rid == rule_id}

    def all_levels(self, include_none: bool = False) -> dict[tuple[str, str], Level]:
        """(rule id, subject) -> level for every rule, hazard and device alike."""
        out: dict[tuple[str, str], Level] = {}
        ids = [s.id for s in self.registry.sensors]
        for ks in self._kinds:
            for rs in ks.rules:
                b = rs.binding
                if rs.area is not None:
                    pairs = list(zip(b.groups, rs.group_level, strict=True))
                else:
                    pairs = [(ids[int(i)], lv) for i, lv in zip(b.sensors, rs.level, strict=True)]
                for subj, lv in pairs:
                    if include_none or lv:
                        out[(b.spec.id, subj)] = Level(int(lv))
            for fs in ks.faults:
                for i, lv in zip(fs.binding.sensors, fs.level, strict=True):
                    if include_none or lv:
                        out[(fs.binding.spec.id, ids[int(i)])] = Level(int(lv))
        for nd in self._nodata:
            for i, lv in zip(nd.binding.sensors, nd.level, strict=True):
                if include_none or lv:
                    out[(nd.binding.spec.id, ids[int(i)])] = Level(int(lv))
            for code, lv in zip(nd.districts, nd.feed_level, strict=True):
                if include_none or lv:
                    out[(feed_rule_id(nd.binding.spec.id), code)] = Level(int(lv))
        return out

    def kind_of_rule(self, rule_id: str) -> str | None:
        """The sensor kind a rule's state comes from (None: no-data rules, whose state is not
        history)."""
        for ks in self._kinds:
            if any(rs.spec_id == rule_id for rs in ks.rules) or any(
                    fs.binding.spec.id == rule_id for fs in ks.faults):
                return ks.kind
        return None

    def rule_ids(self) -> set[str]:
        ids = set(self._rule_order)
        ids |= {feed_rule_id(nd.binding.spec.id) for nd in self._nodata}
        return ids

    @property
    def kinds(self) -> list[KindState]:
        return self._kinds

    def adopt_kind(self, other: RuleEngine, kind: str) -> None:
        """Take the whole state of one kind (windows, detectors, levels) from `other`, an
        engine built on the same rules and registry: a kind rebuilt late, once its history
        could be read."""
        if other.ruleset is not self.ruleset or other.registry is not self.registry:
            raise ValueError("an engine of other rules or sensors has another layout")
        k = next(i for i, ks in enumerate(self._kinds) if ks.kind == kind)
        self._kinds[k] = other._kinds[k]

    @property
    def nodata(self) -> list[NoDataState]:
        return self._nodata

    def lookback_ms(self, kind: str) -> int:
        """How much history rebuilds the state of a kind's rules (windows, holds, flapping)."""
        for ks in self._kinds:
            if ks.kind != kind:
                continue
            need = ks.windows.span_ms
            for rs in ks.rules:
                spec = rs.binding.spec
                need = max(need, ks.windows.span_ms + max(spec.hold_ms, spec.hold_exit_ms), spec.flap_within_ms)
            for fs in ks.faults:
                spec2 = fs.binding.spec
                need = max(need, spec2.duration_ms + spec2.clear_after_ms, spec2.tau_ms * 3)
            return need
        return 0

    def explain(self, sensor_id: str) -> list[dict[str, Any]]:
        """The rules that apply to a sensor, with its resolved parameters and current level."""
        idx = self.registry.index[sensor_id]
        out: list[dict[str, Any]] = []
        for ks in self._kinds:
            for rs in ks.rules:
                b = rs.binding
                hit = np.flatnonzero(b.sensors == idx)
                if hit.shape[0] == 0:
                    continue
                s = int(hit[0])
                thresholds = {
                    m: {lvl.key: float(b.thresholds[m][s, lvl - 1]) for lvl in HAZARD_LEVELS
                        if not np.isnan(b.thresholds[m][s, lvl - 1])}
                    for m in b.spec.measures
                }
                item: dict[str, Any] = {
                    "rule": b.spec.id, "name": b.spec.name, "version": b.spec.version,
                    "file": b.spec.file, "line": b.spec.line, "profile": b.spec.profile,
                    "measures": _measures_text(b),
                    "thresholds": thresholds,
                    "expressions": {m: {lvl.key: str(th) for lvl, th in by.items() if th.param}
                                    for m, by in b.spec.conditions.items()},
                    "hysteresis": {lvl.key: float(h) for lvl, h in zip(HAZARD_LEVELS, b.hysteresis, strict=True)
                                   if any(lvl in by for by in b.spec.conditions.values())},
                    "hold_ms": b.spec.hold_ms, "hold_exit_ms": b.spec.hold_exit_ms,
                    "level": Level(int(rs.raw[s])).key if rs.area is not None else Level(int(rs.level[s])).key,
                }
                if rs.area is not None:
                    g = int(b.group_of[s])
                    item["area"] = {"by": b.spec.area_by, "region": b.groups[g], "k": int(b.need[g]),
                                    "n": int((b.group_of == g).sum()),
                                    "region_level": Level(int(rs.group_level[g])).key}
                if b.spec.flap_changes:
                    item["flap"] = {"changes": b.spec.flap_changes, "within_ms": b.spec.flap_within_ms}
                if ks.is_counter[int(self._row_of_sensor[idx])]:
                    item["input"] = "cumulative counter (increments = differences, a drop = reset)"
                out.append(item)
            for fs in ks.faults:
                fb = fs.binding
                hit = np.flatnonzero(fb.sensors == idx)
                if hit.shape[0]:
                    out.append(_fault_item(fb, int(hit[0]), int(fs.level[int(hit[0])])))
        for nd in self._nodata:
            s = int(nd.subject_of_sensor[idx])
            if s >= 0:
                item = _fault_item(nd.binding, s, int(nd.level[s]))
                item["timeout_s"] = float(nd.binding.timeout_ms[s]) / 1000
                item["district"] = nd.districts[int(nd.district_of[s])]
                out.append(item)
        skipped = [p for p in self.bind_problems if f"sensor {sensor_id} " in p]
        if skipped:
            out.append({"skipped": skipped})
        return out


def feed_rule_id(rule_id: str) -> str:
    return f"{rule_id}.feed_down"


def _measures_text(b: Binding) -> dict[str, str]:
    spec = b.spec
    out: dict[str, str] = {}
    for m in spec.measures:
        if m == "value":
            out[m] = "the reading"
        elif m in spec.windows_ms:
            out[m] = f"rolling sum over {spec.windows_ms[m] / 3_600_000:g} h"
        elif m in spec.trends_ms:
            out[m] = f"least-squares slope over {spec.trends_ms[m] / 3_600_000:g} h, per hour"
        elif m in spec.forecasts:
            fc = spec.forecasts[m]
            out[m] = (f"forecast of {fc.of} {fc.horizon_ms / 3_600_000:g} h ahead "
                      f"(fit {fc.fit_ms / 3_600_000:g} h)")
    return out


def _fault_item(fb: FaultBinding, s: int, level: int) -> dict[str, Any]:
    spec = fb.spec
    params: dict[str, object] = {k: float(v[s]) for k, v in fb.params.items()}
    if spec.detector in ("stuck", "drift"):
        params["for_min"] = spec.duration_ms / 60_000
    if spec.detector == "spike":
        params["confirm"] = spec.confirm
    if spec.detector == "drift":
        params.update({"neighbours": int((fb.neighbours[s] >= 0).sum()), "radius_km": spec.radius_km,
                       "min_neighbours": spec.min_neighbours, "tau_min": spec.tau_ms / 60_000,
                       "low": spec.low, "high": spec.high, "min_level": spec.min_level})
    return {
        "rule": spec.id, "name": spec.name, "version": spec.version, "file": spec.file,
        "line": spec.line, "profile": spec.profile, "detector": spec.detector,
        "warning_level": spec.level.key, "params": params,
        "clear_after_ms": spec.clear_after_ms, "level": Level(level).key,
    }


def _newest_t(ks: KindState, row: int) -> int | None:
    pts = ks.windows.last(row, 1)
    return pts[-1][0] if pts else None
