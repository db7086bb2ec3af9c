"""The wiring: MQTT collector -> InfluxDB -> rules engine -> warning lifecycle -> outbox.

Follow one reading: `Collector._handle` stores and acknowledges it, then calls
`Pipeline.on_readings`, which runs the rules engine and hands level changes to the warning
service; the service commits transitions with their outbox rows and wakes the outbox worker,
which delivers them on its own thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from ews import metrics
from ews.config import Config
from ews.models import ReadingBatch
from ews.regions import RegionRegistry
from ews.sensors import SensorRegistry
from ews.store import Store
from ingest.collector import Collector
from ingest.process import MessageProcessor
from notifiers.channels import Channel, build_channels
from notifiers.lifecycle import Transition, WarningService
from notifiers.outbox import OutboxWorker
from notifiers.routing import Router, load_policy
from notifiers.templates import Renderer
from rules.engine import RuleEngine
from rules.loader import load_rules

log = logging.getLogger(__name__)

TransitionListener = Callable[[Transition], None]


class Pipeline:
    def __init__(self, cfg: Config, channels: dict[str, Channel] | None = None):
        self.cfg = cfg
        self.regions = RegionRegistry.load(cfg.registries.regions)
        self.sensors = SensorRegistry.load(cfg.registries.sensors, self.regions)
        self.ruleset = load_rules(cfg.rules, cfg.rules_profile)
        self.engine = RuleEngine(self.ruleset, self.sensors)
        for problem in self.engine.bind_problems:
            log.warning("rule binding: %s", problem)
        Path(cfg.state_dir).mkdir(parents=True, exist_ok=True)
        self.store = Store(Path(cfg.state_dir) / "warnings.sqlite")
        self.channels = build_channels(cfg.notifiers.channels)
        self.channels.update(channels or {})
        self.listeners: list[TransitionListener] = []
        processor = MessageProcessor(
            self.sensors, self.regions, cfg.ingest.max_payload_bytes, cfg.ingest.future_tolerance_s
        )
        self.collector = Collector(cfg.mqtt, cfg.influxdb, processor, on_readings=self.on_readings)
        self.outbox = OutboxWorker(self.store, self.channels)
        self.warnings = WarningService(
            self.store, self.regions, self.sensors,
            Router(self.regions, load_policy(cfg.notifiers.routing)),
            Renderer.load(cfg.notifiers.language),
            self.collector.publish, list(self.channels),
            topic_prefix=cfg.mqtt.warnings_prefix, on_commit=self.outbox.wake,
        )

    def on_readings(self, batch: ReadingBatch) -> None:
        t0 = time.perf_counter()
        changes = self.engine.process(batch)
        metrics.RULE_SECONDS.observe(time.perf_counter() - t0)
        if not changes:
            return
        for c in changes:
            metrics.LEVEL_CHANGES.labels(c.rule_id).inc()
        for t in self.warnings.apply(changes):
            for listener in self.listeners:
                try:
                    listener(t)
                except Exception:
                    log.exception("transition listener failed")

    def start(self) -> None:
        log.info(
            "pipeline: %d regions, %d sensors, %d rules (version %s), channels %s",
            len(self.regions.nodes), len(self.sensors), len(self.ruleset.rules), self.ruleset.version,
            ", ".join(self.channels),
        )
        self.outbox.start()
        self.collector.start()
        # consumers that connect later still see the current state of every community
        self.warnings.publish_state({w["community"] for w in self.warnings.open_warnings()})

    def stop(self) -> None:
        self.collector.stop()
        self.outbox.stop()
        self.store.close()

    def idle(self) -> bool:
        """Nothing queued in ingest and nothing due in the outbox."""
        return self.collector.pending == 0 and self.store.pending_count() == 0
