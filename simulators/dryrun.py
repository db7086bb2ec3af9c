"""A scenario through the rules engine alone, no broker or database: what it would raise.

Drill staff check a scenario file before a drill (`ews simulate FILE --dry-run`), and tests
check every shipped scenario's `expect:` section quickly this way; the full path through
MQTT, InfluxDB and the warning service is tested separately.
"""

from __future__ import annotations

from typing import Any

from ews.models import ReadingBatch
from ews.sensors import SensorRegistry
from rules.engine import RuleEngine
from rules.model import RuleSet
from simulators.scenario import Scenario
from simulators.stream import Stream


def warnings_of(stream: Stream, sensors: SensorRegistry, ruleset: RuleSet) -> list[dict[str, Any]]:
    """One row per (rule, subject) that left level none: rule, subject, community, peak_level."""
    engine = RuleEngine(ruleset, sensors)
    changes = engine.process(ReadingBatch(stream.sensor, stream.ts, stream.value))
    peaks: dict[tuple[str, str], dict[str, Any]] = {}
    for c in changes:
        row = peaks.setdefault((c.rule_id, c.subject), {
            "rule": c.rule_id, "subject": c.subject, "community": c.community, "peak_level": 0,
            "first_event_ts_ms": c.event_ts_ms,
        })
        row["peak_level"] = max(row["peak_level"], int(c.after))
    return list(peaks.values())


def unmet(scenario: Scenario, warnings: list[dict[str, Any]], sensors: SensorRegistry) -> list[str]:
    """The scenario's expectations the warnings fail, each with the reason."""
    return [why for e in scenario.expect if (why := e.unmet(warnings, sensors)) is not None]
