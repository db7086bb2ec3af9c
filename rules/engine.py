"""The rules engine: readings in, level changes out.

Per sensor kind the engine keeps one set of ring-buffer windows (rows = the kind's bound
sensors) and, per rule of that kind, one threshold detector per measure plus the current level
of every subject. A batch is processed kind by kind in event-time rounds: round r holds the
r-th reading (in ts order) of every sensor in the batch, so each reading is evaluated at its
own timestamp and the result does not depend on how readings were split into batches. Work in
a round is vectorised over its sensors; Python loops run per round, per rule and per change.
Rolling sums are computed once per kind and round for the union of its rules' windows.

A reading that arrives later than a newer reading of the same sensor is stored in its window
in place (later sums include it) but not evaluated: the detectors never go back in event time.
A redelivered duplicate (same ts, same value) changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from detectors.accumulate import Accumulator
from detectors.threshold import ThresholdDetector
from detectors.windows import REPLACED_NEWEST, Windows, capacity_for
from ews.levels import HAZARD_LEVELS, Level
from ews.models import LevelChange, ReadingBatch
from ews.sensors import SensorRegistry
from rules.binding import Binding, bind
from rules.model import RuleSet

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
RECENT_READINGS = 6  # readings attached to a level change
VALUE_WINDOW_SLOTS = 8  # enough history for the readings of a change on value-only kinds


@dataclass
class _RuleState:
    binding: Binding
    subject_of_row: IntArray  # kind window row -> subject index, -1 if the rule skips it
    measures: list[str]
    columns: list[int]  # per measure: -1 = the reading's value, else accumulation column
    detectors: list[ThresholdDetector]
    level: npt.NDArray[np.int8]
    measure_of_level: npt.NDArray[np.int8]  # which measure set the current level


@dataclass
class _KindState:
    kind: str
    unit: str
    sensors: IntArray  # window row -> registry index
    windows: Windows
    accumulator: Accumulator | None  # sums over the windows of this kind's rules, if any
    rules: list[_RuleState] = field(default_factory=list)


class RuleEngine:
    def __init__(self, ruleset: RuleSet, sensors: SensorRegistry):
        self.ruleset = ruleset
        self.registry = sensors
        self.bind_problems: list[str] = []
        self.bindings: list[Binding] = []
        for spec in ruleset.rules:
            b, problems = bind(spec, sensors)
            self.bind_problems += problems
            if b.n_subjects:
                self.bindings.append(b)
        self._rule_order = {b.spec.id: i for i, b in enumerate(self.bindings)}
        n = len(sensors)
        self._kind_of_sensor = np.full(n, -1, np.int64)
        self._row_of_sensor = np.full(n, -1, np.int64)
        self._kinds: list[_KindState] = []
        for kind in dict.fromkeys(b.spec.kind for b in self.bindings):
            self._kinds.append(self._build_kind(kind, [b for b in self.bindings
                                                        if b.spec.kind == kind]))

    def _build_kind(self, kind: str, bindings: list[Binding]) -> _KindState:
        k = len(self._kinds)
        members = np.unique(np.concatenate([b.sensors for b in bindings]))
        self._kind_of_sensor[members] = k
        self._row_of_sensor[members] = np.arange(members.shape[0])
        spans = sorted({ms for b in bindings for ms in b.spec.windows_ms.values()})
        spec = self.registry.kinds.get(kind)
        interval_ms = int((spec.interval_s if spec else 60) * 1000)
        if spans:
            span = max(spans)
            cap = capacity_for(span, interval_ms)
        else:
            cap = VALUE_WINDOW_SLOTS
            span = cap * interval_ms
        windows = Windows(members.shape[0], cap, span)
        acc = Accumulator(windows, np.asarray(spans, np.int64)) if spans else None
        ks = _KindState(kind, spec.unit if spec else "", members, windows, acc)
        for b in bindings:
            subject_of_row = np.full(members.shape[0], -1, np.int64)
            subject_of_row[self._row_of_sensor[b.sensors]] = np.arange(b.n_subjects)
            measures = list(b.spec.conditions)
            columns = [spans.index(b.spec.windows_ms[m]) if m in b.spec.windows_ms else -1
                       for m in measures]
            detectors = []
            for m in measures:
                # each detector holds only the levels its measure has conditions for
                cols = np.asarray([int(lv) - 1 for lv in b.spec.conditions[m]], np.int64)
                detectors.append(ThresholdDetector(
                    b.thresholds[m][:, cols], b.hysteresis[cols],
                    b.spec.hold_ms, b.spec.hold_exit_ms, levels=cols + 1,
                ))
            ks.rules.append(_RuleState(
                b, subject_of_row, measures, columns, detectors,
                np.zeros(b.n_subjects, np.int8), np.zeros(b.n_subjects, np.int8),
            ))
        return ks

    def process(self, batch: ReadingBatch) -> list[LevelChange]:
        """Feed a batch; return the level changes it caused, in event-time order."""
        if len(batch) == 0:
            return []
        sensor = np.asarray(batch.sensor, np.int64)
        ts = np.asarray(batch.ts_ms, np.int64)
        value = np.asarray(batch.value, np.float64)
        ok = (sensor >= 0) & (sensor < self._kind_of_sensor.shape[0]) & np.isfinite(value)
        kind = np.where(ok, self._kind_of_sensor[np.where(ok, sensor, 0)], -1)
        out: list[tuple[int, int, int, LevelChange]] = []
        for k in np.unique(kind[kind >= 0]):
            idx = np.flatnonzero(kind == k)
            self._process_kind(self._kinds[int(k)], sensor[idx], ts[idx], value[idx],
                               batch.drill, out)
        out.sort(key=lambda c: (c[0], c[1], c[2]))
        return [c[3] for c in out]

    def _process_kind(
        self, ks: _KindState, sensor: IntArray, ts: IntArray, value: FloatArray, drill: bool,
        out: list[tuple[int, int, int, LevelChange]],
    ) -> None:
        rows = self._row_of_sensor[sensor]
        order = np.lexsort((ts, rows))  # stable: duplicates keep their arrival order
        rows, ts, value = rows[order], ts[order], value[order]
        n = rows.shape[0]
        first = np.ones(n, np.bool_)
        first[1:] = rows[1:] != rows[:-1]
        rank = np.arange(n) - np.maximum.accumulate(np.where(first, np.arange(n), 0))
        by_round = np.lexsort((ts, rank))
        bounds = np.searchsorted(rank[by_round], np.arange(int(rank.max()) + 2))
        for r in range(bounds.shape[0] - 1):
            sel = by_round[bounds[r]:bounds[r + 1]]
            self._round(ks, rows[sel], ts[sel], value[sel], drill, out)

    def _round(
        self, ks: _KindState, rows: IntArray, ts: IntArray, value: FloatArray, drill: bool,
        out: list[tuple[int, int, int, LevelChange]],
    ) -> None:
        outcome = ks.windows.insert(rows, ts, value)
        fresh = outcome <= REPLACED_NEWEST
        if not fresh.all():
            rows, ts, value = rows[fresh], ts[fresh], value[fresh]
        if rows.shape[0] == 0:
            return
        sums = ks.accumulator.sums_at_newest(rows) if ks.accumulator is not None else None
        for rs in ks.rules:
            subj = rs.subject_of_row[rows]
            m = subj >= 0
            if not m.any():
                continue
            s, t = subj[m], ts[m]
            vals = [value[m] if c < 0 else sums[m, c]  # type: ignore[index]
                    for c in rs.columns]
            new = np.zeros(s.shape[0], np.int8)
            which = np.zeros(s.shape[0], np.int8)
            for j, det in enumerate(rs.detectors):
                lv = det.update(s, t, vals[j])
                better = lv > new
                new = np.where(better, lv, new)
                which = np.where(better, j, which)
            old = rs.level[s]
            changed = np.flatnonzero(new != old)
            rows_m = rows[m] if changed.shape[0] else rows
            for i in changed:
                out.append(self._change(ks, rs, int(rows_m[i]), int(s[i]), int(t[i]), int(old[i]),
                                        int(new[i]), int(which[i]), vals, int(i), drill))
            rs.measure_of_level[s] = np.where(new > 0, which, rs.measure_of_level[s])
            rs.level[s] = new

    def _change(
        self, ks: _KindState, rs: _RuleState, row: int, subject: int, t: int, before: int,
        after: int, which: int, vals: list[FloatArray], i: int, drill: bool,
    ) -> tuple[int, int, int, LevelChange]:
        spec = rs.binding.spec
        j = which if after > 0 else int(rs.measure_of_level[subject])
        lvl = after if after > 0 else before
        measure = rs.measures[j]
        det = rs.detectors[j]
        col = int(np.searchsorted(det.level_values, lvl))
        sensor = self.registry.sensors[int(ks.sensors[row])]
        change = LevelChange(
            rule_id=spec.id,
            rule_version=spec.version,
            kind=ks.kind,
            subject=sensor.id,
            community=sensor.community,
            measure=ks.kind if measure == "value" else measure,
            unit=ks.unit,
            before=Level(before),
            after=Level(after),
            value=float(vals[j][i]),
            threshold=float(det.enter[subject, col]),
            event_ts_ms=t,
            readings=ks.windows.last(int(row), RECENT_READINGS, until_ts=t),
            drill=drill,
            rule_name=spec.name,
        )
        return (t, self._rule_order[spec.id], int(ks.sensors[row]), change)

    def levels(self, rule_id: str) -> dict[str, Level]:
        """Current level of every subject of a rule (sensor id -> level)."""
        for ks in self._kinds:
            for rs in ks.rules:
                if rs.binding.spec.id == rule_id:
                    return {self.registry.sensors[int(g)].id: Level(int(lv))
                            for g, lv in zip(rs.binding.sensors, rs.level, strict=True)}
        raise KeyError(rule_id)

    def explain(self, sensor_id: str) -> list[dict[str, object]]:
        """The rules that apply to a sensor, with its resolved thresholds and current level."""
        idx = self.registry.index[sensor_id]
        out: list[dict[str, object]] = []
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
                    for m in rs.measures
                }
                out.append({
                    "rule": b.spec.id, "name": b.spec.name, "version": b.spec.version,
                    "thresholds": thresholds,
                    "hysteresis": {lvl.key: float(h) for lvl, h in zip(HAZARD_LEVELS,
                                                                       b.hysteresis, strict=True)},
                    "hold_ms": b.spec.hold_ms, "hold_exit_ms": b.spec.hold_exit_ms,
                    "level": Level(int(rs.level[s])).key,
                })
        skipped = [p for p in self.bind_problems if f"sensor {sensor_id} " in p]
        if skipped:
            out.append({"skipped": skipped})
        return out
