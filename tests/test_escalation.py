"""Escalation up the region tree when nobody acknowledges: community -> street -> district."""

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

A1 = ["duty_officer-440106001001", "grid_staff-440106001001"]
STREET_DUTY = ["duty_officer-440106001"]
DISTRICT_DUTY = ["duty_officer-440106"]


def _settings() -> Settings:
    cfg = NotifierConfig(timers={
        "blue": LevelTimers(remind_s=60, escalate_s=120),
        "yellow": LevelTimers(remind_s=None, escalate_s=600),
    })
    return Settings.from_config(cfg)


def test_unacknowledged_blue_climbs_to_the_district(
    tmp_path: Path, mini_regions: RegionRegistry, mini_sensors: SensorRegistry
) -> None:
    store = Store(tmp_path / "ews.sqlite")
    clock = Clock(T0)
    pub = Published()
    svc = make_service(store, mini_regions, mini_sensors, clock, _settings(), pub=pub)
    (t,) = svc.apply([change(Level.NONE, Level.BLUE, 51.0, T0)])
    wid = t.warning["id"]

    steps = []
    for _ in range(6):  # t = 60, 120, ..., 360 s
        clock.advance(60)
        steps.append(svc.tick())
    assert steps == [1, 1, 1, 1, 1, 1]
    assert sent_to(store) == [
        ("transition", "open", A1),                              # t=0: blue stays in the community
        ("remind", "remind", A1),                                # t=60
        ("escalate", "escalate", STREET_DUTY),                   # t=120: nobody answered: the street
        ("remind", "remind", A1 + STREET_DUTY),                  # t=180: reminders reach it too
        ("escalate", "escalate", DISTRICT_DUTY),                 # t=240: then the district
        ("remind", "remind", A1 + STREET_DUTY + DISTRICT_DUTY),  # t=300
    ]  # t=360: the top of the tree is reached; the timer notes it once and stops escalating
    actions = [a["action"] for a in store.audit_log(wid)]
    assert actions.count("warning.escalate") == 2
    assert actions[-1] == "warning.escalation_exhausted"
    esc = [a["detail"] for a in store.audit_log(wid) if a["action"] == "warning.escalate"]
    assert [(e["tier"], e["node"], e["recipients"]) for e in esc] == [
        ("street", "440106001", STREET_DUTY), ("district", "440106", DISTRICT_DUTY)]
    msg = next(r["payload"]["message"] for r in store.outbox() if r["notice"] == "escalate")
    assert msg == ("【升级上报】天河区 车陂街道 车陂社区 暴雨蓝色预警：3小时累计雨量 51.0 毫米（2024-11-28 13:40）"
                   "（2分钟内无人确认，已上报车陂街道）")
    assert pub.messages[-1][1]["warnings"][0]["escalated_to"] == "district"

    # the district's duty officer acknowledges: quiet from then on
    svc.acknowledge(wid, "duty_officer-440106", "已调度")
    clock.advance(3600)
    assert svc.tick() == 0
    assert len(store.outbox()) == 6

    # a raise to yellow reaches yellow's tiers and everyone escalation added, and the
    # acknowledgement is for blue only: yellow's clock starts again
    svc.apply([change(Level.BLUE, Level.YELLOW, 55.0, T0 + 600_000)])
    assert sent_to(store, 6) == [("transition", "raise", A1 + STREET_DUTY + DISTRICT_DUTY)]
    # and the lift reaches them all too
    svc.apply([change(Level.YELLOW, Level.NONE, 5.0, T0 + 1_200_000)])
    assert sent_to(store, 7) == [("transition", "resolve", A1 + STREET_DUTY + DISTRICT_DUTY)]
    clock.advance(3600)
    assert svc.tick() == 0


def test_acknowledged_in_time_never_escalates(
    tmp_path: Path, mini_regions: RegionRegistry, mini_sensors: SensorRegistry
) -> None:
    store = Store(tmp_path / "ews.sqlite")
    clock = Clock(T0)
    svc = make_service(store, mini_regions, mini_sensors, clock, _settings())
    (t,) = svc.apply([change(Level.NONE, Level.YELLOW, 52.0, T0)])
    clock.advance(599)
    assert svc.tick() == 0  # yellow has no reminders; escalation is due at 600 s
    svc.acknowledge(t.warning["id"], "grid_staff-440106001001")
    clock.advance(3600)
    assert svc.tick() == 0
    assert sent_to(store) == [("transition", "open", A1 + STREET_DUTY)]


def test_escalation_skips_a_tier_with_nobody_and_survives_restart(
    tmp_path: Path, mini_regions: RegionRegistry, mini_sensors: SensorRegistry
) -> None:
    db = tmp_path / "ews.sqlite"
    clock = Clock(T0)
    # street B has a duty officer, community B1 only a duty officer: escalation roles are
    # leaders, so street B (no leader) is skipped and the district's leader is next
    policy_text = (Path(__file__).parent.parent / "notifiers" / "templates" / "routing.yaml").read_text(
        encoding="utf-8").replace("escalation:\n  roles: [duty_officer]", "escalation:\n  roles: [leader]")
    p = tmp_path / "routing.yaml"
    p.write_text(policy_text, encoding="utf-8")
    policy = load_policy(p)
    svc = make_service(Store(db), mini_regions, mini_sensors, clock, _settings(), policy=policy)
    svc.apply([change(Level.NONE, Level.BLUE, 51.0, T0, subject="RG-B1", community="440106002001")])
    clock.advance(60)
    assert svc.tick() == 1  # a reminder
    svc.store.close()

    store = Store(db)
    again = make_service(store, mini_regions, mini_sensors, clock, _settings(), policy=policy)
    clock.advance(60)
    assert again.tick() == 1
    assert sent_to(store) == [
        ("transition", "open", ["duty_officer-440106002001"]),
        ("remind", "remind", ["duty_officer-440106002001"]),
        ("escalate", "escalate", ["leader-440106"]),
    ]
