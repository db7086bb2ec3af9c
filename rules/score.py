"""Scoring warnings against recorded events: hits, misses, false alarms, lead time.

An event (from the weather bureau's or the district's own record) names a sensor or a region,
the level it reached and when it started and ended. Level changes are turned into warning
episodes per (rule, subject). Then:

- an event is a HIT when a warning of its subject (the sensor itself, or for a region the
  region or any sensor inside it) reached at least the event's level between `max_lead`
  before the event's start and its end; the LEAD is the event's start minus the moment the
  warning first reached that level (positive: warned ahead);
- otherwise it is a MISS;
- a warning episode is a FALSE ALARM when no event of its subject (or of a region holding it)
  lies in the same span (the episode's time, widened by `max_lead` before the event).

Accuracy is the threat score hits / (hits + misses + false alarms), the strictest of the
usual verification scores (it is what "预警准确率" means in the CMA's warning verification);
the probability of detection and the false-alarm ratio are reported beside it.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median

import pandas as pd  # type: ignore[import-untyped]
import yaml

from ews.levels import Level
from ews.models import LevelChange
from rules.history import HistoryError, parse_ts


@dataclass
class Event:
    subject: str  # sensor id or region code
    level: Level
    start_ms: int
    end_ms: int
    region: bool = False


@dataclass
class Episode:
    rule: str
    subject: str
    kind: str
    community: str
    start_ms: int
    end_ms: int | None  # None: still open when the history ended
    steps: list[tuple[int, Level]] = field(default_factory=list)  # (ts, level) from the start
    lead_s: float | None = None  # forecast lead stated when it opened

    @property
    def peak(self) -> Level:
        return max(lv for _, lv in self.steps)

    def first_at(self, level: Level, lo: int, hi: int) -> int | None:
        """When the episode first held `level` or above within [lo, hi], if it did."""
        for i, (t, lv) in enumerate(self.steps):
            nxt = self.steps[i + 1][0] if i + 1 < len(self.steps) else (self.end_ms or hi + 1)
            if lv >= level and t <= hi and nxt > lo:
                return max(t, lo)
        return None


def episodes(changes: list[LevelChange]) -> list[Episode]:
    """Warning episodes from level changes in event-time order."""
    open_: dict[tuple[str, str], Episode] = {}
    out: list[Episode] = []
    for c in changes:
        key = (c.rule_id, c.subject)
        ep = open_.get(key)
        if ep is None:
            if c.after == Level.NONE:
                continue
            ep = Episode(c.rule_id, c.subject, c.kind, c.community, c.event_ts_ms, None, lead_s=c.lead_s)
            open_[key] = ep
            out.append(ep)
        ep.steps.append((c.event_ts_ms, c.after))
        if c.after == Level.NONE:
            ep.steps.pop()
            ep.end_ms = c.event_ts_ms
            del open_[key]
    return out


def load_events(path: Path | str) -> list[Event]:
    """Events from CSV (columns sensor or region, level, start, end) or YAML (a list under
    `events:` with the same keys)."""
    p = Path(path)
    try:
        if p.suffix.lower() in (".yaml", ".yml"):
            doc = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
            rows = doc.get("events", []) if isinstance(doc, dict) else doc
        else:
            with p.open(encoding="utf-8", newline="") as f:
                rows = list(csv.DictReader(f))
    except (OSError, yaml.YAMLError, csv.Error) as exc:
        raise HistoryError(f"{p}: cannot read events: {exc}") from exc
    out: list[Event] = []
    for i, row in enumerate(rows, start=2 if p.suffix.lower() == ".csv" else 1):
        where = f"{p}: event {i}"
        if not isinstance(row, dict):
            raise HistoryError(f"{where}: expected sensor/region, level, start, end")
        sensor, region = (str(row.get(k) or "").strip() for k in ("sensor", "region"))
        if bool(sensor) == bool(region):
            raise HistoryError(f"{where}: give either a sensor or a region")
        try:
            level = Level.parse(str(row.get("level", "")))
        except ValueError as exc:
            raise HistoryError(f"{where}: {exc}") from None
        start, end = (int(x) for x in parse_ts(pd.Series([row.get("start"), row.get("end")]), where))
        if end < start:
            raise HistoryError(f"{where}: ends before it starts")
        out.append(Event(sensor or region, level, start, end, region=bool(region)))
    return out


@dataclass
class EventResult:
    event: Event
    hit: bool
    lead_s: float | None
    rule: str | None
    warned_level: Level


@dataclass
class Score:
    hits: int
    misses: int
    false_alarms: int
    events: list[EventResult]
    false: list[Episode]

    @property
    def pod(self) -> float:
        n = self.hits + self.misses
        return self.hits / n if n else 0.0

    @property
    def far(self) -> float:
        n = self.hits + self.false_alarms
        return self.false_alarms / n if n else 0.0

    @property
    def accuracy(self) -> float:
        n = self.hits + self.misses + self.false_alarms
        return self.hits / n if n else 0.0

    @property
    def leads_s(self) -> list[float]:
        return [r.lead_s for r in self.events if r.hit and r.lead_s is not None]

    @property
    def median_lead_s(self) -> float | None:
        return median(self.leads_s) if self.leads_s else None


def _covers(ev: Event, ep: Episode) -> bool:
    if not ev.region:
        return ep.subject == ev.subject
    return ep.subject.startswith(ev.subject) or ep.community.startswith(ev.subject)


def score(eps: list[Episode], events: list[Event], max_lead_ms: int, end_ms: int) -> Score:
    results: list[EventResult] = []
    for ev in events:
        lo, hi = ev.start_ms - max_lead_ms, ev.end_ms
        best: tuple[int, Episode] | None = None
        warned = Level.NONE
        for ep in eps:
            if not _covers(ev, ep):
                continue
            inside = [lv for t, lv in ep.steps if t <= hi] if ep.start_ms <= hi and (ep.end_ms or end_ms) >= lo else []
            warned = max([warned, *inside])
            at = ep.first_at(ev.level, lo, hi)
            if at is not None and (best is None or at < best[0]):
                best = (at, ep)
        if best is None:
            results.append(EventResult(ev, False, None, None, warned))
        else:
            results.append(EventResult(ev, True, (ev.start_ms - best[0]) / 1000, best[1].rule, warned))
    false: list[Episode] = []
    for ep in eps:
        end = ep.end_ms if ep.end_ms is not None else end_ms
        if not any(_covers(ev, ep) and ep.start_ms <= ev.end_ms and end >= ev.start_ms - max_lead_ms
                   for ev in events):
            false.append(ep)
    hits = sum(r.hit for r in results)
    return Score(hits, len(results) - hits, len(false), results, false)
