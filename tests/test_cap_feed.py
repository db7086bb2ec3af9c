"""The CAP Atom feed over HTTP: it parses as Atom, links every current CAP document, and each
linked document, fetched over HTTP, validates against the OASIS CAP 1.2 schema. End to end,
level changes through the warning service and the outbox become an Alert and a Cancel."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import httpx
import pytest
import xmlschema

from ews.config import ChannelConfig
from ews.levels import Level
from ews.models import LevelChange
from ews.regions import RegionRegistry
from ews.sensors import SensorRegistry
from ews.store import Store
from notifiers.cap import CapSettings
from notifiers.cap_feed import CapFeedServer
from notifiers.cap_store import CapStore
from notifiers.channels import build_channel
from notifiers.channels.cap import CapChannel
from notifiers.lifecycle import WarningService
from notifiers.outbox import OutboxWorker
from notifiers.routing import Router, RoutingPolicy
from notifiers.templates import Renderer
from tests.channel_receivers import T0_MS, make_note

XSD = Path(__file__).parent / "data" / "CAP-v1.2-schema.xsd"
ATOM = {"a": "http://www.w3.org/2005/Atom"}
CAP = {"cap": "urn:oasis:names:tc:emergency:cap:1.2"}


@pytest.fixture(scope="module")
def schema() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(str(XSD))


def _entries(feed_xml: bytes) -> list[tuple[str, str, str]]:
    """(title, link href, link type) of each entry; fails unless the document is an Atom feed."""
    root = ET.fromstring(feed_xml)
    assert root.tag == "{http://www.w3.org/2005/Atom}feed"
    for required in ("a:id", "a:title", "a:updated", "a:author/a:name"):
        assert root.find(required, ATOM) is not None, required
    out = []
    for e in root.findall("a:entry", ATOM):
        link = e.find("a:link[@rel='alternate']", ATOM)
        assert link is not None and e.find("a:id", ATOM) is not None and e.find("a:updated", ATOM) is not None
        out.append((e.findtext("a:title", namespaces=ATOM) or "", link.get("href", ""), link.get("type", "")))
    return out


def test_feed_links_current_documents(
    tmp_path: Path, schema: xmlschema.XMLSchema, mini_regions: RegionRegistry, mini_sensors: SensorRegistry,
) -> None:
    now = {"s": T0_MS / 1000}
    store = CapStore(tmp_path / "cap.sqlite")
    ch = CapChannel("cap", store, CapSettings(sender="ews@th.example.cn", sender_name="天河区应急管理局"))
    feed = CapFeedServer(store, clock=lambda: now["s"]).start()
    try:
        ch.send(make_note(mini_regions, mini_sensors, wid="W-rain", transition_id=1, level=Level.RED))
        ch.send(make_note(mini_regions, mini_sensors, wid="W-gas", kind="gas", measure="gas", unit="%LEL",
                          subject="GS-B1", community="440106002001", transition_id=2, level=Level.ORANGE))
        ch.send(make_note(mini_regions, mini_sensors, wid="W-gas", kind="gas", measure="gas", unit="%LEL",
                          subject="GS-B1", community="440106002001", transition_id=3, level=Level.ORANGE,
                          transition="resolve", state="resolved", updated_ms=T0_MS + 60_000))
        with httpx.Client(timeout=5) as http:
            r = http.get(f"{feed.url}/cap/feed.atom")
            assert r.status_code == 200 and r.headers["content-type"].startswith("application/atom+xml")
            entries = _entries(r.content)
            # the latest message of each warning, newest first: the gas Cancel, then the rain Alert
            assert [t for t, _, _ in entries] == ["天河区 棠下街道 棠下社区 燃气泄漏橙色预警解除",
                                                 "天河区 车陂街道 车陂社区 暴雨红色预警"]
            msg_types = []
            for _, href, ctype in entries:
                assert ctype == "application/cap+xml"
                doc = http.get(href)
                assert doc.status_code == 200 and doc.headers["content-type"].startswith("application/cap+xml")
                schema.validate(doc.content)
                msg_types.append(ET.fromstring(doc.content).findtext("cap:msgType", namespaces=CAP))
            assert msg_types == ["Cancel", "Alert"]
            assert http.get(f"{feed.url}/cap/EWS-nothing.xml").status_code == 404

            now["s"] += 2 * 3600  # past the Cancel's hour, within the Alert's twelve
            assert [t for t, _, _ in _entries(http.get(f"{feed.url}/cap/feed.atom").content)] == [
                "天河区 车陂街道 车陂社区 暴雨红色预警"]
            now["s"] += 12 * 3600
            assert _entries(http.get(f"{feed.url}/cap/feed.atom").content) == []
    finally:
        feed.stop()
        ch.close()


def test_level_changes_reach_the_feed_through_the_outbox(
    tmp_path: Path, schema: xmlschema.XMLSchema, mini_regions: RegionRegistry, mini_sensors: SensorRegistry,
) -> None:
    # red reaches the public feed; orange stays with the staff
    policy = RoutingPolicy.model_validate({"levels": {
        "blue": [], "yellow": [], "orange": [{"tier": "community", "roles": ["duty_officer"]}],
        "red": [{"tier": "community", "roles": ["duty_officer"]}, {"audience": "public", "channels": ["cap"]}],
    }})
    cap = build_channel(ChannelConfig(name="cap", type="cap", db=tmp_path / "cap.sqlite", listen="127.0.0.1:0",
                                      sender="ews@th.example.cn", sender_name="天河区应急管理局"))
    assert isinstance(cap, CapChannel) and cap.feed is not None
    store = Store(tmp_path / "ews.sqlite")
    svc = WarningService(store, mini_regions, mini_sensors, Router(mini_regions, policy), Renderer.load("zh-CN"),
                         None, ["cap"])

    def change(before: Level, after: Level, ts: int) -> LevelChange:
        return LevelChange(rule_id="rain-3h", rule_version="v1", kind="rain", subject="RG-A1",
                           community="440106001001", measure="rain_3h", unit="mm", before=before, after=after,
                           value=120.0, threshold=100.0, event_ts_ms=ts)

    worker = OutboxWorker(store, {"cap": cap})
    for before, after in ((Level.NONE, Level.ORANGE), (Level.ORANGE, Level.RED), (Level.RED, Level.NONE)):
        svc.apply([change(before, after, T0_MS)])
        worker.run_once()
    try:
        assert [r["state"] for r in store.outbox()] == ["sent", "sent"]  # the raise and the resolve
        with httpx.Client(timeout=5) as http:
            entries = _entries(http.get(f"{cap.feed.url}/cap/feed.atom").content)
            assert len(entries) == 1
            cancel = http.get(entries[0][1]).content
        schema.validate(cancel)
        root = ET.fromstring(cancel)
        assert root.findtext("cap:msgType", namespaces=CAP) == "Cancel"
        alert_row, _ = cap.store.all()
        assert alert_row["msg_type"] == "Alert"  # the first public notice was the raise
        alert = cap.store.document(alert_row["identifier"])
        assert alert is not None
        schema.validate(alert)
        assert root.findtext("cap:references", namespaces=CAP) == (
            f"ews@th.example.cn,{alert_row['identifier']},{alert_row['sent']}")
        assert root.findtext("cap:incidents", namespaces=CAP) == alert_row["warning_id"]
    finally:
        cap.close()
        store.close()


@pytest.mark.parametrize("listen", ["127.0.0.1:99999", "127.0.0.1", "127.0.0.1:http", ":-1"])
def test_a_feed_address_no_server_could_bind_is_refused_with_the_configuration(tmp_path: Path, listen: str) -> None:
    # it used to pass the configuration and fail at start: an OverflowError from bind(), or a bare ValueError
    with pytest.raises(ValueError, match="must be host:port with a port of 0-65535"):
        ChannelConfig(name="cap", type="cap", db=tmp_path / "cap.sqlite", listen=listen)
