"""The topic scheme of DESIGN §4.

    ews/{district}/{street}/{community}/{kind}/{sensor_id}          one reading
    ews/{district}/{street}/{community}/{kind}/{sensor_id}/status   heartbeat / health
    ews/{district}[/{street}[/{community}]]/batch/{gateway_id}      gateway batch
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from ews.sensors import NAME_PATTERN
from ingest.reasons import Reason, Rejected

ROOT = "ews"
_DIGITS = (6, 9, 12)
_SEGMENT_RE = re.compile(NAME_PATTERN)  # sensor and gateway ids


@dataclass(frozen=True, slots=True)
class Topic:
    shape: Literal["reading", "status", "batch"]
    region: tuple[str, ...]  # district[, street[, community]]
    kind: str | None = None
    sensor: str | None = None
    gateway: str | None = None


def _region(segments: list[str]) -> tuple[str, ...]:
    for depth, code in enumerate(segments):
        if not (code.isdigit() and code.isascii() and len(code) == _DIGITS[depth]):
            raise Rejected(
                Reason.BAD_REGION_CODE,
                f"segment {depth + 2} {code!r} must be a {_DIGITS[depth]}-digit "
                f"{('district', 'street', 'community')[depth]} code",
            )
        if depth and not code.startswith(segments[depth - 1]):
            raise Rejected(Reason.BAD_REGION_CODE, f"{code} does not lie under {segments[depth - 1]}")
    return tuple(segments)


def topic_text(topic: str | bytes) -> str:
    """A topic as text: paho hands over the raw bytes, which may not be valid UTF-8."""
    return topic if isinstance(topic, str) else topic.decode("utf-8", errors="replace")


def parse_topic(topic: str) -> Topic:
    parts = topic.split("/")
    if len(parts) < 3 or parts[0] != ROOT:
        raise Rejected(Reason.BAD_TOPIC, f"topic must start with '{ROOT}/' and name a region")
    if "" in parts:
        raise Rejected(Reason.BAD_TOPIC, "topic has an empty segment")
    if len(parts) >= 4 and parts[-2] == "batch" and len(parts) <= 6:
        gw = parts[-1]
        if not _SEGMENT_RE.fullmatch(gw):
            raise Rejected(Reason.BAD_TOPIC, f"gateway id {gw!r} is not a valid id")
        return Topic("batch", _region(parts[1:-2]), gateway=gw)
    if len(parts) == 7 and parts[6] == "status":
        parts = parts[:6]
        shape: Literal["reading", "status"] = "status"
    elif len(parts) == 6:
        shape = "reading"
    else:
        raise Rejected(
            Reason.BAD_TOPIC,
            f"topic has {len(parts)} segments; expected "
            "ews/{district}/{street}/{community}/{kind}/{sensor_id}[/status] "
            "or ews/{region...}/batch/{gateway_id}",
        )
    region = _region(parts[1:4])
    kind, sensor = parts[4], parts[5]
    if not _SEGMENT_RE.fullmatch(sensor):
        raise Rejected(Reason.BAD_TOPIC, f"sensor id {sensor!r} is not a valid id")
    return Topic(shape, region, kind=kind, sensor=sensor)
