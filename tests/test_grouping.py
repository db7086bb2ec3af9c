"""Grouping: several sensors of a community, several communities of a street, one message each."""

from __future__ import annotations

from pathlib import Path

from ews.levels import Level
from ews.regions import RegionRegistry
from ews.sensors import SensorRegistry
from ews.store import Store
from notifiers.lifecycle import Settings
from tests.test_lifecycle import T0, Clock, change, make_service

A1 = ["duty_officer-440106001001", "grid_staff-440106001001"]
A2 = ["duty_officer-440106001002", "grid_staff-440106001002"]
B1 = ["duty_officer-440106002001"]
STREET_A = ["duty_officer-440106001"]
WINDOW = Settings(group_window_ms=30_000)


def _rows(store: Store) -> list[tuple[str, list[str], list[str]]]:
    """(notice, recipient ids, subjects of the items) of each outbox row."""
    out = []
    for r in store.outbox():
        items = r["payload"].get("items") or [r["payload"]]
        out.append((r["notice"], [x["id"] for x in r["recipients"]], [i["warning"]["subject"] for i in items]))
    return out


def test_one_message_per_recipient_per_window(
    tmp_path: Path, mini_regions: RegionRegistry, mini_sensors: SensorRegistry
) -> None:
    db = tmp_path / "ews.sqlite"
    clock = Clock(T0)
    svc = make_service(Store(db), mini_regions, mini_sensors, clock, WINDOW)
    ponding = {"rule_id": "ponding", "kind": "ponding", "measure": "ponding", "unit": "cm"}
    svc.apply([change(Level.NONE, Level.YELLOW, 55.0, T0)])                        # RG-A1 in A1
    clock.advance(5)
    svc.apply([change(Level.NONE, Level.BLUE, 16.0, T0, subject="PD-A1", **ponding)])  # PD-A1 in A1
    clock.advance(5)
    svc.apply([change(Level.NONE, Level.YELLOW, 53.0, T0, subject="RG-A2", community="440106001002")])
    clock.advance(2)
    svc.apply([change(Level.NONE, Level.BLUE, 51.0, T0, subject="RG-B1", community="440106002001")])
    assert svc.store.outbox() == []  # everything is held
    assert len(svc.store.held()) == 3 + 2 + 3 + 1

    clock.ms = T0 + 29_999
    assert svc.tick() == 0
    # the process dies here; the held items are in SQLite and the window goes on
    svc.store.close()
    store = Store(db)
    svc = make_service(store, mini_regions, mini_sensors, clock, WINDOW)

    clock.ms = T0 + 30_000  # the first item's window is over: its recipients' groups go
    assert svc.tick() == 2
    assert _rows(store) == [
        # A1's duty officer and grid staff: both sensors of their community, one message
        ("group", A1, ["RG-A1", "PD-A1"]),
        # the street's duty officer: both communities of the street, one message
        ("group", STREET_A, ["RG-A1", "RG-A2"]),
    ]
    first = store.outbox()[0]
    assert first["payload"]["message"] == (
        "2条预警动态（2024-11-28 13:40）：\n"
        "1. 天河区 车陂街道 车陂社区 暴雨黄色预警：3小时累计雨量 55.0 毫米（2024-11-28 13:40）\n"
        "2. 天河区 车陂街道 车陂社区 道路积水蓝色预警：积水深度 16 厘米（2024-11-28 13:40）"
    )
    # the headline warning of a group is its most severe item
    assert first["payload"]["warning"]["subject"] == "RG-A1"
    assert [i["transition"] for i in first["payload"]["items"]] == ["open", "open"]

    clock.ms = T0 + 40_000
    assert svc.tick() == 1
    clock.ms = T0 + 42_000
    assert svc.tick() == 1
    assert _rows(store)[2:] == [
        ("transition", A2, ["RG-A2"]),  # alone in its window: an ordinary message
        ("transition", B1, ["RG-B1"]),
    ]
    assert store.held() == []
    keys = [r["idempotency_key"] for r in store.outbox()]
    assert len(set(keys)) == 4 and all(k.startswith("G") for k in keys)
    # every group is in the audit log with the transitions it carried
    groups = [a["detail"] for a in store.audit_log() if a["action"] == "notify.group"]
    assert [len(g["items"]) for g in groups] == [2, 2, 1, 1]


def test_public_audience_is_never_held(
    tmp_path: Path, mini_regions: RegionRegistry, mini_sensors: SensorRegistry
) -> None:
    store = Store(tmp_path / "ews.sqlite")
    clock = Clock(T0)
    svc = make_service(store, mini_regions, mini_sensors, clock, WINDOW, channels=("console", "webhook"))
    (t,) = svc.apply([change(Level.NONE, Level.RED, 120.0, T0)])
    # red reaches the public on the webhook at once; staff wait for the window
    assert [(r["channel"], r["idempotency_key"], [x["id"] for x in r["recipients"]]) for r in store.outbox()] == [
        ("webhook", f"{t.transition_id}:webhook", ["public:440106001001"])]
    clock.advance(30)
    assert svc.tick() == 2  # console and webhook, each with every member of staff
    staff = A1 + STREET_A + ["leader-440106001", "duty_officer-440106", "leader-440106"]
    assert [(r["channel"], r["notice"], [x["id"] for x in r["recipients"]]) for r in store.outbox()[1:]] == [
        ("console", "transition", staff), ("webhook", "transition", staff)]


def test_drill_and_real_items_never_share_a_message(
    tmp_path: Path, mini_regions: RegionRegistry, mini_sensors: SensorRegistry
) -> None:
    store = Store(tmp_path / "ews.sqlite")
    clock = Clock(T0)
    svc = make_service(store, mini_regions, mini_sensors, clock, WINDOW)
    svc.apply([change(Level.NONE, Level.YELLOW, 55.0, T0)])
    svc.apply([change(Level.NONE, Level.YELLOW, 53.0, T0, subject="RG-A2", community="440106001002",
                      drill=True)])
    clock.advance(30)
    svc.tick()
    by_drill = {(r["payload"]["drill"], x["id"]): r["notice"] for r in store.outbox() for x in r["recipients"]}
    # the street's duty officer gets one real and one drill message, not one group of two
    assert by_drill[(False, "duty_officer-440106001")] == "transition"
    assert by_drill[(True, "duty_officer-440106001")] == "transition"
