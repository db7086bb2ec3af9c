"""CAP 1.2 (OASIS Common Alerting Protocol) documents for public alert aggregators.

One warning becomes a chain of messages: its first public notice is an Alert, every later
level change an Update, and its lifting a Cancel, each naming all earlier messages of the
chain in `references` ("sender,identifier,sent" separated by spaces), so an aggregator that
missed one still links them. Drill warnings have status Exercise. Times are Beijing time
with their +08:00 offset and whole seconds, as the CAP 1.2 schema's `sent` pattern requires.

Mappings (CAP's value lists, fixed here rather than in templates because they are not words):
- severity by level: blue Minor, yellow Moderate, orange Severe, red Extreme;
- urgency: Expected for blue and yellow, Immediate for orange and red, Past once lifted;
- certainty: Observed — every warning comes from measured readings;
- category by kind: rain and river level Met, road ponding Met and Transport, gas Safety,
  smoke Fire, anything else Other;
- area: areaDesc with the 区 街道 社区 names, a circle around the sensor when its position is
  known, and geocodes: "GB/T 2260" (the 6-digit district code), "GB/T 10114" (the 9-digit
  street/town code built on it) and "统计用区划代码" (the 12-digit community code).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from ews.levels import Level
from notifiers.channels.base import Notification
from notifiers.channels.texts import ChannelTexts
from notifiers.templates import BEIJING

CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
MsgType = Literal["Alert", "Update", "Cancel"]

SEVERITY = {"blue": "Minor", "yellow": "Moderate", "orange": "Severe", "red": "Extreme"}
URGENCY = {"blue": "Expected", "yellow": "Expected", "orange": "Immediate", "red": "Immediate"}
RESPONSE = {"blue": "Monitor", "yellow": "Prepare", "orange": "Prepare", "red": "Execute"}
CATEGORIES: dict[str, tuple[str, ...]] = {
    "rain": ("Met",), "water_level": ("Met",), "ponding": ("Met", "Transport"),
    "gas": ("Safety",), "smoke": ("Fire",),
}
# radius of the circle drawn around a sensor, by how far its hazard reaches
RADIUS_KM = {"rain": 3.0, "water_level": 2.0, "ponding": 0.5, "gas": 0.3, "smoke": 0.2}
GEOCODES = (("GB/T 2260", "district"), ("GB/T 10114", "street"), ("统计用区划代码", "community"))
TRANSITION_TYPES = frozenset({"open", "raise", "lower", "resolve"})


@dataclass(frozen=True, slots=True)
class Reference:
    sender: str
    identifier: str
    sent: str

    def __str__(self) -> str:
        return f"{self.sender},{self.identifier},{self.sent}"


@dataclass(frozen=True, slots=True)
class CapSettings:
    sender: str  # globally unique originator id, e.g. "ews@yjj.th.gov.cn"
    sender_name: str  # shown to people, e.g. "天河区应急管理局"
    ttl_s: float = 12 * 3600.0  # validity of an Alert or Update
    cancel_ttl_s: float = 3600.0  # a Cancel stays in the feed this long
    contact: str | None = None
    base_url: str | None = None  # where the documents are served, for <web>


@dataclass(frozen=True, slots=True)
class CapMessage:
    identifier: str
    sender: str
    sent: str
    sent_ms: int
    msg_type: MsgType
    status: str
    warning_id: str
    expires_ms: int
    headline: str
    xml: bytes

    @property
    def reference(self) -> Reference:
        return Reference(self.sender, self.identifier, self.sent)


def cap_time(ts_ms: int) -> str:
    """'2024-05-22T08:30:00+08:00': whole seconds, explicit offset (the schema's pattern)."""
    return datetime.fromtimestamp(ts_ms // 1000, BEIJING).strftime("%Y-%m-%dT%H:%M:%S+08:00")


def identifier(warning_id: str, transition_id: int, district: str) -> str:
    # CAP forbids spaces, commas, '<' and '&' in identifiers; ours hold none
    return f"EWS-{district or '000000'}-{warning_id}-{transition_id}"


def msg_type_for(transition: str, has_earlier: bool) -> MsgType | None:
    """The message type of a transition, or None when the public need not hear of it (a lift
    of a warning the feed never announced)."""
    if transition not in TRANSITION_TYPES:
        return None
    if not has_earlier:
        return None if transition == "resolve" else "Alert"
    return "Cancel" if transition == "resolve" else "Update"


def _sub(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
    el = ET.SubElement(parent, f"{{{CAP_NS}}}{tag}")
    if text is not None:
        el.text = text
    return el


def _pair(parent: ET.Element, tag: str, name: str, value: str) -> None:
    el = _sub(parent, tag)
    _sub(el, "valueName", name)
    _sub(el, "value", value)


def build(
    note: Notification, *, msg_type: MsgType, ident: str, references: list[Reference],
    settings: CapSettings, texts: ChannelTexts,
) -> CapMessage:
    w = note.warning
    sent_ms = int(w.get("updated_ts_ms") or w.get("issued_ts_ms") or 0)
    sent = cap_time(sent_ms)
    level_key = str(w.get("level", "blue"))
    level = Level.parse(level_key)
    kind = str(w.get("kind", ""))
    drill = bool(note.drill or w.get("drill", False))
    cancel = msg_type == "Cancel"
    status = "Exercise" if drill else "Actual"
    expires_ms = sent_ms + int((settings.cancel_ttl_s if cancel else settings.ttl_s) * 1000)
    f = texts.fields(note)
    headline = texts.spec.cap.headline_cancel if cancel else texts.spec.cap.headline
    headline = headline.format(**f)

    ET.register_namespace("", CAP_NS)
    alert = ET.Element(f"{{{CAP_NS}}}alert")
    _sub(alert, "identifier", ident)
    _sub(alert, "sender", settings.sender)
    _sub(alert, "sent", sent)
    _sub(alert, "status", status)
    _sub(alert, "msgType", msg_type)
    _sub(alert, "source", str(w.get("rule", "ews")))
    _sub(alert, "scope", "Public")
    if drill:
        _sub(alert, "note", texts.spec.cap.drill_note)
    if references:
        _sub(alert, "references", " ".join(str(r) for r in references))
    # every message of one warning is one incident, which aggregators use to group them
    _sub(alert, "incidents", str(w.get("id", "")))

    info = _sub(alert, "info")
    _sub(info, "language", texts.language)
    for cat in CATEGORIES.get(kind, ("Other",)):
        _sub(info, "category", cat)
    _sub(info, "event", texts.spec.cap.event.format(**f))
    _sub(info, "responseType", "AllClear" if cancel else RESPONSE.get(level_key, "Monitor"))
    _sub(info, "urgency", "Past" if cancel else URGENCY.get(level_key, "Unknown"))
    _sub(info, "severity", SEVERITY.get(level_key, "Unknown"))
    _sub(info, "certainty", "Observed")
    _pair(info, "eventCode", "EWS:kind", kind)
    _sub(info, "effective", sent)
    _sub(info, "expires", cap_time(expires_ms))
    _sub(info, "senderName", settings.sender_name)
    _sub(info, "headline", headline)
    _sub(info, "description", texts.spec.cap.description.format(**f))
    _sub(info, "instruction", texts.spec.cap.instruction_cancel if cancel else texts.instruction(kind, level))
    if settings.base_url:
        _sub(info, "web", f"{settings.base_url.rstrip('/')}/cap/{ident}.xml")
    if settings.contact:
        _sub(info, "contact", settings.contact)
    for name, value in _parameters(w):
        _pair(info, "parameter", name, value)
    _area(info, w, kind, f["region"])

    xml = ET.tostring(alert, encoding="utf-8", xml_declaration=True)
    return CapMessage(ident, settings.sender, sent, sent_ms, msg_type, status, str(w.get("id", "")),
                      expires_ms, headline, xml)


def _parameters(w: dict[str, Any]) -> list[tuple[str, str]]:
    out = [("EWS:warning_id", str(w.get("id", ""))), ("EWS:level", str(w.get("level", "")))]
    for key in ("measure", "value", "unit", "threshold", "subject"):
        if w.get(key) is not None and w.get(key) != "":
            out.append((f"EWS:{key}", str(w[key])))
    return out


def _area(info: ET.Element, w: dict[str, Any], kind: str, region_names: str) -> None:
    area = _sub(info, "area")
    _sub(area, "areaDesc", region_names)
    loc = w.get("location") or {}
    lat, lon = loc.get("lat"), loc.get("lon")
    if lat is not None and lon is not None:
        _sub(area, "circle", f"{float(lat):.5f},{float(lon):.5f} {RADIUS_KM.get(kind, 1.0)}")
    region = w.get("region") or {}
    for name, tier in GEOCODES:
        code = (region.get(tier) or {}).get("code")
        if code:
            _pair(area, "geocode", name, str(code))
