"""What the API needs from a running pipeline, in one place.

Routes read and write through this object only, so the API can be built over a pipeline
that is not connected to anything (tests feed readings straight into `on_readings`) and the
pipeline's internals can move without touching the routes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ews.latest import LatestReadings
from ews.regions import RegionRegistry
from ews.sensors import SensorRegistry
from ews.store import Store
from ingest.influx_v1 import InfluxV1
from notifiers.lifecycle import Transition, WarningService
from notifiers.silence import Silences
from rules.engine import RuleEngine
from rules.model import RuleSet

if TYPE_CHECKING:
    from ews.config import ApiConfig
    from ews.pipeline import Pipeline


@dataclass
class ApiContext:
    regions: RegionRegistry
    sensors: SensorRegistry
    store: Store
    warnings: WarningService
    silences: Silences
    latest: LatestReadings
    engine: Callable[[], RuleEngine]  # the engine in force (a reload replaces it)
    ruleset: Callable[[], RuleSet]
    reload_rules: Callable[[str], dict[str, Any]]  # actor -> summary; raises ConfigError
    mqtt_ready: Callable[[], bool]
    influx: InfluxV1 | None  # the API's own client: reads for charts, the readiness probe
    listeners: list[Callable[[Transition], None]] = field(default_factory=list)
    influx_url: str = ""

    @classmethod
    def from_pipeline(cls, p: Pipeline, api_cfg: ApiConfig) -> ApiContext:
        from ingest.influx import make_reader

        influx = make_reader(p.cfg.influxdb, timeout_s=api_cfg.influx_timeout_s)
        return cls(
            regions=p.regions, sensors=p.sensors, store=p.store, warnings=p.warnings,
            silences=p.silences, latest=p.latest,
            engine=lambda: p.engine, ruleset=lambda: p.ruleset, reload_rules=lambda _actor: p.reload_rules(),
            mqtt_ready=lambda: p.collector.subscribed, influx=influx,
            listeners=p.listeners, influx_url=p.cfg.influxdb.url,
        )
