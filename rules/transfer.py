"""Hot reload: hand the state of a running engine to one built from new rules.

What carries over, so a reload neither forgets a storm nor repeats a warning:

- the readings: each kind's windows move as they are when the new rules keep their layout
  (same sensors, same capacity), else the readings are copied row by row;
- cumulative-counter totals and the no-data clocks, per sensor;
- the whole detector state (hold timers, flapping history, area counts, levels) of every rule
  whose definition and binding did not change;
- a new or changed rule is warmed up by evaluating it over the readings already held, so it
  knows the current 3-hour rain at once instead of after 3 hours.

The new engine's levels are then compared with the old ones per (rule, subject); every
difference (a changed threshold now met, a removed rule's warning) becomes a level change
with the new rule version, worded from the current state.
"""

from __future__ import annotations

import numpy as np

from detectors.accumulate import Accumulator
from ews.levels import Level
from ews.models import LevelChange
from rules.engine import KindState, RuleEngine, RuleState


def carry_over(old: RuleEngine, new: RuleEngine, now_ms: int | None = None) -> list[LevelChange]:
    """Move what `old` knows into `new` (built on the same registry); returns the changes."""
    old_kinds = {ks.kind: ks for ks in old.kinds}
    for ks in new.kinds:
        prev = old_kinds.get(ks.kind)
        if prev is not None:
            _carry_kind(prev, ks)
    new_rules = {id(rs) for ks in new.kinds for rs in ks.rules}
    carried: set[int] = set()
    for ks in new.kinds:
        prev = old_kinds.get(ks.kind)
        for rs in ks.rules:
            match = _same(prev, rs.binding.key()) if prev is not None else None
            if match is not None:
                rs.detector, rs.raw, rs.level, rs.which = match.detector, match.raw, match.level, match.which
                rs.flap, rs.area, rs.values = match.flap, match.area, match.values
                rs.group_raw, rs.group_level = match.group_raw, match.group_level
                carried.add(id(rs))
        for fs in ks.faults:
            key = fs.binding.key()
            for pf in prev.faults if prev is not None else []:
                if pf.binding.key() == key:
                    fs.detector, fs.signal, fs.level = pf.detector, pf.signal, pf.level
                    fs.last_ts, fs.last_flag = pf.last_ts, pf.last_flag
    for ks in new.kinds:
        for rs in ks.rules:
            if id(rs) in new_rules and id(rs) not in carried:
                new.warm_rule(ks, rs)
    _carry_nodata(old, new)
    return level_changes(old, new, now_ms)


def _same(prev: KindState, key: tuple[object, ...]) -> RuleState | None:
    for rs in prev.rules:
        if rs.binding.key() == key:
            return rs
    return None


def _carry_kind(prev: KindState, ks: KindState) -> None:
    same_rows = np.array_equal(prev.sensors, ks.sensors)
    if same_rows and prev.windows.capacity == ks.windows.capacity and prev.windows.span_ms == ks.windows.span_ms:
        ks.windows = prev.windows
        spans = np.asarray(ks.plan.spans, np.int64)
        if prev.accumulator is not None and np.array_equal(prev.accumulator.spans_ms, spans):
            ks.accumulator = prev.accumulator
        elif spans.size:
            ks.accumulator = Accumulator(ks.windows, spans)
    else:
        _copy_readings(prev, ks)
    if prev.counter is not None and ks.counter is not None:
        old_row = {int(s): r for r, s in enumerate(prev.sensors)}
        for r, s in enumerate(ks.sensors):
            o = old_row.get(int(s))
            if o is not None:
                ks.counter.total[r] = prev.counter.total[o]
                ks.counter.prev[r] = prev.counter.prev[o]
                ks.counter.last_ts[r] = prev.counter.last_ts[o]


def _copy_readings(prev: KindState, ks: KindState) -> None:
    """Re-insert the readings of sensors in both layouts, oldest first, row-vectorised."""
    old_row = {int(s): r for r, s in enumerate(prev.sensors)}
    pairs = [(r, old_row[int(s)]) for r, s in enumerate(ks.sensors) if int(s) in old_row]
    if not pairs:
        return
    new_rows = np.asarray([a for a, _ in pairs], np.int64)
    rows = np.asarray([b for _, b in pairs], np.int64)
    win = prev.windows
    count = win.count[rows]
    start = win.end[rows] - count
    for r in range(int(count.max())):
        m = count > r
        slot = win.data.take(win.flat(rows[m], start[m] + r), axis=0)
        ks.windows.insert(new_rows[m], slot[:, 0].astype(np.int64), slot[:, 1])


def _carry_nodata(old: RuleEngine, new: RuleEngine) -> None:
    """Arrival times carry over as they were (a reload is no reason to forgive silence);
    levels carry over by rule id, and the next check judges them by the new rule."""
    seen: dict[int, int] = {}
    for pd in old.nodata:
        for o, idx in enumerate(pd.binding.sensors):
            seen[int(idx)] = max(seen.get(int(idx), np.iinfo(np.int64).min), int(pd.detector.last_seen[o]))
    for nd in new.nodata:
        for s, idx in enumerate(nd.binding.sensors):
            if int(idx) in seen:
                nd.detector.last_seen[s] = seen[int(idx)]
        for pd in old.nodata:
            if pd.binding.spec.id != nd.binding.spec.id:
                continue
            ids = {int(x): i for i, x in enumerate(pd.binding.sensors)}
            for s, idx in enumerate(nd.binding.sensors):
                was = ids.get(int(idx))
                if was is not None:
                    nd.level[s] = pd.level[was]
            for d, code in enumerate(nd.districts):
                if code in pd.districts:
                    nd.feed_level[d] = pd.feed_level[pd.districts.index(code)]
            nd.feed_was_up = pd.feed_was_up


def level_changes(old: RuleEngine, new: RuleEngine, now_ms: int | None = None) -> list[LevelChange]:
    before = old.all_levels()
    after = new.all_levels()
    out: list[LevelChange] = []
    for key in sorted(set(before) | set(after)):
        a, b = before.get(key, Level.NONE), after.get(key, Level.NONE)
        if a == b:
            continue
        rule, subject = key
        c = new.describe(rule, subject, a, b, now_ms) if rule in new.rule_ids() else None
        if c is None:
            c = old.describe(rule, subject, a, b, now_ms)
            if c is not None:
                c.rule_version = new.ruleset.version  # lifted by the rules now in force
        if c is not None:
            out.append(c)
    return out
