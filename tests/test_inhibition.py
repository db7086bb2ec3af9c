"""Inhibition: a higher level, or a device fault, keeps lower warnings of the same subject quiet."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ews.levels import Level
from ews.regions import RegionRegistry
from ews.sensors import SensorRegistry
from ews.store import Store
from tests.test_lifecycle import T0, Clock, Published, change, make_service, sent_to

A1 = ["duty_officer-440106001001", "grid_staff-440106001001"]
B1 = ["duty_officer-440106002001"]
STREET_A = ["duty_officer-440106001"]
STREET_B = ["duty_officer-440106002"]
RAIN_12H: dict[str, Any] = {"rule_id": "rain-12h", "measure": "rain_12h"}
NODATA: dict[str, Any] = {"rule_id": "device-nodata", "kind": "device", "measure": "nodata", "unit": "s",
                          "subject": "RG-B1", "community": "440106002001"}


def test_higher_level_on_the_same_gauge_keeps_the_lower_one_quiet(
    tmp_path: Path, mini_regions: RegionRegistry, mini_sensors: SensorRegistry
) -> None:
    store = Store(tmp_path / "ews.sqlite")
    clock = Clock(T0)
    pub = Published()
    svc = make_service(store, mini_regions, mini_sensors, clock, pub=pub)
    (orange,) = svc.apply([change(Level.NONE, Level.ORANGE, 62.0, T0)])         # rain-3h on RG-A1
    (blue,) = svc.apply([change(Level.NONE, Level.BLUE, 70.0, T0, **RAIN_12H)])  # rain-12h on RG-A1
    # another gauge is not inhibited by RG-A1's warning
    (other,) = svc.apply([change(Level.NONE, Level.BLUE, 51.0, T0, subject="RG-A2", community="440106001002",
                                 **RAIN_12H)])
    orange_people = A1 + STREET_A + ["leader-440106001", "duty_officer-440106"]
    assert sent_to(store) == [
        ("transition", "open", orange_people),
        ("transition", "open", ["duty_officer-440106001002", "grid_staff-440106001002"]),
    ]
    # the inhibited warning is stored, audited with its reason and published as usual
    (audit,) = [a for a in store.audit_log(blue.warning["id"]) if a["action"] == "warning.open"]
    assert audit["detail"]["suppressed"] == {
        "by": "inhibited", "id": orange.warning["id"], "rule": "rain-3h", "kind": "rain", "level": "orange"}
    assert {w["rule"] for w in pub.messages[-2][1]["warnings"]} == {"rain-3h", "rain-12h"}
    assert other.channels == ("console",)

    # the 3-hour warning ends; the 12-hour blue is still there: now its people hear of it
    svc.apply([change(Level.ORANGE, Level.NONE, 20.0, T0 + 3_600_000)])
    assert sent_to(store, 2) == [("transition", "resolve", orange_people)]
    assert svc.tick() == 1
    assert sent_to(store, 3) == [("transition", "open", A1)]
    late = store.outbox()[3]
    assert late["idempotency_key"] == f"{blue.warning['id']}:late1:console"
    assert late["payload"]["warning"]["rule"] == "rain-12h"
    assert svc.tick() == 0  # told once


def test_device_fault_keeps_hazards_from_that_device_quiet(
    tmp_path: Path, mini_regions: RegionRegistry, mini_sensors: SensorRegistry
) -> None:
    store = Store(tmp_path / "ews.sqlite")
    clock = Clock(T0)
    svc = make_service(store, mini_regions, mini_sensors, clock, channels=("console", "webhook"))
    (fault,) = svc.apply([change(Level.NONE, Level.YELLOW, 1800.0, T0, **NODATA)])
    # the gauge's data cannot be trusted: its red rainstorm warning is recorded, not sent
    (red,) = svc.apply([change(Level.NONE, Level.RED, 130.0, T0 + 60_000, subject="RG-B1",
                               community="440106002001")])
    # a neighbour in another community is unaffected
    svc.apply([change(Level.NONE, Level.BLUE, 51.0, T0 + 60_000)])
    assert sent_to(store) == [
        ("transition", "open", B1 + STREET_B),   # the device fault (yellow), console
        ("transition", "open", B1 + STREET_B),   # and webhook
        ("transition", "open", A1),
        ("transition", "open", A1),
    ]
    assert fault.warning["message"].startswith("天河区 棠下街道 棠下社区 设备故障黄色预警")
    (audit,) = [a for a in store.audit_log(red.warning["id"]) if a["action"] == "warning.open"]
    assert audit["detail"]["suppressed"]["by"] == "inhibited"
    assert audit["detail"]["suppressed"]["id"] == fault.warning["id"]
    assert svc.tick() == 0

    # the device is repaired and still reads red: the red warning goes out in full now
    svc.apply([change(Level.YELLOW, Level.NONE, 0.0, T0 + 120_000, **NODATA)])
    assert svc.tick() == 1
    red_people = B1 + STREET_B + ["duty_officer-440106", "leader-440106"]
    assert sent_to(store, 6) == [
        ("transition", "open", red_people),
        ("transition", "open", [*red_people, "public:440106002001"]),
    ]


def test_drill_never_inhibits_a_real_warning(
    tmp_path: Path, mini_regions: RegionRegistry, mini_sensors: SensorRegistry
) -> None:
    store = Store(tmp_path / "ews.sqlite")
    svc = make_service(store, mini_regions, mini_sensors, Clock(T0))
    svc.apply([change(Level.NONE, Level.RED, 120.0, T0, drill=True)])
    (real,) = svc.apply([change(Level.NONE, Level.BLUE, 70.0, T0, **RAIN_12H)])
    assert real.channels == ("console",)
