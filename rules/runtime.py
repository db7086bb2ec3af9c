"""The rules engine at work in the pipeline: one lock, a timer, hot reload and the rebuild.

`process` runs on the ingest worker; a timer thread polls the rule files and the profile
calendar (hot reload) and judges silence (no data) on the wall clock, whether or not
readings arrive. Both take the same lock, so a reload swaps the engine between two batches.
Level changes from the timer go to `emit`, the same path readings' changes take.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ews import heap, metrics
from ews.config import Config, InfluxConfig
from ews.levels import Level
from ews.models import LevelChange, ReadingBatch
from ews.sensors import SensorRegistry
from ingest.influx import make_reader
from rules.engine import RuleEngine
from rules.model import RuleSet
from rules.profiles import active_profiles, beijing_today
from rules.rebuild import RebuildStats, rebuild, reconcile
from rules.reload import RuleWatcher
from rules.transfer import carry_over

log = logging.getLogger(__name__)
Emit = Callable[[list[LevelChange]], None]


class RuleRuntime:
    def __init__(self, cfg: Config, sensors: SensorRegistry, clock: Callable[[], float] = time.time):
        self.cfg = cfg.rule_engine
        self.regional = cfg.rules_profile
        self.sensors = sensors
        self.clock = clock
        self.lock = threading.RLock()
        self.watcher = RuleWatcher(cfg.rules, self.profiles_now)
        self.engine = RuleEngine(self.watcher.ruleset, sensors, start_ms=self._now_ms())
        for problem in self.engine.bind_problems:
            log.warning("rule binding: %s", problem)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._down_since: float | None = None
        # kinds whose history could not be read at start: their windows have a hole, and their
        # history is tried again until it is read; while InfluxDB does not answer at all (it
        # is starting, or down) they lower no warning
        self.without_history: set[str] = set()
        self.holding_falls = False
        self.late_every_s = self.cfg.late_rebuild_interval_s  # longer while InfluxDB answers with errors
        self._influx_cfg: InfluxConfig | None = None
        self._foreign: frozenset[str] = frozenset()
        self._falls_logged: set[str] = set()
        # the stored levels of those kinds' warnings: the engine starts them at none, so a rise
        # by its count may still be a fall from what was notified
        self._notified: dict[tuple[str, str], Level] = {}

    @property
    def ruleset(self) -> RuleSet:
        return self.engine.ruleset

    @property
    def _lookback_cap_ms(self) -> int:
        return int(self.cfg.rebuild_lookback_h * 3.6e6)

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def profiles_now(self) -> list[str]:
        calendar = [(c.profile, c.from_, c.to) for c in self.cfg.calendar]
        return active_profiles(self.regional, calendar, self.cfg.profiles, beijing_today(self.clock()))

    def process(self, batch: ReadingBatch) -> list[LevelChange]:
        with self.lock:
            changes = self.engine.process(batch, now_ms=self._now_ms())
        return self._hold_falls(changes) if self.holding_falls else changes

    def _hold_falls(self, changes: list[LevelChange]) -> list[LevelChange]:
        """A fall judged on a window with a hole may be the hole: not passed on until the
        history is read (rises are real: a window short of readings only undercounts)."""
        kept = []
        for c in changes:
            if c.kind in self.without_history:
                key = (c.rule_id, c.subject)
                was = max(c.before, self._notified.get(key, Level.NONE))
                if c.after < was:
                    metrics.RULES_FALLS_HELD.labels(c.kind).inc()
                    if c.kind not in self._falls_logged:
                        self._falls_logged.add(c.kind)
                        log.warning("%s/%s would fall from %s to %s, judged without the %s history; held until "
                                    "it can be read", c.rule_id, c.subject, was.name, c.after.name, c.kind)
                    continue
                self._notified[key] = c.after
            kept.append(c)
        return kept

    # --- start-up -----------------------------------------------------------------------------

    def rebuild(self, influx_cfg: InfluxConfig, open_warnings: list[dict[str, Any]],
                foreign: frozenset[str] = frozenset(), spooled: Iterable[bytes] = ()) -> list[LevelChange]:
        """Replay recent history (InfluxDB's, and `spooled`: the batches the ingest spool holds),
        then the changes that line the store up with the engine."""
        now = self._now_ms()
        with self.lock:
            if not self.cfg.rebuild:
                # no history: the stored warnings stand until readings move them
                self.engine.seed_open({(w["rule"], w["subject"]): Level(int(w["level"])) for w in open_warnings})
                return []
            self._influx_cfg, self._foreign = influx_cfg, foreign
            self._notified = {(w["rule"], w["subject"]): Level(int(w["level"])) for w in open_warnings}
            influx = make_reader(influx_cfg)
            try:
                stats: RebuildStats = rebuild(self.engine, influx, now, self._lookback_cap_ms, spooled=spooled)
            finally:
                influx.close()
            self._without(set(ks.kind for ks in self.engine.kinds) - stats.rebuilt, stats.unreachable)
            log.info("rules state rebuilt from %d readings%s in %.2f s (%s)%s", stats.readings,
                     f" ({stats.spooled} of them waiting in the spool)" if stats.spooled else "", stats.seconds,
                     ", ".join(f"{k} {n}" for k, n in stats.kinds.items()) or "no history",
                     f"; errors: {'; '.join(stats.errors)}" if stats.errors else "")
            changes = reconcile(self.engine, open_warnings, now, foreign, stats.rebuilt)
        if changes:
            log.info("restart: %d level change(s) bring the stored warnings up to date", len(changes))
        return changes

    def _without(self, kinds: set[str], unreachable: bool) -> None:
        hold = bool(kinds) and unreachable
        if kinds and (kinds != self.without_history or hold != self.holding_falls):
            log.warning("rules of %s run without their history (tried again every %.0f s): %s",
                        ", ".join(sorted(kinds)), self.cfg.late_rebuild_interval_s,
                        "InfluxDB does not answer; they lower no warning until it does" if hold else
                        "InfluxDB answers but cannot give it; they judge on what arrives, falls included")
        self.without_history = kinds
        self.holding_falls = hold
        metrics.RULES_WITHOUT_HISTORY.set(len(kinds))

    def late_rebuild(self, open_warnings: Callable[[], list[dict[str, Any]]],
                     spooled: Callable[[], Iterable[bytes]] = tuple) -> list[LevelChange]:
        """Rebuild the kinds whose history could not be read at start, now that InfluxDB
        answers: their state is replayed afresh from InfluxDB and the spool (which hold every
        reading evaluated since, as the rules only see stored readings), taken over whole, and
        lined up with the stored warnings. Live readings wait meanwhile."""
        if not self.without_history or self._influx_cfg is None:
            return []
        influx = make_reader(self._influx_cfg)
        try:
            if not influx.ping():
                return []  # still down: falls stay held
            with self.lock:
                now = self._now_ms()
                fresh = RuleEngine(self.engine.ruleset, self.sensors, start_ms=self.engine.start_ms)
                # rebuild reads the spool before InfluxDB: a batch replayed in between is in one or both
                stats = rebuild(fresh, influx, now, self._lookback_cap_ms, spooled=spooled(),
                                kinds=self.without_history)
                for kind in stats.rebuilt:
                    self.engine.adopt_kind(fresh, kind)
                # an answer that is an error will not mend itself soon: ask less often, up to 10 min
                self.late_every_s = (self.cfg.late_rebuild_interval_s if stats.rebuilt or stats.unreachable
                                     else min(2 * self.late_every_s, max(600.0, self.cfg.late_rebuild_interval_s)))
                changes = reconcile(self.engine, open_warnings(), now, self._foreign, stats.rebuilt, late=True)
                self._without(self.without_history - stats.rebuilt, stats.unreachable)
        finally:
            influx.close()
        if stats.rebuilt:
            log.warning("rules of %s rebuilt late from %d readings (%d of them from the spool) in %.2f s; "
                        "%d level change(s) bring the stored warnings up to date", ", ".join(sorted(stats.rebuilt)),
                        stats.readings, stats.spooled, stats.seconds, len(changes))
        return changes

    # --- the timer ------------------------------------------------------------------------------

    def start(self, emit: Emit, feed_up: Callable[[], bool] = lambda: True,
              open_warnings: Callable[[], list[dict[str, Any]]] = list,
              spooled: Callable[[], Iterable[bytes]] = tuple) -> None:
        period = min(self.cfg.nodata_interval_s, self.cfg.reload_interval_s or self.cfg.nodata_interval_s,
                     self.cfg.late_rebuild_interval_s)

        def loop() -> None:
            last_nodata = last_reload = 0.0
            last_rebuild = time.monotonic()  # start-up has just tried
            while not self._stop.wait(period):
                now = time.monotonic()
                try:
                    if self.without_history and now - last_rebuild >= self.late_every_s:
                        last_rebuild = now
                        changes = self.late_rebuild(open_warnings, spooled)
                        if changes:
                            emit(changes)
                    if self.cfg.reload_interval_s and now - last_reload >= self.cfg.reload_interval_s:
                        last_reload = now
                        changes = self.reload()
                        if changes:
                            emit(changes)
                    if now - last_nodata >= self.cfg.nodata_interval_s:
                        last_nodata = now
                        changes = self.check_nodata(feed_up())
                        if changes:
                            emit(changes)
                except Exception:
                    log.exception("rules timer failed; it carries on")

        self._thread = threading.Thread(target=loop, name="rules-timer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def check_nodata(self, connected: bool = True) -> list[LevelChange]:
        """Judge silence now; the feed counts as down once the broker has been gone a while."""
        wall = self.clock()
        if connected:
            self._down_since = None
        elif self._down_since is None:
            self._down_since = wall
        feed_up = connected or wall - (self._down_since or wall) < self.cfg.feed_down_after_s
        with self.lock:
            return self.engine.check_nodata(int(wall * 1000), feed_up)

    def reload(self, force: bool = False, count: bool = True) -> list[LevelChange]:
        """Load changed rule files (or a new day's profiles) and carry the state over."""
        ruleset = self.watcher.poll(force, count)
        if ruleset is None:
            return []
        new = RuleEngine(ruleset, self.sensors, start_ms=self._now_ms())
        for problem in new.bind_problems:
            log.warning("rule binding: %s", problem)
        with self.lock:
            changes = carry_over(self.engine, new, self._now_ms())
            self.engine = new
        heap.settle()  # the old engine and rules may sit frozen since start-up
        metrics.set_rules(ruleset.version, len(ruleset.rules) + len(ruleset.faults))
        if changes:
            log.info("rules %s: %d level change(s) from the new rules", ruleset.version, len(changes))
        return changes

    @property
    def problems(self) -> list[str]:
        """Why the last reload was rejected (file:line: field: reason), empty if it was not."""
        return [str(p) for p in self.watcher.problems]

    @property
    def rules_path(self) -> Path | None:
        return self.watcher.path
