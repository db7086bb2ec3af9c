"""Rebuilding detector state after a restart, and lining it up with the stored warnings.

On start the engine replays each kind's recent history from InfluxDB (as far back as its
longest window plus hold and flapping times, and never further than the configured cap),
without producing warnings. Readings still waiting in the ingest spool (InfluxDB was down or
slow when they came) are part of that history: without them a restart during an outage would
judge the storm on windows with a hole, lifting warnings that still hold. The engine's levels
are then compared with the open warnings in the SQLite store per (rule, subject):

- equal: nothing happens (the warning service would not notify a level it already holds);
- different: a level change is handed to the warning service, which decides the transition
  from the stored state. This is the case when the process died between storing a reading and
  evaluating it, or when the rules changed while it was down, and it is what makes a restart
  neither miss nor repeat a warning.

No-data and feed-down levels cannot be replayed (silence leaves no history); they are taken
from the store, and the timer moves them on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd  # type: ignore[import-untyped]

from ews.levels import Level
from ews.models import LevelChange
from ingest.influx_v1 import InfluxV1
from rules.engine import RuleEngine
from rules.history import HistoryError, batches, influx_history, spool_history

log = logging.getLogger(__name__)


@dataclass
class RebuildStats:
    readings: int = 0
    spooled: int = 0  # of them, read from the spool
    unreachable: bool = False  # InfluxDB did not answer at all (rather than answer with an error)
    rebuilt: set[str] = field(default_factory=set)  # kinds whose history was read
    seconds: float = 0.0
    kinds: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def rebuild(engine: RuleEngine, influx: InfluxV1, now_ms: int, cap_ms: int,
            progress: Callable[[str, int], None] | None = None,
            spooled: Iterable[bytes] = (), kinds: Collection[str] | None = None) -> RebuildStats:
    """Replay each kind's bounded history into `engine` (no warnings come out); `spooled`: the
    line-protocol batches InfluxDB has not taken yet; `kinds`: only these (None: all)."""
    stats = RebuildStats()
    t0 = time.perf_counter()
    waiting = spool_history(spooled, now_ms - cap_ms)
    for ks in engine.kinds:
        if kinds is not None and ks.kind not in kinds:
            continue
        lookback = min(engine.lookback_ms(ks.kind), cap_ms)
        def counted(n: int, kind: str = ks.kind) -> None:
            if progress is not None:
                progress(kind, n)

        try:
            df = influx_history(influx, ks.kind, now_ms - lookback, now_ms, progress=counted)
        except HistoryError as exc:
            stats.errors.append(f"{ks.kind}: {exc}")
            log.error("rebuild: could not read %s history: %s", ks.kind, exc)
            if exc.unreachable:
                stats.unreachable = True
                break  # the other kinds would only wait for the same timeout
            continue
        extra = waiting.get(ks.kind)
        if extra is not None:
            extra = extra[extra["ts"] > now_ms - lookback]
            stats.spooled += len(extra)
            # a batch replayed before the crash but not yet deleted is in both
            df = pd.concat([df, extra], ignore_index=True).drop_duplicates(["sensor", "ts"], keep="last")
        parts, n, unknown = batches(df, engine.registry)
        if unknown:
            log.info("rebuild: %d %s sensors in history are not registered; skipped", len(unknown), ks.kind)
        for b in parts:
            engine.process(b, replay=True)
        stats.kinds[ks.kind] = n
        stats.readings += n
        stats.rebuilt.add(ks.kind)
    stats.seconds = time.perf_counter() - t0
    return stats


def reconcile(engine: RuleEngine, open_warnings: list[dict[str, Any]], now_ms: int,
              foreign: frozenset[str] = frozenset(), rebuilt: set[str] | None = None,
              late: bool = False) -> list[LevelChange]:
    """Level changes that bring the stored warnings to the engine's levels.

    A stored warning of a rule that is no longer configured is lifted; `foreign` names rules
    raised elsewhere (ingest's warning about unregistered sensors), which are left alone.
    `rebuilt` names the kinds whose history was read (None: all): a rule of a kind whose
    history could not be read keeps its stored warnings until its history can be read, rather
    than being judged on an empty window. `late`: those kinds were rebuilt while the pipeline
    ran, so only their rules are compared (no-data levels and rules gone from the rule files
    were settled at start).
    """
    stored = {(w["rule"], w["subject"]): Level(int(w["level"])) for w in open_warnings
              if w.get("pending_resolve") is None}
    if not late:
        engine.seed_open(stored)
    ours = engine.rule_ids()
    current = engine.all_levels()
    out: list[LevelChange] = []
    for key in sorted(set(stored) | set(current)):
        rule, subject = key
        if rule in foreign:
            continue
        kind = engine.kind_of_rule(rule)
        if rebuilt is not None and (kind is not None or late) and kind not in rebuilt:
            continue
        before, after = stored.get(key, Level.NONE), current.get(key, Level.NONE)
        if before == after:
            continue
        c = engine.describe(rule, subject, before, after, now_ms) if rule in ours else None
        if c is None:
            w = next(w for w in open_warnings if (w["rule"], w["subject"]) == key)
            c = _resolve_stored(w, engine.ruleset.version, now_ms)
        out.append(c)
    return out


def _resolve_stored(w: dict[str, Any], version: str, now_ms: int) -> LevelChange:
    """Lift a warning whose rule is gone from the rules in force."""
    return LevelChange(
        rule_id=w["rule"], rule_version=version, kind=w["kind"], subject=w["subject"],
        community=w["community"], measure=w.get("measure") or "", unit=w.get("unit") or "",
        before=Level(int(w["level"])), after=Level.NONE, value=float(w.get("value") or 0.0),
        threshold=w.get("threshold"), event_ts_ms=now_ms, rule_name=w.get("rule_name") or "",
    )
