"""Warning lifecycle: open -> raise -> lower -> resolve, messages, published state, restart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ews.levels import Level
from ews.models import LevelChange
from ews.regions import RegionRegistry
from ews.sensors import SensorRegistry
from ews.store import Store
from ews.yamlfile import ConfigError
from notifiers.lifecycle import Settings, WarningService
from notifiers.routing import Router, RoutingPolicy
from notifiers.silence import Silences
from notifiers.templates import Renderer

COMM = "440106001001"  # 天河区 车陂街道 车陂社区 in the conftest registry
TOPIC = "ews-out/warnings/440106/440106001/440106001001"
T0 = 1_732_772_400_000  # 2024-11-28 13:40:00 in Beijing


def change(before: Level, after: Level, value: float, ts_ms: int, **kw: Any) -> LevelChange:
    args: dict[str, Any] = {
        "rule_id": "rain-3h", "rule_version": "v7", "kind": "rain", "subject": "RG-A1",
        "community": COMM, "measure": "rain_3h", "unit": "mm", "before": before, "after": after,
        "value": value, "threshold": 50.0, "event_ts_ms": ts_ms, "readings": [(ts_ms, 5.0)],
    }
    args.update(kw)
    return LevelChange(**args)


class Published:
    def __init__(self) -> None:
        self.messages: list[tuple[str, dict[str, Any], bool]] = []

    def __call__(self, topic: str, payload: bytes, retain: bool) -> None:
        self.messages.append((topic, json.loads(payload), retain))


def service(
    store: Store, regions: RegionRegistry, sensors: SensorRegistry, pub: Published | None = None
) -> WarningService:
    return WarningService(store, regions, sensors, Router(regions), Renderer.load("zh-CN"), pub,
                          ["console", "webhook"], clock=lambda: 1_732_772_500.0)


class Clock:
    """Wall clock of a test, in whole milliseconds."""

    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000

    def advance(self, seconds: float) -> None:
        self.ms += round(seconds * 1000)


def make_service(
    store: Store, regions: RegionRegistry, sensors: SensorRegistry, clock: Clock,
    settings: Settings | None = None, channels: tuple[str, ...] = ("console",),
    policy: RoutingPolicy | None = None, router: Router | None = None,
    pub: Published | None = None,
) -> WarningService:
    """A service on the test's clock, with silences, on the given channels."""
    router = router or Router(regions, policy, clock=clock)
    return WarningService(store, regions, sensors, router, Renderer.load("zh-CN"), pub, list(channels),
                          clock=clock, settings=settings or Settings(),
                          silences=Silences(store, regions, clock=clock, refresh_s=0.0))


def sent_to(store: Store, since: int = 0) -> list[tuple[str, str, list[str]]]:
    """(notice, transition, recipient ids) of each outbox row after the first `since`."""
    return [(r["notice"], r["payload"]["transition"], [x["id"] for x in r["recipients"]])
            for r in store.outbox()[since:]]


def test_open_raise_lower_resolve(
    tmp_path: Path, mini_regions: RegionRegistry, mini_sensors: SensorRegistry
) -> None:
    store = Store(tmp_path / "ews.sqlite")
    pub = Published()
    svc = service(store, mini_regions, mini_sensors, pub)
    seq = [
        change(Level.NONE, Level.YELLOW, 52.0, T0),
        change(Level.YELLOW, Level.ORANGE, 62.4, T0 + 600_000),
        change(Level.ORANGE, Level.YELLOW, 55.0, T0 + 1_200_000),
        change(Level.YELLOW, Level.NONE, 12.0, T0 + 1_800_000),
    ]
    got = [t for c in seq for t in svc.apply([c])]

    assert [(t.type, t.level_before, t.level_after) for t in got] == [
        ("open", Level.NONE, Level.YELLOW),
        ("raise", Level.YELLOW, Level.ORANGE),
        ("lower", Level.ORANGE, Level.YELLOW),
        ("resolve", Level.YELLOW, Level.NONE),
    ]
    assert len({t.warning["id"] for t in got}) == 1
    wid = got[0].warning["id"]
    assert [t.warning["message"] for t in got] == [
        "天河区 车陂街道 车陂社区 暴雨黄色预警：3小时累计雨量 52.0 毫米（2024-11-28 13:40）",
        "天河区 车陂街道 车陂社区 暴雨预警升级为橙色：3小时累计雨量 62.4 毫米（2024-11-28 13:50）",
        "天河区 车陂街道 车陂社区 暴雨预警降为黄色：3小时累计雨量 55.0 毫米（2024-11-28 14:00）",
        "天河区 车陂街道 车陂社区 暴雨黄色预警解除：3小时累计雨量 12.0 毫米（2024-11-28 14:10）",
    ]

    stored = store.transitions(wid)
    assert [(t["type"], t["level_before"], t["level_after"], t["value"], t["event_ts_ms"])
            for t in stored] == [
        ("open", 0, 2, 52.0, T0), ("raise", 2, 3, 62.4, T0 + 600_000),
        ("lower", 3, 2, 55.0, T0 + 1_200_000), ("resolve", 2, 0, 12.0, T0 + 1_800_000),
    ]
    assert all(t["rule_version"] == "v7" for t in stored)
    w = store.warning(wid)
    assert w is not None
    assert (w["state"], w["level"], w["peak_level"]) == ("resolved", 2, 3)
    assert store.open_warnings() == [] and svc.open_warnings() == []
    assert [a["action"] for a in store.audit_log(wid)] == [
        "warning.open", "warning.raise", "warning.lower", "warning.resolve"
    ]

    # lower and resolve reach everyone who heard of the highest level, orange here
    yellow = ["duty_officer-440106001001", "grid_staff-440106001001", "duty_officer-440106001"]
    orange = [*yellow, "leader-440106001", "duty_officer-440106"]
    rows = store.outbox()
    by_transition: dict[int, dict[str, list[str]]] = {}
    for r in rows:
        by_transition.setdefault(r["transition_id"], {})[r["channel"]] = [x["id"] for x in r["recipients"]]
    assert [by_transition[t["id"]] for t in stored] == [
        {"console": yellow, "webhook": yellow},
        {"console": orange, "webhook": orange},
        {"console": orange, "webhook": orange},
        {"console": orange, "webhook": orange},
    ]
    assert {r["idempotency_key"] for r in rows} == {
        f"{t['id']}:{ch}" for t in stored for ch in ("console", "webhook")
    }

    # the retained community state follows every transition
    assert [(topic, retain) for topic, _, retain in pub.messages] == [(TOPIC, True)] * 4
    levels = [[w["level"] for w in body["warnings"]] for _, body, _ in pub.messages]
    assert levels == [["yellow"], ["orange"], ["yellow"], []]


def test_published_warning_object(
    tmp_path: Path, mini_regions: RegionRegistry, mini_sensors: SensorRegistry
) -> None:
    pub = Published()
    svc = service(Store(tmp_path / "ews.sqlite"), mini_regions, mini_sensors, pub)
    svc.apply([change(Level.NONE, Level.ORANGE, 62.4, T0, drill=True)])
    (_, body, _), = pub.messages
    assert body["version"] == 1
    assert body["community"] == {"code": COMM, "name": "车陂社区"}
    (w,) = body["warnings"]
    assert w["id"].startswith("W-")
    assert {k: w[k] for k in ("rule", "kind", "subject", "level", "state", "value", "measure",
                              "unit", "drill", "rule_version")} == {
        "rule": "rain-3h", "kind": "rain", "subject": "RG-A1", "level": "orange",
        "state": "open", "value": 62.4, "measure": "rain_3h", "unit": "mm", "drill": True,
        "rule_version": "v7",
    }
    assert w["region"] == {
        "district": {"code": "440106", "name": "天河区"},
        "street": {"code": "440106001", "name": "车陂街道"},
        "community": {"code": COMM, "name": "车陂社区"},
    }
    assert w["event_ts"] == "2024-11-28T13:40:00.000+08:00"
    assert w["event_ts_ms"] == T0
    assert w["issued_ts"] == "2024-11-28T13:41:40.000+08:00"  # the service clock
    assert w["message"] == (
        "【演练】天河区 车陂街道 车陂社区 暴雨橙色预警：3小时累计雨量 62.4 毫米（2024-11-28 13:40）"
    )


def test_open_warnings_survive_restart(
    tmp_path: Path, mini_regions: RegionRegistry, mini_sensors: SensorRegistry
) -> None:
    db = tmp_path / "ews.sqlite"
    first = service(Store(db), mini_regions, mini_sensors)
    (opened,) = first.apply([change(Level.NONE, Level.YELLOW, 52.0, T0)])
    first.store.close()

    store = Store(db)
    again = service(store, mini_regions, mini_sensors)
    assert [w["id"] for w in again.open_warnings()] == [opened.warning["id"]]
    # the rules engine rebuilt after a restart reports the same opening again: no new warning
    assert again.apply([change(Level.NONE, Level.YELLOW, 52.0, T0)]) == []
    (raised,) = again.apply([change(Level.NONE, Level.ORANGE, 63.0, T0 + 60_000)])
    assert (raised.type, raised.warning["id"]) == ("raise", opened.warning["id"])
    assert len(store.warnings()) == 1
    assert [t["type"] for t in store.transitions()] == ["open", "raise"]


def test_bad_changes_are_skipped_not_fatal(
    tmp_path: Path, mini_regions: RegionRegistry, mini_sensors: SensorRegistry
) -> None:
    svc = service(Store(tmp_path / "ews.sqlite"), mini_regions, mini_sensors)
    ok = change(Level.NONE, Level.BLUE, 51.0, T0, subject="RG-A2", community="440106001002")
    resolve_unknown = change(Level.BLUE, Level.NONE, 1.0, T0, subject="nobody")
    unknown_region = change(Level.NONE, Level.RED, 120.0, T0, subject="X", community="999999999999")
    got = svc.apply([resolve_unknown, unknown_region, ok])
    assert [(t.type, t.warning["subject"]) for t in got] == [("open", "X"), ("open", "RG-A2")]
    # a community outside the registry is still recorded, with nobody to notify
    assert got[0].channels == ()
    assert got[1].channels == ("console", "webhook")


@pytest.mark.parametrize(
    ("kind", "measure", "unit", "value", "level", "expected"),
    [
        ("water_level", "water_level", "m", 5.234, Level.YELLOW,
         "天河区 车陂街道 车陂社区 河道水位黄色预警：水位 5.23 米（2024-11-28 13:40）"),
        ("ponding", "ponding", "cm", 17.6, Level.BLUE,
         "天河区 车陂街道 车陂社区 道路积水蓝色预警：积水深度 18 厘米（2024-11-28 13:40）"),
        ("gas", "gas", "%LEL", 27.0, Level.ORANGE,
         "天河区 车陂街道 车陂社区 燃气泄漏橙色预警：可燃气体浓度 27 %LEL（2024-11-28 13:40）"),
    ],
)
def test_messages_for_other_kinds(
    kind: str, measure: str, unit: str, value: float, level: Level, expected: str
) -> None:
    text = Renderer.load("zh-CN").render(
        "open", region="天河区 车陂街道 车陂社区", kind=kind, measure=measure, unit=unit,
        value=value, level=level, event_ts_ms=T0,
    )
    assert text == expected


def test_english_templates() -> None:
    text = Renderer.load("en").render(
        "resolve", region="天河区", kind="rain", measure="rain_1h", unit="mm", value=3.0,
        level=Level.RED, event_ts_ms=T0, drill=True,
    )
    assert text == "[DRILL] 天河区: red rainstorm warning lifted: 1-hour rainfall 3.0 mm (2024-11-28 13:40)"


def test_template_with_unknown_field_names_file_and_line(tmp_path: Path) -> None:
    text = (Path(__file__).parent.parent / "notifiers" / "templates" / "zh-CN.yaml").read_text(
        encoding="utf-8"
    )
    lines = text.splitlines()
    (i,) = [n for n, line in enumerate(lines) if line.strip().startswith("lower:")]
    lines[i] = '  lower: "{region} {colour}"'
    p = tmp_path / "zh-CN.yaml"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        Renderer.load(path=p)
    (problem,) = err.value.problems
    assert (problem.file, problem.line, problem.field) == (str(p), i + 1, "messages.lower")
    assert "colour" in problem.reason


def test_resolve_waits_for_the_quiet_period_on_event_time(
    tmp_path: Path, mini_regions: RegionRegistry, mini_sensors: SensorRegistry
) -> None:
    store = Store(tmp_path / "ews.sqlite")
    clock = Clock(T0 + 100_000)
    pub = Published()
    svc = make_service(store, mini_regions, mini_sensors, clock, Settings(quiet_ms=600_000), pub=pub)
    (opened,) = svc.apply([change(Level.NONE, Level.YELLOW, 52.0, T0)])
    wid = opened.warning["id"]

    # the rules say "over" at T0 + 30 min: held, the warning still stands but is clearing
    assert svc.apply([change(Level.YELLOW, Level.NONE, 10.0, T0 + 1_800_000)]) == []
    assert [w["id"] for w in svc.open_warnings()] == [wid]
    assert pub.messages[-1][1]["warnings"][0]["clearing"] is True
    # event time moves on 9 min 59 s, wall time only 10 s (a replay): still held
    svc.advance(T0 + 1_800_000 + 599_000)
    clock.advance(10)
    assert svc.tick() == 0
    # rain again within the quiet period: the resolve is cancelled, nothing was ever lifted
    assert svc.apply([change(Level.NONE, Level.YELLOW, 51.0, T0 + 2_100_000)]) == []
    assert pub.messages[-1][1]["warnings"][0]["clearing"] is False

    svc.apply([change(Level.YELLOW, Level.NONE, 9.0, T0 + 2_400_000)])
    svc.advance(T0 + 2_400_000 + 600_000)  # ten quiet minutes of event time
    clock.advance(1)
    heard: list[Any] = []
    svc.timer_listeners.append(heard.append)
    assert svc.tick() == 1
    assert [(t.type, t.warning["id"]) for t in heard] == [("resolve", wid)]
    assert svc.open_warnings() == []
    assert pub.messages[-1][1]["warnings"] == []
    assert [(t["type"], t["event_ts_ms"], t["processed_ts_ms"]) for t in store.transitions(wid)] == [
        ("open", T0, T0 + 100_000),
        ("resolve", T0 + 2_400_000, T0 + 100_000 + 11_000),  # the resolve keeps its event time
    ]
    assert [a["action"] for a in store.audit_log(wid)] == [
        "warning.open", "warning.resolve_pending", "warning.resolve_cancelled",
        "warning.resolve_pending", "warning.resolve",
    ]
    # people heard of the opening and of the end, nothing in between
    assert [(n, t) for n, t, _ in sent_to(store)] == [("transition", "open"), ("transition", "resolve")]


def test_quiet_period_ends_on_wall_time_when_readings_stop(
    tmp_path: Path, mini_regions: RegionRegistry, mini_sensors: SensorRegistry
) -> None:
    store = Store(tmp_path / "ews.sqlite")
    clock = Clock(T0)
    svc = make_service(store, mini_regions, mini_sensors, clock, Settings(quiet_ms=600_000))
    svc.apply([change(Level.NONE, Level.BLUE, 52.0, T0)])
    svc.apply([change(Level.BLUE, Level.NONE, 10.0, T0 + 60_000)])
    clock.advance(599.999)
    assert svc.tick() == 0
    # a restart while clearing keeps the pending resolve
    store.close()
    store = Store(tmp_path / "ews.sqlite")
    svc = make_service(store, mini_regions, mini_sensors, clock, Settings(quiet_ms=600_000))
    assert svc.open_warnings()[0]["pending_resolve"]["event_ts_ms"] == T0 + 60_000
    clock.advance(0.001)
    assert svc.tick() == 1
    assert [t["type"] for t in store.transitions()] == ["open", "resolve"]
