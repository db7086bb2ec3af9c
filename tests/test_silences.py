"""Silences and maintenance windows: by region subtree, sensor or rule, with start, expiry,
author and reason; silenced transitions are stored and audited, only notifications held back."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from ews.levels import Level
from ews.regions import RegionRegistry
from ews.sensors import SensorRegistry
from ews.store import Store
from notifiers.silence import SilenceError
from tests.test_lifecycle import T0, Clock, Published, change, make_service, sent_to

A1 = ["duty_officer-440106001001", "grid_staff-440106001001"]
B1 = ["duty_officer-440106002001"]
STREET_A = ["duty_officer-440106001"]
STREET_B = ["duty_officer-440106002"]
GAS = {"rule_id": "gas", "kind": "gas", "measure": "gas", "unit": "%LEL", "subject": "GS-B1",
       "community": "440106002001"}


def test_silence_by_region_subtree_then_expiry(
    tmp_path: Path, mini_regions: RegionRegistry, mini_sensors: SensorRegistry
) -> None:
    store = Store(tmp_path / "ews.sqlite")
    clock = Clock(T0)
    pub = Published()
    svc = make_service(store, mini_regions, mini_sensors, clock, pub=pub)
    assert svc.silences is not None
    s = svc.silences.add({"region": "440106001", "ends_ts_ms": T0 + 600_000,
                          "author": "区应急局 张伟", "reason": "车陂街道排水管网施工"})
    assert s["kind"] == "silence" and s["starts_ts_ms"] == T0

    (a1,) = svc.apply([change(Level.NONE, Level.YELLOW, 55.0, T0)])          # street A: silenced
    (b1,) = svc.apply([change(Level.NONE, Level.BLUE, 51.0, T0, subject="RG-B1",
                              community="440106002001")])                  # street B: not
    assert sent_to(store) == [("transition", "open", B1)]
    # the silenced warning is a full warning in the record and on the retained topic
    assert [t["type"] for t in store.transitions(a1.warning["id"])] == ["open"]
    (audit,) = store.audit_log(a1.warning["id"])
    assert audit["detail"]["suppressed"] == {"by": "silence", "id": s["id"], "kind": "silence",
                                             "reason": "车陂街道排水管网施工"}
    assert any(w["id"] == a1.warning["id"] for _, body, _ in pub.messages for w in body["warnings"])
    # no reminders or escalation either while silenced
    clock.advance(599.999)
    assert svc.tick() == 0

    # the silence expires with the warning still open: its people hear of it now
    clock.advance(0.001)
    assert svc.tick() == 1
    assert sent_to(store, 1) == [("transition", "open", A1 + STREET_A)]
    assert b1.warning["id"] != a1.warning["id"]
    created = [a for a in store.audit_log() if a["action"] == "silence.create"]
    assert [(a["actor"], a["detail"]["reason"]) for a in created] == [("区应急局 张伟", "车陂街道排水管网施工")]


def test_maintenance_window_for_one_sensor_and_a_rule_silence(
    tmp_path: Path, mini_regions: RegionRegistry, mini_sensors: SensorRegistry
) -> None:
    store = Store(tmp_path / "ews.sqlite")
    clock = Clock(T0)
    svc = make_service(store, mini_regions, mini_sensors, clock)
    assert svc.silences is not None
    m = svc.silences.add({"sensor": "RG-B1", "starts_ts_ms": T0 + 60_000, "ends_ts_ms": T0 + 120_000,
                          "author": "运维 李强", "reason": "雨量计校准"})
    assert m["kind"] == "maintenance"
    g = svc.silences.add({"rule": "gas", "ends_ts_ms": T0 + 3_600_000, "author": "李强", "reason": "燃气公司演练"})
    rg_b1 = {"subject": "RG-B1", "community": "440106002001"}

    svc.apply([change(Level.NONE, Level.BLUE, 51.0, T0, **rg_b1)])            # before the window
    clock.ms = T0 + 60_000
    svc.apply([change(Level.BLUE, Level.YELLOW, 56.0, T0 + 60_000, **rg_b1)])  # inside it
    svc.apply([change(Level.NONE, Level.ORANGE, 30.0, T0 + 60_000, **GAS)])    # the gas rule: silenced
    svc.apply([change(Level.NONE, Level.BLUE, 51.0, T0 + 60_000)])             # RG-A1: nothing matches
    assert sent_to(store) == [("transition", "open", B1), ("transition", "open", A1)]

    # the window closes: the gauge's raise is told; gas stays silenced by its rule silence
    clock.ms = T0 + 120_000
    assert svc.tick() == 1
    assert sent_to(store, 2) == [("transition", "raise", B1 + STREET_B)]
    # cancelling the gas silence early lets the gas warning through
    assert svc.silences.cancel(g["id"], "李强") is True
    assert svc.silences.cancel(g["id"], "李强") is False
    assert svc.tick() == 1
    orange_b = B1 + STREET_B + ["duty_officer-440106"]
    assert sent_to(store, 3) == [("transition", "open", orange_b)]
    assert [a["action"] for a in store.audit_log() if a["action"].startswith(("silence", "maintenance"))] == [
        "maintenance.create", "silence.create", "silence.cancel"]


def test_a_silence_written_by_another_process_is_seen(
    tmp_path: Path, mini_regions: RegionRegistry, mini_sensors: SensorRegistry
) -> None:
    db = tmp_path / "ews.sqlite"
    clock = Clock(T0)
    svc = make_service(Store(db), mini_regions, mini_sensors, clock)
    other = make_service(Store(db), mini_regions, mini_sensors, clock)  # e.g. `ews silence add`
    assert other.silences is not None
    other.silences.add({"sensor": "RG-A1", "ends_ts_ms": T0 + 60_000, "author": "a", "reason": "r"})
    (t,) = svc.apply([change(Level.NONE, Level.BLUE, 51.0, T0)])
    assert t.channels == ()


def test_bad_silences_are_refused_with_the_reason(
    tmp_path: Path, mini_regions: RegionRegistry, mini_sensors: SensorRegistry
) -> None:
    svc = make_service(Store(tmp_path / "ews.sqlite"), mini_regions, mini_sensors, Clock(T0))
    assert svc.silences is not None
    with pytest.raises(ValidationError, match="names a region, a sensor or a rule"):
        svc.silences.add({"ends_ts_ms": T0 + 1, "author": "a", "reason": "r"})
    with pytest.raises(ValidationError, match="6, 9 or 12 digit"):
        svc.silences.add({"region": "4401", "ends_ts_ms": T0 + 1, "author": "a", "reason": "r"})
    with pytest.raises(ValidationError, match="6, 9 or 12 digit"):  # not only up to a final newline
        svc.silences.add({"region": "440106\n", "ends_ts_ms": T0 + 1, "author": "a", "reason": "r"})
    with pytest.raises(ValidationError, match="author"):
        svc.silences.add({"rule": "gas", "ends_ts_ms": T0 + 1, "author": "", "reason": "r"})
    with pytest.raises(SilenceError) as past:
        svc.silences.add({"rule": "gas", "ends_ts_ms": T0 - 1, "author": "a", "reason": "r"})
    assert past.value.field == "ends_ts_ms"
    with pytest.raises(SilenceError, match="not in the region registry"):
        svc.silences.add({"region": "440199", "ends_ts_ms": T0 + 60_000, "author": "a", "reason": "r"})
    assert svc.store.silences() == []


def test_silence_command_add_list_cancel(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ews.cli import main
    from ews.config import sample_dir

    cfg = tmp_path / "config.yaml"
    regions, sensors = sample_dir() / "regions.yaml", sample_dir() / "sensors.yaml"
    cfg.write_text(f"registries: {{regions: {regions}, sensors: {sensors}}}\nstate_dir: {tmp_path / 'state'}\n",
                   encoding="utf-8")
    base = ["silence", "--config", str(cfg)]
    assert main(["silence", "add", "--config", str(cfg), "--region", "440106001", "--hours", "2",
                 "--author", "张伟", "--reason", "排水管网施工"]) == 0
    sid = capsys.readouterr().out.split(":")[0]
    assert sid.startswith("S-")
    assert main(["silence", "add", "--config", str(cfg), "--sensor", "GS-0001", "--start", "2099-01-01 08:00",
                 "--end", "2099-01-01 18:00", "--author", "李强", "--reason", "检修"]) == 0
    assert "maintenance 2099-01-01 08:00 – 2099-01-01 18:00" in capsys.readouterr().out
    assert main([*base[:1], "list", *base[1:]]) == 0
    listed = capsys.readouterr().out
    assert "region=440106001" in listed and "by 张伟: 排水管网施工" in listed and "sensor=GS-0001" in listed
    assert main(["silence", "cancel", sid, "--config", str(cfg), "--author", "王五"]) == 0
    assert capsys.readouterr().out == f"{sid}: cancelled\n"
    assert main(["silence", "list", "--config", str(cfg)]) == 0
    assert sid not in capsys.readouterr().out
    # a region outside the registry, or no end, is refused with the reason
    assert main(["silence", "add", "--config", str(cfg), "--region", "440199", "--hours", "1",
                 "--author", "a", "--reason", "r"]) == 2
    assert main(["silence", "add", "--config", str(cfg), "--rule", "gas", "--author", "a", "--reason", "r"]) == 2
    err = capsys.readouterr().err
    assert "not in the region registry" in err and "--end or --hours" in err
    # a missing author is one line naming the field, not pydantic's report with its links
    assert main(["silence", "add", "--config", str(cfg), "--rule", "gas", "--hours", "1", "--author", "",
                 "--reason", "r"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ews silence: author: ") and err.count("\n") == 1 and "pydantic.dev" not in err
