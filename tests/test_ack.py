"""Acknowledgement: who, when, with what comment; refusals; it stops reminders; a raise clears it."""

from __future__ import annotations

from pathlib import Path

import pytest

from ews.config import LevelTimers, NotifierConfig
from ews.levels import Level
from ews.regions import RegionRegistry
from ews.sensors import SensorRegistry
from ews.store import Store
from notifiers.ack import AckError, AlreadyAcknowledged, UnknownWarning, WarningResolved
from notifiers.lifecycle import Settings
from tests.test_lifecycle import T0, Clock, Published, change, make_service, sent_to

COMMUNITY = ["duty_officer-440106001001", "grid_staff-440106001001"]
STREET = ["duty_officer-440106001"]


def _settings() -> Settings:
    timers = {lv: LevelTimers(remind_s=300, escalate_s=None) for lv in ("blue", "yellow", "orange", "red")}
    return Settings.from_config(NotifierConfig(timers=timers))  # type: ignore[arg-type]


def test_acknowledge_records_who_when_and_why(
    tmp_path: Path, mini_regions: RegionRegistry, mini_sensors: SensorRegistry
) -> None:
    store = Store(tmp_path / "ews.sqlite")
    clock = Clock(T0 + 60_000)
    pub = Published()
    svc = make_service(store, mini_regions, mini_sensors, clock, _settings(), pub=pub)
    (t,) = svc.apply([change(Level.NONE, Level.YELLOW, 52.0, T0)])
    wid = t.warning["id"]

    clock.advance(150)
    got = svc.acknowledge(wid, " 王艳 ", "已通知巡查人员到场")
    assert (got["id"], got["acknowledged"], got["acknowledged_by"], got["ack_comment"]) == (
        wid, True, "王艳", "已通知巡查人员到场")
    assert got["acknowledged_ts"] == "2024-11-28T13:43:30.000+08:00"  # T0 + 210 s, Beijing time
    stored = store.warning(wid)
    assert stored is not None
    assert (stored["acknowledged_by"], stored["acknowledged_ts_ms"]) == ("王艳", T0 + 210_000)
    (row,) = [a for a in store.audit_log(wid) if a["action"] == "warning.acknowledge"]
    assert (row["actor"], row["ts_ms"], row["detail"]["comment"], row["detail"]["since_issued_ms"]) == (
        "王艳", T0 + 210_000, "已通知巡查人员到场", 150_000)
    # the retained state shows it to displays and other desks
    assert pub.messages[-1][1]["warnings"][0]["acknowledged_by"] == "王艳"

    # acknowledged: no reminder however long it stays open
    clock.advance(3600)
    assert svc.tick() == 0
    assert [n for n, _, _ in sent_to(store)] == ["transition"]


def test_refusals_name_the_reason(
    tmp_path: Path, mini_regions: RegionRegistry, mini_sensors: SensorRegistry
) -> None:
    store = Store(tmp_path / "ews.sqlite")
    clock = Clock(T0)
    svc = make_service(store, mini_regions, mini_sensors, clock)
    (t,) = svc.apply([change(Level.NONE, Level.YELLOW, 52.0, T0)])
    wid = t.warning["id"]
    with pytest.raises(UnknownWarning) as unknown:
        svc.acknowledge("W-nope", "张三")
    assert unknown.value.code == "not_found"
    with pytest.raises(AckError, match="names who"):
        svc.acknowledge(wid, "  ")
    svc.acknowledge(wid, "张三")
    with pytest.raises(AlreadyAcknowledged) as twice:
        svc.acknowledge(wid, "李四")
    assert twice.value.code == "already_acknowledged" and "张三" in str(twice.value)
    svc.apply([change(Level.YELLOW, Level.NONE, 1.0, T0 + 60_000)])
    with pytest.raises(WarningResolved) as resolved:
        svc.acknowledge(wid, "李四")
    assert resolved.value.code == "resolved"
    # refusals leave no trace in the record
    assert [a["actor"] for a in store.audit_log(wid) if a["action"] == "warning.acknowledge"] == ["张三"]


def test_reminders_until_acknowledged_and_again_after_a_raise(
    tmp_path: Path, mini_regions: RegionRegistry, mini_sensors: SensorRegistry
) -> None:
    store = Store(tmp_path / "ews.sqlite")
    clock = Clock(T0)
    svc = make_service(store, mini_regions, mini_sensors, clock, _settings())
    (t,) = svc.apply([change(Level.NONE, Level.BLUE, 51.0, T0)])
    wid = t.warning["id"]
    clock.advance(299.999)
    assert svc.tick() == 0
    clock.advance(0.001)
    assert svc.tick() == 1  # first reminder at 5 min
    clock.advance(300)
    assert svc.tick() == 1  # and every 5 min after
    svc.acknowledge(wid, "王艳", "处理中")
    clock.advance(900)
    assert svc.tick() == 0

    # a raise clears the acknowledgement: the higher level must be taken in hand again
    (raised,) = svc.apply([change(Level.BLUE, Level.YELLOW, 55.0, T0 + 1_500_000)])
    assert raised.warning["acknowledged"] is False and raised.warning["acknowledged_by"] is None
    clock.advance(300)
    assert svc.tick() == 1
    assert sent_to(store) == [
        ("transition", "open", COMMUNITY),
        ("remind", "remind", COMMUNITY),
        ("remind", "remind", COMMUNITY),
        ("transition", "raise", COMMUNITY + STREET),
        ("remind", "remind", COMMUNITY + STREET),
    ]
    keys = [r["idempotency_key"] for r in store.outbox() if r["notice"] == "remind"]
    assert keys == [f"{wid}:remind1:console", f"{wid}:remind2:console", f"{wid}:remind3:console"]
    texts = [r["payload"]["message"] for r in store.outbox() if r["notice"] == "remind"]
    assert texts[0] == ("【提醒】天河区 车陂街道 车陂社区 暴雨蓝色预警：3小时累计雨量 51.0 毫米"
                        "（2024-11-28 13:40）（已5分钟无人确认，第1次提醒）")


def test_acknowledgement_survives_restart(
    tmp_path: Path, mini_regions: RegionRegistry, mini_sensors: SensorRegistry
) -> None:
    db = tmp_path / "ews.sqlite"
    clock = Clock(T0)
    first = make_service(Store(db), mini_regions, mini_sensors, clock, _settings())
    (t,) = first.apply([change(Level.NONE, Level.ORANGE, 62.0, T0)])
    first.acknowledge(t.warning["id"], "郭健", "")
    first.store.close()

    store = Store(db)
    again = make_service(store, mini_regions, mini_sensors, clock, _settings())
    (w,) = again.open_warnings()
    assert (w["acknowledged"], w["acknowledged_by"]) == (True, "郭健")
    clock.advance(3600)
    assert again.tick() == 0
    with pytest.raises(AlreadyAcknowledged):
        again.acknowledge(t.warning["id"], "郭健")
