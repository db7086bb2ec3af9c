"""Payload decoding: native JSON, one reading or a gateway batch, into raw readings.

Each failure raises `Rejected` with its own reason code; in a batch, a bad reading is rejected
alone and its neighbours go on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from ingest.reasons import Reason, Rejected

# Epoch numbers below this are seconds, above it milliseconds (1e11 s is the year 5138,
# 1e11 ms is 1973): a sensor clock can be wrong, but never that wrong in both units.
_SECONDS_BELOW = 100_000_000_000


@dataclass(slots=True)
class RawReading:
    sensor: str | None  # named inside batch payloads; None when the topic names it
    ts_ms: int
    value: float
    battery: float | None = None
    rssi: float | None = None


def decode_json(payload: bytes, max_bytes: int) -> Any:
    if not payload:
        raise Rejected(Reason.EMPTY_PAYLOAD, "payload is empty")
    if len(payload) > max_bytes:
        raise Rejected(Reason.PAYLOAD_TOO_LARGE, f"payload is {len(payload)} bytes, limit {max_bytes}")
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError:
            raise Rejected(Reason.NOT_UTF8, "payload is not UTF-8 text") from None
        raise Rejected(Reason.BAD_JSON, f"not valid JSON: {exc}") from None


def parse_ts(raw: Any) -> int:
    """Epoch seconds or milliseconds (number), or an RFC 3339 string with an offset."""
    if isinstance(raw, bool) or raw is None:
        raise Rejected(Reason.BAD_TIMESTAMP, f"ts must be epoch seconds/milliseconds or RFC 3339, got {raw!r}")
    if isinstance(raw, int | float):
        if not math.isfinite(raw) or raw <= 0:
            raise Rejected(Reason.BAD_TIMESTAMP, f"ts {raw!r} is not a positive epoch time")
        return round(raw * 1000) if raw < _SECONDS_BELOW else int(raw)
    if isinstance(raw, str):
        try:
            dt = datetime.fromisoformat(raw)
        except ValueError:
            raise Rejected(Reason.BAD_TIMESTAMP, f"ts {raw[:40]!r} is not RFC 3339") from None
        if dt.tzinfo is None:
            raise Rejected(Reason.BAD_TIMESTAMP, f"ts {raw[:40]!r} has no UTC offset")
        return round(dt.timestamp() * 1000)
    raise Rejected(Reason.BAD_TIMESTAMP, f"ts has type {type(raw).__name__}")


def _number(obj: dict[str, Any], key: str, required: bool) -> float | None:
    if key not in obj or obj[key] is None:
        if required:
            raise Rejected(Reason.MISSING_FIELD, f"field {key!r} is missing")
        return None
    v = obj[key]
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise Rejected(Reason.BAD_VALUE_TYPE, f"field {key!r} must be a number, got {type(v).__name__}")
    f = float(v)
    if not math.isfinite(f):
        raise Rejected(Reason.VALUE_NOT_FINITE, f"field {key!r} is not finite")
    return f


def reading_from(obj: Any, with_sensor: bool) -> RawReading:
    if not isinstance(obj, dict):
        raise Rejected(Reason.BAD_SHAPE, f"a reading must be a JSON object, got {type(obj).__name__}")
    sensor = None
    if with_sensor:
        sensor = obj.get("sensor")
        if sensor is None:
            raise Rejected(Reason.MISSING_FIELD, "field 'sensor' is missing")
        if not isinstance(sensor, str):
            raise Rejected(Reason.BAD_VALUE_TYPE, "field 'sensor' must be a string")
    if "ts" not in obj:
        raise Rejected(Reason.MISSING_FIELD, "field 'ts' is missing")
    ts = parse_ts(obj["ts"])
    value = _number(obj, "value", required=True)
    assert value is not None
    return RawReading(sensor, ts, value, _number(obj, "battery", False), _number(obj, "rssi", False))


def batch_items(doc: Any) -> list[Any]:
    """The readings of a gateway batch: {"readings": [...]} or the bare list."""
    items = doc.get("readings") if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise Rejected(Reason.BAD_SHAPE, "a batch is {\"readings\": [...]} or a JSON list of readings")
    if not items:
        raise Rejected(Reason.BAD_SHAPE, "batch has no readings")
    return items
