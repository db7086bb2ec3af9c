"""The wiring: MQTT collector -> InfluxDB -> rules engine -> warning lifecycle -> outbox.

Follow one reading: `Collector._handle` stores and acknowledges it, then calls
`Pipeline.on_readings`, which runs the rules engine and hands level changes to the warning
service; the service commits transitions with their outbox rows and wakes the outbox worker,
which delivers them on its own thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ews import affinity, heap, metrics, statelock
from ews.config import Config
from ews.latest import LatestReadings
from ews.levels import Level
from ews.models import LevelChange, ReadingBatch
from ews.store import Store
from ews.yamlfile import ConfigError
from ingest.collector import UNREGISTERED_RULE, Collector
from ingest.process import MessageProcessor
from notifiers.channels import Channel, build_channels
from notifiers.lifecycle import Settings, Transition, WarningService
from notifiers.outbox import OutboxPool
from notifiers.reach import say_unreachable, unreachable
from notifiers.roster import Roster
from notifiers.routing import Router, load_policy
from notifiers.silence import Silences
from notifiers.templates import Renderer
from rules.engine import RuleEngine
from rules.model import RuleSet
from rules.runtime import RuleRuntime

if TYPE_CHECKING:
    from ews.api.server import ApiServer

log = logging.getLogger(__name__)

TransitionListener = Callable[[Transition], None]


class Pipeline:
    def __init__(self, cfg: Config, channels: dict[str, Channel] | None = None):
        self.cfg = cfg
        self.regions, self.sensors = cfg.registries.load()
        self.latest = LatestReadings(len(self.sensors))  # newest reading per sensor, for the API
        # the rules in force: hot reload, profiles by date, no-data timer (rules/runtime.py)
        self.rules = RuleRuntime(cfg, self.sensors)
        # before anything in it is opened: one pipeline process per state
        self._state = statelock.claim(Path(cfg.state_dir), "state_dir")
        self.store = Store(Path(cfg.state_dir) / "warnings.sqlite")
        self.channels = build_channels(cfg.notifiers.channels)
        self.channels.update(channels or {})
        self.listeners: list[TransitionListener] = [self._observe]
        self.api: ApiServer | None = None
        ing = cfg.ingest
        processor = MessageProcessor(
            self.sensors, self.regions, ing.max_payload_bytes, ing.future_tolerance_s,
            ing.allowed_lateness_s, ing.late_policy, ing.unknown_sensor,
        )
        # unregistered-sensor device warnings go through the same lifecycle as rule changes
        self.collector = Collector(
            cfg.mqtt, cfg.influxdb, processor, on_readings=self.on_readings, ingest_cfg=ing,
            spool_dir=cfg.spool_dir,
            on_device=lambda changes: self._apply(changes, self.warnings),
        )
        self.silences = Silences(self.store, self.regions)
        self.warnings, self.outbox = self._warning_lane(self.store, self.silences, cfg.mqtt.warnings_prefix,
                                                        check_reach=True)
        metrics.set_open([Level(int(w["level"])).key for w in self.warnings.open_warnings()])
        # drills get their own detector state, warning store and retained topic, made when the
        # first drill reading arrives: a drill can neither raise nor resolve a real warning
        self._drill: _DrillLane | None = None
        self._drill_lock = threading.Lock()
        self._started = False

    @property
    def engine(self) -> RuleEngine:
        return self.rules.engine

    @engine.setter
    def engine(self, engine: RuleEngine) -> None:
        with self.rules.lock:
            self.rules.engine = engine

    @property
    def ruleset(self) -> RuleSet:
        return self.rules.ruleset  # always the engine's own

    @ruleset.setter
    def ruleset(self, ruleset: RuleSet) -> None:
        if ruleset is not self.rules.ruleset:
            log.warning("a rule set is only put in force with its engine (Pipeline.reload_rules)")

    def reload_rules(self) -> dict[str, Any]:
        """Re-read the rule files now (as the timer would); ConfigError if they do not load."""
        changes = self.rules.reload(force=True, count=False)
        if self.rules.watcher.problems:
            raise ConfigError(self.rules.watcher.problems)
        self._apply(changes, self.warnings)
        return {"level_changes": len(changes)}

    def _warning_lane(self, store: Store, silences: Silences, prefix: str, check_reach: bool = False
                      ) -> tuple[WarningService, OutboxPool]:
        """`check_reach`: say who no configured channel reaches (once: the drill lane's copy
        routes by the same files)."""
        ncfg = self.cfg.notifiers
        outbox = OutboxPool(store, self.channels, groups=ncfg.worker_groups, rate_limits=ncfg.rate_limits)
        roster = Roster.load(ncfg.roster, self.regions) if ncfg.roster is not None else None
        policy = load_policy(ncfg.routing)
        if check_reach:
            say_unreachable(unreachable(self.regions, roster, policy, self.channels))
        warnings = WarningService(
            store, self.regions, self.sensors,
            Router(self.regions, policy, roster),
            Renderer.load(ncfg.language),
            self.collector.publish, list(self.channels),
            topic_prefix=prefix, on_commit=outbox.wake,
            settings=Settings.from_config(ncfg), silences=silences,
        )
        outbox.on_failure = warnings.failure_notices
        warnings.timer_listeners = self.listeners  # resolves confirmed after a quiet period
        return warnings, outbox

    def drill_lane(self) -> _DrillLane:
        with self._drill_lock:
            if self._drill is None:
                store = Store(Path(self.cfg.state_dir) / "drill.sqlite")
                warnings, outbox = self._warning_lane(
                    store, Silences(store, self.regions), self.cfg.mqtt.drill_warnings_prefix)
                self._drill = _DrillLane(RuleEngine(self.ruleset, self.sensors), store, warnings, outbox)
                if self._started:
                    self._drill.start()
            elif self._drill.engine.ruleset is not self.ruleset:
                # the rules were reloaded: a drill follows them from its next reading, afresh
                self._drill.engine = RuleEngine(self.ruleset, self.sensors)
            return self._drill

    def on_readings(self, batch: ReadingBatch) -> None:
        engine, warnings = (self.engine, self.warnings) if not batch.drill else self.drill_lane().pair()
        if not batch.drill:
            self.latest.update(batch, int(time.time() * 1000))
        t0 = time.perf_counter()
        if len(batch):
            warnings.advance(int(batch.ts_ms.max()))  # quiet periods run on event time
        changes = engine.process(batch) if batch.drill else self.rules.process(batch)
        metrics.RULE_SECONDS.observe(time.perf_counter() - t0)
        self._apply(changes, warnings)

    def _apply(self, changes: list[LevelChange], warnings: WarningService) -> None:
        if not changes:
            return
        for c in changes:
            metrics.LEVEL_CHANGES.labels(c.rule_id).inc()
        for t in warnings.apply(changes):
            for listener in self.listeners:
                try:
                    listener(t)
                except Exception:
                    log.exception("transition listener failed")

    def start(self) -> None:
        if self.cfg.cpus is not None:
            affinity.pin(self.cfg.cpus)
        # batches reuse the memory they free, and the ingest workers map theirs now, while the
        # rules are rebuilt, not page by page in the backlog a restart catches up on (ews/heap.py);
        # the database is ready before the connect, so that backlog flows as soon as it comes
        heap.keep_freed_memory()
        self.collector.start_workers()
        self.collector.prepare()
        log.info(
            "pipeline: %d regions, %d sensors, %d rules (version %s), channels %s",
            len(self.regions.nodes), len(self.sensors), len(self.ruleset.rules), self.ruleset.version,
            ", ".join(self.channels),
        )
        self.outbox.start()
        self.warnings.start()
        with self._drill_lock:
            self._started = True
            if self._drill is not None:
                self._drill.start()
        # detector state from recent history (InfluxDB's and what waits in the spool), lined up
        # with the stored warnings, before any new reading: a restart neither misses nor repeats
        # a warning
        self._apply(self.rules.rebuild(self.cfg.influxdb, self.warnings.open_warnings(),
                                       frozenset({UNREGISTERED_RULE}),
                                       spooled=self.collector.sinks[False].spool.contents()), self.warnings)
        heap.settle()
        self.collector.start()
        self.rules.start(lambda changes: self._apply(changes, self.warnings),
                         feed_up=lambda: self.collector.subscribed,
                         open_warnings=self.warnings.open_warnings,
                         spooled=self.collector.sinks[False].spool.contents)
        # consumers that connect later still see the current state of every community
        self.warnings.publish_state({w["community"] for w in self.warnings.open_warnings()})
        metrics.set_rules(self.ruleset.version, len(self.ruleset.rules) + len(self.ruleset.faults))
        if self.cfg.api is not None:
            from ews.api.server import ApiServer

            self.api = ApiServer(self, self.cfg.api)
            self.api.start()

    def _observe(self, t: Transition) -> None:
        """Stage metrics of a real (not drill) warning transition."""
        if t.warning.get("drill"):
            return
        metrics.observe_transition(t.type, t.level_before.key, t.level_after.key,
                                   int(t.warning["updated_event_ts_ms"]), int(t.warning["updated_ts_ms"]))

    def stop(self) -> None:
        self.rules.stop()
        if self.api is not None:
            self.api.stop()
        self.collector.stop()
        self.warnings.stop()
        self.outbox.stop()
        self.store.close()
        if self._drill is not None:
            self._drill.stop()
        for ch in self.channels.values():
            try:
                ch.close()  # HTTP pools, the devices' MQTT client, the CAP feed server
            except Exception:
                log.exception("closing channel %s failed", ch.name)
        statelock.release(self._state)

    def idle(self) -> bool:
        """Nothing queued in ingest and nothing due in the outbox."""
        drill_idle = self._drill is None or self._drill.store.pending_count() == 0
        return self.collector.pending == 0 and self.store.pending_count() == 0 and drill_idle


@dataclass
class _DrillLane:
    """What a drill runs on: its own rules engine state, warning store, service and outbox."""

    engine: RuleEngine
    store: Store
    warnings: WarningService
    outbox: OutboxPool

    def pair(self) -> tuple[RuleEngine, WarningService]:
        return self.engine, self.warnings

    def start(self) -> None:
        self.outbox.start()
        self.warnings.start()

    def stop(self) -> None:
        self.warnings.stop()
        self.outbox.stop()
        self.store.close()
