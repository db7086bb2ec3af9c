"""`ews report`: KPIs per region and period from a store filled by a known sequence of events."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
import yaml

from ews.cli import main
from ews.config import LevelTimers, NotifierConfig
from ews.levels import Level
from ews.regions import RegionRegistry
from ews.report import Period, collect
from ews.sensors import SensorRegistry
from ews.store import Store
from notifiers.channels.base import Channel, DeliveryError, Notification, RetryPolicy
from notifiers.lifecycle import Settings
from notifiers.outbox import OutboxPool
from tests.test_lifecycle import T0, Clock, change, make_service

DAY = 86_400_000


class Hook(Channel):
    """Delivers to staff, refuses (for good) any message that includes the public."""

    def __init__(self) -> None:
        self.name = "webhook"
        self.retry = RetryPolicy()

    def send(self, note: Notification) -> None:
        if any(r.get("audience") == "public" for r in note.recipients):
            raise DeliveryError("HTTP 400: no such siren group", retryable=False)


class Ok(Channel):
    def __init__(self) -> None:
        self.name = "console"
        self.retry = RetryPolicy()

    def send(self, note: Notification) -> None:
        pass


def _fill(db: Path, regions: RegionRegistry, sensors: SensorRegistry) -> None:
    clock = Clock(T0 - DAY)  # 2024-11-27: outside the period
    settings = Settings.from_config(NotifierConfig(timers={
        lv: LevelTimers(remind_s=None, escalate_s=600 if lv == "yellow" else None)  # type: ignore[misc]
        for lv in ("blue", "yellow", "orange", "red")}))
    store = Store(db)
    svc = make_service(store, regions, sensors, clock, settings, channels=("console", "webhook"))
    pool = OutboxPool(store, {"console": Ok(), "webhook": Hook()}, clock=clock, on_failure=svc.failure_notices)

    def at(ms: int, changes: list[Any] | None = None) -> None:
        clock.ms = ms
        if changes:
            svc.apply(changes)
        svc.tick()

    def wid(subject: str) -> str:
        return next(str(w["id"]) for w in svc.open_warnings() if w["subject"] == subject)

    def deliver(ms: int) -> None:
        clock.ms = ms
        pool.run_once()

    at(T0 - DAY, [change(Level.NONE, Level.RED, 120.0, T0 - DAY, subject="PD-A1")])
    deliver(T0 - DAY + 1_000)
    at(T0, [change(Level.NONE, Level.YELLOW, 55.0, T0)])                       # W1, street A
    deliver(T0 + 2_000)
    at(T0 + 60_000, [change(Level.NONE, Level.RED, 120.0, T0, subject="RG-B1", community="440106002001")])
    deliver(T0 + 61_000)                                                        # W2, street B
    svc.acknowledge(wid("RG-B1"), "duty_officer-440106002001")                  # at T0 + 61 s
    at(T0 + 120_000, [change(Level.NONE, Level.BLUE, 51.0, T0, subject="RG-A2", community="440106001002")])
    deliver(T0 + 125_000)                                                       # W3, street A
    clock.ms = T0 + 420_000
    svc.acknowledge(wid("RG-A2"), "grid_staff-440106001002")                    # W3 after 300 s
    at(T0 + 130_000, [change(Level.NONE, Level.ORANGE, 30.0, T0, subject="GS-B1", community="440106002001",
                             rule_id="gas", kind="gas", drill=True)])          # a drill
    deliver(T0 + 131_000)
    at(T0 + 600_000)                                                            # W1 escalates
    deliver(T0 + 601_000)
    store.close()


def test_kpis_per_street(tmp_path: Path, mini_regions: RegionRegistry, mini_sensors: SensorRegistry) -> None:
    db = tmp_path / "warnings.sqlite"
    _fill(db, mini_regions, mini_sensors)
    with Store(db) as store:
        a, b, total = collect(store, mini_regions, Period.parse("2024-11-28", "2024-11-28"), "440106")
    # street A: W1 yellow to 3 people, W3 blue to 2, every one reached on the console
    assert (a.code, a.name, a.issued) == ("440106001", "车陂街道", {"blue": 1, "yellow": 1, "orange": 0, "red": 0})
    assert (a.targeted, a.delivered, a.public_targeted, a.warnings_fully_delivered) == (5, 5, 0, 2)
    assert sorted(a.delays_ms) == [2_000, 2_000, 2_000, 5_000, 5_000]
    assert (a.ack_ms, a.unacknowledged, a.escalations, a.failed) == ([300_000], 1, 1, 0)
    # street B: W2 red to 4 staff (reached) and the public (the siren group refused it)
    assert (b.code, b.issued["red"], b.warnings) == ("440106002", 1, 1)
    assert (b.targeted, b.delivered, b.public_targeted, b.public_delivered) == (5, 4, 1, 0)
    assert (b.share(), b.share(public=True), b.warnings_fully_delivered) == (0.8, 0.0, 0)
    assert (b.delays_ms, b.ack_ms, b.failed, b.escalations) == ([1_000] * 4, [1_000], 1, 0)
    assert (total.warnings, total.targeted, total.delivered, total.failed, total.escalations) == (3, 10, 9, 1, 1)
    row = total.row()
    assert (row["delivered_pct"], row["public_pct"], row["delay_p50_s"], row["ack_p50_s"]) == ("90.0", "0.0", "2.0",
                                                                                            "150.5")
    # the drill is reported on its own
    with Store(db) as store:
        (*_, drills) = collect(store, mini_regions, Period.parse("2024-11-28", "2024-11-29"), "440106", drill=True)
    assert (drills.warnings, drills.issued["orange"]) == (1, 1)
    # the day before holds only the first warning
    with Store(db) as store:
        (*_, before) = collect(store, mini_regions, Period.parse("2024-11-27", "2024-11-27"))
    assert (before.warnings, before.issued["red"]) == (1, 1)


def _registry_yaml(regions: RegionRegistry, path: Path) -> None:
    def node(code: str) -> dict[str, Any]:
        n = regions.get(code)
        d: dict[str, Any] = {"code": n.code, "name": n.name,
                             "contacts": [c.model_dump(exclude_none=True) for c in n.contacts]}
        if n.tier != "community":
            d["streets" if n.tier == "district" else "communities"] = [node(c) for c in n.children]
        return d

    districts = [node(c) for c, n in regions.nodes.items() if n.tier == "district"]
    path.write_text(yaml.safe_dump({"districts": districts}, allow_unicode=True), encoding="utf-8")


def test_report_command_writes_table_csv_and_png(
    tmp_path: Path, mini_regions: RegionRegistry, mini_sensors: SensorRegistry, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    state = tmp_path / "state"
    _fill(state / "warnings.sqlite", mini_regions, mini_sensors)
    _registry_yaml(mini_regions, tmp_path / "regions.yaml")
    (tmp_path / "sensors.yaml").write_text("sensors: []\n", encoding="utf-8")
    cfg = tmp_path / "config.yaml"
    cfg.write_text("registries: {regions: regions.yaml, sensors: sensors.yaml}\nstate_dir: state\n", encoding="utf-8")
    out = tmp_path / "out" / "kpi"
    code = main(["report", "--config", str(cfg), "--from", "2024-11-28", "--to", "2024-11-29 00:00",
                 "--region", "440106", "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "车陂街道" in text and "棠下街道" in text
    with (tmp_path / "out" / "kpi.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [(r["region"], r["warnings"], r["delivered_pct"], r["failed"]) for r in rows] == [
        ("440106001", "2", "100.0", "0"), ("440106002", "1", "80.0", "1"), ("440106", "3", "90.0", "1")]
    assert rows[0]["period"] == "2024-11-28 00:00 – 2024-11-29 00:00 (Beijing time)"
    png = (tmp_path / "out" / "kpi.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000

    assert main(["report", "--config", str(cfg), "--from", "2024-11-29", "--to", "2024-11-28"]) == 2
    assert "ends" in capsys.readouterr().err
