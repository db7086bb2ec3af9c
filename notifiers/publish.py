"""The published warning object (DESIGN §4, "Published warning state"), version 1.

Sirens, displays and third-party systems read these objects from the retained topic
`ews-out/warnings/{district}/{street}/{community}` and from webhooks; the field names are a
contract (docs/contract.md), so change them only with a new `version`; fields may be added
within a version, never renamed or removed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from ews.levels import Level
from ews.regions import RegionRegistry
from ews.sensors import SensorRegistry
from notifiers.templates import BEIJING

VERSION = 1
_TIERS = ("community", "street", "district")  # escalated_tier indexes this


def rfc3339(ts_ms: int) -> str:
    """Beijing time with its +08:00 offset, millisecond precision."""
    return datetime.fromtimestamp(ts_ms / 1000, BEIJING).isoformat(timespec="milliseconds")


def _node(regions: RegionRegistry, code: str) -> dict[str, str]:
    # a code missing from the registry still gets published, named by its code
    return {"code": code, "name": regions.nodes[code].name if code in regions else code}


def region_json(regions: RegionRegistry, community: str) -> dict[str, dict[str, str]]:
    return {
        "district": _node(regions, community[:6]),
        "street": _node(regions, community[:9]),
        "community": _node(regions, community),
    }


def warnings_topic(prefix: str, community: str) -> str:
    return f"{prefix.rstrip('/')}/{community[:6]}/{community[:9]}/{community}"


def warning_json(
    w: dict[str, Any], regions: RegionRegistry, sensors: SensorRegistry | None = None
) -> dict[str, Any]:
    """A stored warning row as the contract's JSON object."""
    level = Level(int(w["level"]))
    peak = Level(int(w["peak_level"]))
    out: dict[str, Any] = {
        "id": w["id"],
        "rule": w["rule"],
        "rule_name": w.get("rule_name", ""),
        "rule_version": w["rule_version"],
        "kind": w["kind"],
        "subject": w["subject"],
        # a resolved warning keeps the level it had, so a display can say what was lifted
        "level": level.key,
        "level_zh": level.zh,
        "peak_level": peak.key,
        "state": w["state"],
        "value": w["value"],
        "measure": w["measure"],
        "unit": w["unit"],
        "threshold": w.get("threshold"),
        "region": region_json(regions, w["community"]),
        "event_ts": rfc3339(int(w["updated_event_ts_ms"])),
        "event_ts_ms": int(w["updated_event_ts_ms"]),
        "opened_event_ts": rfc3339(int(w["opened_event_ts_ms"])),
        "issued_ts": rfc3339(int(w["opened_ts_ms"])),
        "issued_ts_ms": int(w["opened_ts_ms"]),
        "updated_ts": rfc3339(int(w["updated_ts_ms"])),
        "updated_ts_ms": int(w["updated_ts_ms"]),
        "drill": bool(w["drill"]),
        "message": w["message"],
        "acknowledged": bool(w.get("acknowledged", False)),
        # a resolve held for the quiet period: the warning still stands, but is clearing
        "clearing": w.get("pending_resolve") is not None and w["state"] == "open",
        "escalated_to": _TIERS[int(w["escalated_tier"])] if int(w.get("escalated_tier", -1)) >= 0 else None,
    }
    if w.get("acknowledged") and w.get("acknowledged_ts_ms") is not None:
        out["acknowledged_by"] = w.get("acknowledged_by")
        out["acknowledged_ts"] = rfc3339(int(w["acknowledged_ts_ms"]))
        out["ack_comment"] = w.get("ack_comment") or ""
    if w.get("resolved_ts_ms") is not None:
        out["resolved_ts"] = rfc3339(int(w["resolved_ts_ms"]))
    if sensors is not None and w["subject"] in sensors:
        s = sensors.get(w["subject"])
        out["subject_name"] = s.name
        out["location"] = {"lat": s.lat, "lon": s.lon}
    return out


def community_state(
    community: str,
    open_warnings: list[dict[str, Any]],
    regions: RegionRegistry,
    sensors: SensorRegistry | None,
    updated_ts_ms: int,
) -> dict[str, Any]:
    """The retained state of one community: its open warnings, highest level first."""
    ordered = sorted(open_warnings, key=lambda w: (-int(w["level"]), int(w["opened_ts_ms"]), w["id"]))
    return {
        "version": VERSION,
        "community": _node(regions, community),
        "updated_ts": rfc3339(updated_ts_ms),
        "updated_ts_ms": updated_ts_ms,
        "warnings": [warning_json(w, regions, sensors) for w in ordered],
    }


def encode(obj: dict[str, Any]) -> bytes:
    return orjson.dumps(obj)
