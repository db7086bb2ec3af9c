"""Drill warnings (演练): only the drill audience hears of them, and every message says so."""

from __future__ import annotations

from pathlib import Path

from ews.config import LevelTimers, NotifierConfig
from ews.levels import Level
from ews.regions import RegionRegistry
from ews.sensors import SensorRegistry
from ews.store import Store
from notifiers.lifecycle import Settings
from notifiers.routing import load_policy
from tests.test_lifecycle import T0, Clock, Published, change, make_service, sent_to

# the packaged policy's drill section: community and street duty officers, at every level
DRILL_A1 = ["duty_officer-440106001001", "duty_officer-440106001"]


def test_a_red_drill_reaches_the_drill_audience_only(
    tmp_path: Path, mini_regions: RegionRegistry, mini_sensors: SensorRegistry
) -> None:
    store = Store(tmp_path / "ews.sqlite")
    clock = Clock(T0)
    pub = Published()
    timers = NotifierConfig(timers={"red": LevelTimers(remind_s=60, escalate_s=120)})
    svc = make_service(store, mini_regions, mini_sensors, clock, Settings.from_config(timers),
                       channels=("console", "webhook"), pub=pub)
    svc.apply([change(Level.NONE, Level.RED, 120.0, T0, drill=True)])
    # not the grid staff, no leaders, not the district, and never the public (sirens, feeds)
    assert sent_to(store) == [("transition", "open", DRILL_A1), ("transition", "open", DRILL_A1)]
    for _ in range(2):
        clock.advance(60)
        svc.tick()
    # the reminder goes to the drill audience; escalation finds no drill audience at the
    # district and stops there
    assert sent_to(store, 2) == [("remind", "remind", DRILL_A1), ("remind", "remind", DRILL_A1)]
    svc.apply([change(Level.RED, Level.NONE, 3.0, T0 + 600_000, drill=True)])
    assert sent_to(store, 4) == [("transition", "resolve", DRILL_A1)] * 2

    # labelled in every message, marked in every payload and on the retained topic
    for r in store.outbox():
        assert "【演练】" in r["payload"]["message"], r["payload"]["message"]
        assert r["payload"]["drill"] is True and r["payload"]["warning"]["drill"] is True
    assert store.outbox()[2]["payload"]["message"].startswith("【提醒】【演练】天河区")
    assert pub.messages[0][1]["warnings"][0]["drill"] is True


def test_drill_escalates_within_the_drill_audience(
    tmp_path: Path, mini_regions: RegionRegistry, mini_sensors: SensorRegistry
) -> None:
    text = (Path(__file__).parent.parent / "notifiers" / "templates" / "routing.yaml").read_text(encoding="utf-8")
    text = text.replace("  - {tier: community, roles: [duty_officer]}\n  - {tier: street, roles: [duty_officer]}",
                        "  - {tier: community, roles: [duty_officer]}\n  - {tier: district, roles: [leader]}")
    p = tmp_path / "routing.yaml"
    p.write_text(text, encoding="utf-8")
    store = Store(tmp_path / "ews.sqlite")
    clock = Clock(T0)
    timers = NotifierConfig(timers={"blue": LevelTimers(remind_s=None, escalate_s=60)})
    svc = make_service(store, mini_regions, mini_sensors, clock, Settings.from_config(timers),
                       policy=load_policy(p))
    svc.apply([change(Level.NONE, Level.BLUE, 51.0, T0, drill=True)])
    clock.advance(60)
    svc.tick()
    clock.advance(60)
    svc.tick()
    assert sent_to(store) == [
        ("transition", "open", ["duty_officer-440106001001", "leader-440106"]),
    ]  # the district's drill leader already has it; the street has no drill audience


def test_a_policy_without_a_drill_section_tells_nobody(
    tmp_path: Path, mini_regions: RegionRegistry, mini_sensors: SensorRegistry
) -> None:
    p = tmp_path / "routing.yaml"
    p.write_text("levels:\n  blue: [{tier: community, roles: [duty_officer]}]\n  yellow: []\n  orange: []\n"
                 "  red: []\n", encoding="utf-8")
    store = Store(tmp_path / "ews.sqlite")
    svc = make_service(store, mini_regions, mini_sensors, Clock(T0), policy=load_policy(p))
    (drill,) = svc.apply([change(Level.NONE, Level.BLUE, 51.0, T0, drill=True)])
    (real,) = svc.apply([change(Level.NONE, Level.BLUE, 51.0, T0, subject="RG-A2", community="440106001002")])
    assert (drill.channels, real.channels) == ((), ("console",))
    # recorded all the same
    assert [t["type"] for t in store.transitions(drill.warning["id"])] == ["open"]


def test_drill_readings_make_drill_warnings(mini_regions: RegionRegistry, mini_sensors: SensorRegistry) -> None:
    """ReadingBatch.drill carries through the rules engine to the LevelChange."""
    from ews.models import ReadingBatch
    from rules.engine import RuleEngine
    from rules.loader import load_rules

    engine = RuleEngine(load_rules(None), mini_sensors)
    gas = mini_sensors.index["GS-B1"]
    changes = engine.process(ReadingBatch.of([gas], [T0], [60.0], drill=True))
    assert changes and all(c.drill for c in changes)
