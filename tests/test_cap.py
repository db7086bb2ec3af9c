"""CAP 1.2 messages: every one validates against the OASIS schema (xmlschema with the official
CAP-v1.2 XSD in tests/data), and a warning's messages form an Alert/Update/Cancel chain."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import xmlschema

from ews.levels import Level
from ews.regions import RegionRegistry
from ews.sensors import SensorRegistry
from notifiers.cap import CapSettings
from notifiers.cap_store import CapStore
from notifiers.channels.cap import CapChannel
from tests.channel_receivers import T0_MS, make_note

XSD = Path(__file__).parent / "data" / "CAP-v1.2-schema.xsd"
NS = {"cap": "urn:oasis:names:tc:emergency:cap:1.2"}
SENDER = "ews@yjj.th.example.cn"


@pytest.fixture(scope="module")
def schema() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(str(XSD))


@pytest.fixture
def channel(tmp_path: Path) -> CapChannel:
    settings = CapSettings(sender=SENDER, sender_name="天河区应急管理局", contact="020-12345678",
                           base_url="https://ews.example.cn")
    return CapChannel("cap", CapStore(tmp_path / "cap.sqlite"), settings)


def _doc(xml: bytes) -> dict[str, Any]:
    root = ET.fromstring(xml)
    info = root.find("cap:info", NS)
    assert info is not None
    area = info.find("cap:area", NS)
    assert area is not None

    def t(el: ET.Element, path: str) -> str | None:
        found = el.find(path, NS)
        return None if found is None else found.text

    return {
        "identifier": t(root, "cap:identifier"), "sender": t(root, "cap:sender"), "sent": t(root, "cap:sent"),
        "status": t(root, "cap:status"), "msgType": t(root, "cap:msgType"), "scope": t(root, "cap:scope"),
        "references": t(root, "cap:references"), "note": t(root, "cap:note"),
        "language": t(info, "cap:language"),
        "category": [c.text for c in info.findall("cap:category", NS)],
        "event": t(info, "cap:event"), "urgency": t(info, "cap:urgency"), "severity": t(info, "cap:severity"),
        "certainty": t(info, "cap:certainty"), "responseType": t(info, "cap:responseType"),
        "expires": t(info, "cap:expires"), "senderName": t(info, "cap:senderName"),
        "headline": t(info, "cap:headline"), "description": t(info, "cap:description"),
        "instruction": t(info, "cap:instruction"), "web": t(info, "cap:web"),
        "areaDesc": t(area, "cap:areaDesc"), "circle": t(area, "cap:circle"),
        "geocode": [(g.findtext("cap:valueName", namespaces=NS), g.findtext("cap:value", namespaces=NS))
                    for g in area.findall("cap:geocode", NS)],
        "parameters": {p.findtext("cap:valueName", namespaces=NS): p.findtext("cap:value", namespaces=NS)
                       for p in info.findall("cap:parameter", NS)},
    }


def test_alert_update_cancel_chain(
    channel: CapChannel, schema: xmlschema.XMLSchema, mini_regions: RegionRegistry, mini_sensors: SensorRegistry,
) -> None:
    steps = [("open", Level.YELLOW), ("raise", Level.RED), ("lower", Level.ORANGE), ("resolve", Level.ORANGE)]
    for i, (transition, level) in enumerate(steps):
        channel.send(make_note(mini_regions, mini_sensors, transition=transition, transition_id=10 + i, channel="cap",
                               level=level, peak=Level.RED if i else Level.YELLOW, updated_ms=T0_MS + i * 600_000,
                               state="resolved" if transition == "resolve" else "open"))
    rows = channel.store.chain("W-0123456789")
    docs = [channel.store.document(r["identifier"]) for r in rows]
    for xml in docs:
        assert xml is not None
        schema.validate(xml)  # raises with the offending element on any violation
    d = [_doc(x) for x in docs if x is not None]

    assert [x["msgType"] for x in d] == ["Alert", "Update", "Update", "Cancel"]
    assert [x["identifier"] for x in d] == [f"EWS-440106-W-0123456789-{n}" for n in (10, 11, 12, 13)]
    assert [x["sent"] for x in d] == ["2024-05-22T08:30:00+08:00", "2024-05-22T08:40:00+08:00",
                                      "2024-05-22T08:50:00+08:00", "2024-05-22T09:00:00+08:00"]
    refs = [f"{SENDER},{x['identifier']},{x['sent']}" for x in d]
    assert d[0]["references"] is None
    assert d[1]["references"] == refs[0]
    assert d[3]["references"] == " ".join(refs[:3])
    assert [x["severity"] for x in d] == ["Moderate", "Extreme", "Severe", "Severe"]
    assert [x["urgency"] for x in d] == ["Expected", "Immediate", "Immediate", "Past"]
    assert [x["responseType"] for x in d] == ["Prepare", "Execute", "Prepare", "AllClear"]
    # Alerts and Updates are valid 12 hours, a Cancel one hour
    assert d[0]["expires"] == "2024-05-22T20:30:00+08:00"
    assert d[3]["expires"] == "2024-05-22T10:00:00+08:00"

    first = d[0]
    assert (first["sender"], first["status"], first["scope"], first["language"]) == (
        SENDER, "Actual", "Public", "zh-CN")
    assert first["category"] == ["Met"] and first["event"] == "暴雨" and first["certainty"] == "Observed"
    assert first["senderName"] == "天河区应急管理局"
    assert first["headline"] == "天河区 车陂街道 车陂社区 暴雨黄色预警"
    assert d[3]["headline"] == "天河区 车陂街道 车陂社区 暴雨橙色预警解除"
    assert first["description"] == "天河区 车陂街道 车陂社区 暴雨橙色预警：3小时累计雨量 62.5 毫米"
    assert first["instruction"] is not None and "防暴雨" in first["instruction"]
    assert d[3]["instruction"] is not None and "解除" in d[3]["instruction"]
    assert first["web"] == "https://ews.example.cn/cap/EWS-440106-W-0123456789-10.xml"
    assert first["areaDesc"] == "天河区 车陂街道 车陂社区"
    assert first["geocode"] == [("GB/T 2260", "440106"), ("GB/T 10114", "440106001"),
                                ("统计用区划代码", "440106001001")]
    assert first["circle"] == "23.12000,113.40000 3.0"  # RG-A1's position, 3 km for rain
    assert first["parameters"]["EWS:level"] == "yellow"
    assert first["parameters"]["EWS:warning_id"] == "W-0123456789"


def test_drill_is_an_exercise(
    channel: CapChannel, schema: xmlschema.XMLSchema, mini_regions: RegionRegistry,
) -> None:
    channel.send(make_note(mini_regions, drill=True, level=Level.RED))
    (row,) = channel.store.all()
    xml = channel.store.document(row["identifier"])
    assert xml is not None
    schema.validate(xml)
    d = _doc(xml)
    assert d["status"] == "Exercise"
    assert d["note"] == "本信息为应急演练信息，非真实预警。"
    assert d["headline"] is not None and d["headline"].startswith("【演练】")


@pytest.mark.parametrize(("kind", "measure", "unit", "categories", "event"), [
    ("water_level", "water_level", "m", ["Met"], "河道水位"),
    ("ponding", "ponding", "cm", ["Met", "Transport"], "道路积水"),
    ("gas", "gas", "%LEL", ["Safety"], "燃气泄漏"),
    ("smoke", "smoke", "flag", ["Fire"], "烟感火警"),
    ("device_fault", "value", "", ["Other"], "device_fault"),
])
def test_categories_by_kind_validate(
    channel: CapChannel, schema: xmlschema.XMLSchema, mini_regions: RegionRegistry,
    kind: str, measure: str, unit: str, categories: list[str], event: str,
) -> None:
    channel.send(make_note(mini_regions, kind=kind, measure=measure, unit=unit, level=Level.ORANGE))
    (row,) = channel.store.all()
    xml = channel.store.document(row["identifier"])
    assert xml is not None
    schema.validate(xml)
    d = _doc(xml)
    assert d["category"] == categories and d["event"] == event
    assert d["circle"] is None  # no sensor registry given: no position


def test_repeats_and_unannounced_lifts_issue_nothing(channel: CapChannel, mini_regions: RegionRegistry) -> None:
    # a lift of a warning the feed never announced is not published
    channel.send(make_note(mini_regions, wid="W-quiet", transition="resolve", state="resolved", transition_id=1))
    assert channel.store.all() == []
    # a warning first made public by a raise starts its chain with an Alert
    note = make_note(mini_regions, wid="W-raised", transition="raise", level=Level.RED, transition_id=2)
    channel.send(note)
    channel.send(note)  # the outbox repeating a send after a crash
    rows = channel.store.all()
    assert [(r["warning_id"], r["msg_type"]) for r in rows] == [("W-raised", "Alert")]
    # notices for staff do not reach the public feed
    channel.send(replace(make_note(mini_regions, wid="W-raised", transition="remind", transition_id=3),
                         notice="remind"))
    assert len(channel.store.all()) == 1


def test_invalid_documents_are_caught_by_the_validator(schema: xmlschema.XMLSchema) -> None:
    # the validator is not a rubber stamp: CAP 1.2 allows no fractional seconds in `sent`
    xml = (b'<?xml version="1.0" encoding="UTF-8"?><alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">'
           b"<identifier>x</identifier><sender>s</sender><sent>2024-05-22T08:30:00.123+08:00</sent>"
           b"<status>Actual</status><msgType>Alert</msgType><scope>Public</scope></alert>")
    assert not schema.is_valid(xml)
    assert schema.is_valid(xml.replace(b".123", b""))
