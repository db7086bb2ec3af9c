"""`ews backtest`: replay a rule set over history and see what it would have raised.

History comes from InfluxDB (InfluxQL, per kind) or from a CSV file (sensor, ts, value). It is
replayed in event-time order through a fresh engine, exactly as live readings would be (the
no-data rules see the wall clock as the history's own time), with a progress bar. The result
is every level change the rules would have made, the warning episodes they form, and, given a
file of recorded events, the score: hits, misses, false alarms, lead times and accuracy.
A timeline plot (PNG) shows readings, levels and events for the sensors involved.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd  # type: ignore[import-untyped]
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ews.levels import Level
from ews.models import LevelChange
from ews.sensors import SensorRegistry
from ingest.influx_v1 import InfluxV1
from rules.engine import RuleEngine
from rules.history import batches, influx_history
from rules.model import RuleSet
from rules.score import Episode, Event, Score, episodes, score

BATCH_MS = 10 * 60_000  # replay slices: the no-data timer ticks between them


@dataclass
class Result:
    changes: list[LevelChange]
    episodes: list[Episode]
    readings: int
    seconds: float
    start_ms: int
    end_ms: int
    unknown: list[str] = field(default_factory=list)
    score: Score | None = None


def registry_of(history: pd.DataFrame, sensors: SensorRegistry) -> SensorRegistry:
    """The registered sensors that appear in the history (the others would only be silent)."""
    present = set(history["sensor"].astype(str))
    return SensorRegistry([s for s in sensors.sensors if s.id in present], sensors.kinds)


def from_influx(influx: InfluxV1, kinds: list[str], since_ms: int, until_ms: int,
                console: Console | None = None) -> pd.DataFrame:
    parts = []
    for kind in kinds:
        df = influx_history(influx, kind, since_ms, until_ms)
        if console is not None:
            console.print(f"  {kind}: {len(df)} readings from InfluxDB")
        parts.append(df)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({"sensor": [], "ts": [], "value": []})


def replay(ruleset: RuleSet, sensors: SensorRegistry, history: pd.DataFrame, console: Console | None = None
           ) -> Result:
    sub = registry_of(history, sensors)
    parts, n, unknown = batches(history, sub, BATCH_MS)
    ts = history["ts"]
    start = int(ts.min()) if len(ts) else 0
    end = int(ts.max()) if len(ts) else 0
    engine = RuleEngine(ruleset, sub, start_ms=start)
    changes: list[LevelChange] = []
    t0 = time.perf_counter()
    with Progress(TextColumn("replaying"), BarColumn(), MofNCompleteColumn(), TextColumn("readings"),
                  TimeRemainingColumn(), console=console, transient=True,
                  disable=console is None) as progress:
        task = progress.add_task("replay", total=n)
        for b in parts:
            now = int(b.ts_ms.max())
            changes += engine.check_nodata(now - 1)
            changes += engine.process(b, now_ms=now)
            progress.advance(task, len(b))
    changes += engine.check_nodata(end)
    return Result(changes, episodes(changes), n, time.perf_counter() - t0, start, end, unknown)


def add_score(result: Result, events: list[Event], max_lead_ms: int, rules: set[str] | None,
              sensors: SensorRegistry) -> Score:
    """Score the hazard warnings; by default those of the kinds the events' sensors are
    (rain events judge rain rules, not river or ponding warnings of the same night)."""
    kinds = {sensors.get(e.subject).kind for e in events if not e.region and e.subject in sensors}
    eps = [e for e in result.episodes if e.kind != "device"
           and (e.rule in rules if rules is not None else not kinds or e.kind in kinds)]
    result.score = score(eps, events, max_lead_ms, result.end_ms)
    return result.score


def _time(ms: int) -> str:
    return pd.Timestamp(ms, unit="ms", tz="UTC").tz_convert("Asia/Shanghai").strftime("%m-%d %H:%M")


def print_changes(console: Console, changes: list[LevelChange], limit: int) -> None:
    table = Table(title=f"level changes the rules would have made ({len(changes)})", title_justify="left")
    for col in ("time", "rule", "subject", "change", "measure", "value", "threshold", "lead"):
        table.add_column(col)
    for c in changes[:limit]:
        lead = f"{c.lead_s / 60:.0f} min" if c.lead_s else ""
        thr = "" if c.threshold is None else f"{c.threshold:g}"
        table.add_row(_time(c.event_ts_ms), c.rule_id, c.subject, f"{c.before.key} -> {c.after.key}", c.measure,
                      f"{c.value:.6g}", thr, lead)
    console.print(table)
    if len(changes) > limit:
        console.print(f"... and {len(changes) - limit} more (--all, or --changes-csv FILE)")


def print_score(console: Console, s: Score) -> None:
    table = Table(title="events", title_justify="left")
    for col in ("subject", "level", "start", "end", "result", "warned", "lead", "rule"):
        table.add_column(col)
    for r in s.events:
        lead = "" if r.lead_s is None else f"{r.lead_s / 60:+.0f} min"
        table.add_row(r.event.subject, r.event.level.key, _time(r.event.start_ms), _time(r.event.end_ms),
                      "hit" if r.hit else "MISS", r.warned_level.key, lead, r.rule or "")
    console.print(table)
    for ep in s.false:
        console.print(f"false alarm: {ep.rule} {ep.subject} {ep.peak.key} from {_time(ep.start_ms)}")
    med = s.median_lead_s
    console.print(
        f"hits {s.hits}, misses {s.misses}, false alarms {s.false_alarms}; "
        f"probability of detection {s.pod:.0%}, false-alarm ratio {s.far:.0%}, "
        f"accuracy (threat score) {s.accuracy:.0%} (plans ask >= 80 %); "
        f"median lead {'-' if med is None else f'{med / 60:.0f} min'}"
    )


def write_changes(path: Path, changes: list[LevelChange]) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["event_ts_ms", "rule", "rule_version", "kind", "subject", "community", "before", "after",
                    "measure", "value", "unit", "threshold", "predicted_ts_ms", "lead_s"])
        for c in changes:
            w.writerow([c.event_ts_ms, c.rule_id, c.rule_version, c.kind, c.subject, c.community, c.before.key,
                        c.after.key, c.measure, c.value, c.unit, c.threshold, c.predicted_ts_ms, c.lead_s])


def summary_counts(changes: list[LevelChange]) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in changes:
        if c.after > c.before:
            out[c.after.key] = out.get(c.after.key, 0) + 1
    return {lv.key: out[lv.key] for lv in (Level.BLUE, Level.YELLOW, Level.ORANGE, Level.RED) if lv.key in out}
