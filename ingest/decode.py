"""Payload decoding: native JSON, one reading or a gateway batch, into raw readings.

Each failure raises `Rejected` with its own reason code; in a batch, a bad reading is rejected
alone and its neighbours go on. The common payloads take a fast path (`simple_reading`,
`simple_item`) that checks types without building objects; anything else takes the general
path, which names exactly what is wrong.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import msgspec
import orjson

from ingest.reasons import Reason, Rejected

# Epoch numbers below this are seconds, above it milliseconds (1e11 s is the year 5138,
# 1e11 ms is 1973): a sensor clock can be wrong, but never that wrong in both units.
SECONDS_BELOW = 100_000_000_000
# Epoch milliseconds at or above this are refused as no time at all: the bound keeps every
# accepted time inside an int64 column (2**62 ms is 146 million years away)
TS_MS_BELOW = 1 << 62
# JSON has no NaN or Infinity; senders that write them anyway get a precise reason
_NON_FINITE = re.compile(rb"[:\[,]\s*-?(?:NaN|Infinity)\s*[,\]}]")


@dataclass(slots=True)
class RawReading:
    sensor: str | None  # named inside batch payloads; None when the topic names it
    ts_ms: int
    value: float
    battery: float | None = None
    rssi: float | None = None
    unit: str | None = None


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
        if _NON_FINITE.search(payload):
            raise Rejected(Reason.VALUE_NOT_FINITE, "NaN or Infinity is not a JSON number") from None
        raise Rejected(Reason.BAD_JSON, f"not valid JSON: {exc}") from None


def parse_ts(raw: Any) -> int:
    """Epoch seconds or milliseconds (number), or an RFC 3339 string with an offset."""
    if isinstance(raw, bool) or raw is None:
        raise Rejected(Reason.BAD_TIMESTAMP, f"ts must be epoch seconds/milliseconds or RFC 3339, got {raw!r}")
    if isinstance(raw, int | float):
        if not math.isfinite(raw) or raw < 0.001:  # 0.0004 s would round to 0 ms
            raise Rejected(Reason.BAD_TIMESTAMP, f"ts {raw!r} is not a positive epoch time")
        if raw >= TS_MS_BELOW:
            raise Rejected(Reason.BAD_TIMESTAMP, f"ts {raw!r} is too large for epoch seconds or milliseconds")
        return round(raw * 1000) if raw < SECONDS_BELOW else int(raw)
    if isinstance(raw, str):
        try:
            dt = datetime.fromisoformat(raw)
        except ValueError:
            raise Rejected(Reason.BAD_TIMESTAMP, f"ts {raw[:40]!r} is not RFC 3339") from None
        if dt.tzinfo is None:
            raise Rejected(Reason.BAD_TIMESTAMP, f"ts {raw[:40]!r} has no UTC offset")
        ms = round(dt.timestamp() * 1000)
        if ms <= 0:  # as for numbers: a clock never set (and InfluxDB holds nothing before 1677)
            raise Rejected(Reason.BAD_TIMESTAMP, f"ts {raw[:40]!r} is not after 1970-01-01T00:00:00Z")
        return ms
    raise Rejected(Reason.BAD_TIMESTAMP, f"ts has type {type(raw).__name__}")


def _number(obj: dict[str, Any], key: str, required: bool) -> float | None:
    if key not in obj or obj[key] is None:
        if required:
            raise Rejected(Reason.MISSING_FIELD, f"field {key!r} is missing")
        return None
    v = obj[key]
    if isinstance(v, bool) or not isinstance(v, int | float):
        what = "a number in a string" if isinstance(v, str) and _looks_numeric(v) else type(v).__name__
        raise Rejected(Reason.BAD_VALUE_TYPE, f"field {key!r} must be a JSON number, got {what}")
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
    unit = obj.get("unit")
    if unit is not None and not isinstance(unit, str):
        raise Rejected(Reason.BAD_VALUE_TYPE, f"field 'unit' must be a string, got {type(unit).__name__}")
    return RawReading(sensor, ts, value, _number(obj, "battery", False), _number(obj, "rssi", False), unit)


def _looks_numeric(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


_NUMBER = (int, float)


def simple_reading(doc: Any, unit: str) -> tuple[int, float] | None:
    """(ts, value) of the common single reading {"ts": <int>, "value": <number>[, "unit": unit]}.

    None sends the payload down the general path; `ts` is returned as sent (seconds or ms).
    """
    if doc.__class__ is not dict or len(doc) > 3:
        return None
    t = doc.get("ts")
    v = doc.get("value")
    if t.__class__ is not int or v.__class__ not in _NUMBER or not 0 < t < TS_MS_BELOW:
        return None
    if len(doc) == 3 and doc.get("unit") != unit:
        return None
    return t, v


def simple_item(doc: Any) -> tuple[str, int, float] | None:
    """(sensor, ts, value) of the common batch item {"sensor": str, "ts": int, "value": number}."""
    if doc.__class__ is not dict or len(doc) != 3:
        return None
    s = doc.get("sensor")
    t = doc.get("ts")
    v = doc.get("value")
    if s.__class__ is not str or t.__class__ is not int or v.__class__ not in _NUMBER or not 0 < t < TS_MS_BELOW:
        return None
    return s, t, v


def batch_items(doc: Any) -> list[Any]:
    """The readings of a gateway batch: {"readings": [...]} or the bare list."""
    items = doc.get("readings") if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise Rejected(Reason.BAD_SHAPE, "a batch is {\"readings\": [...]} or a JSON list of readings")
    if not items:
        raise Rejected(Reason.BAD_SHAPE, "batch has no readings")
    return items


class _Item(msgspec.Struct, forbid_unknown_fields=True, gc=False):  # holds no containers: no cycles
    sensor: str
    ts: Annotated[int, msgspec.Meta(gt=0, lt=TS_MS_BELOW)]  # epoch s or ms
    value: float


class _Batch(msgspec.Struct, forbid_unknown_fields=True):
    readings: list[_Item]


_BATCH = msgspec.json.Decoder(list[_Item] | _Batch)


def plain_batch(payload: bytes) -> tuple[list[str], list[int], list[float]] | None:
    """(sensors, ts as sent, values) of a gateway batch whose every item is exactly
    {"sensor": str, "ts": int, "value": number}, decoded and type-checked in one C pass without
    building a dict per reading; None sends the payload down the general path (which names
    what is wrong, item by item)."""
    try:
        doc = _BATCH.decode(payload)
    except msgspec.DecodeError:  # also every type or shape mismatch (ValidationError)
        return None
    items = doc.readings if isinstance(doc, _Batch) else doc
    if not items:
        return None
    return [i.sensor for i in items], [i.ts for i in items], [i.value for i in items]
