"""SenML JSON (RFC 8428) packs, as off-the-shelf gateways send them, resolved into readings.

A pack is a JSON array of records. Base fields (bn, bt, bu, bv, bver) apply to the record
that carries them and to every later one until redefined; a record's name is bn + n, its time
bt + t in seconds, its unit u or else bu, its value bv + v (or vb: true = 1, false = 0, for
alarm flags). A resolved time below 2**28 s is relative to the moment of receipt (RFC 8428
§4.5.3), at or above it is absolute (epoch seconds). A field set to null counts as absent, as in
the native format (RFC 8428 has no null; some gateways write one for a field they lack).

Naming (our convention, documented in docs/decisions.md): the resolved name, after an optional
`urn:dev:<scheme>:` prefix, is `{sensor_id}` or `{sensor_id}:{measure}`, where measure is
empty or the sensor's kind (the reading) or `battery` / `rssi` (health fields merged into the
reading of the same sensor and time). So `bn = "urn:dev:id:RG-0001:"` with `n = "rain"`, and
`n = "RG-0001"` alone, both name rain gauge RG-0001. On a per-sensor topic the name may be
left out entirely.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from ingest.decode import TS_MS_BELOW
from ingest.reasons import Reason, Rejected

SENML_KEYS = frozenset({"bn", "bt", "bu", "bv", "bs", "bver", "n", "u", "v", "vs", "vb", "vd", "s", "t", "ut"})
NATIVE_KEYS = frozenset({"sensor", "ts", "value", "readings"})
RELATIVE_BELOW_S = 2**28  # RFC 8428 §4.5.3
SUPPORTED_VERSION = 10
HEALTH = ("battery", "rssi")
_URN = re.compile(r"^urn:dev:[a-z]+:")


def is_senml(doc: Any) -> bool:
    """A JSON array whose first record uses SenML labels and none of the native ones."""
    if not isinstance(doc, list) or not doc or not isinstance(doc[0], dict):
        return False
    keys = doc[0].keys()
    return not NATIVE_KEYS.intersection(keys) and bool(SENML_KEYS.intersection(keys))


@dataclass(slots=True)
class SenmlRecord:
    index: int  # position in the pack, for rejections
    sensor: str | None  # None: the topic names the sensor
    measure: str  # "" (the reading), a kind name, "battery" or "rssi"
    ts_ms: int
    value: float
    unit: str | None


def _str(rec: dict[str, Any], key: str) -> str | None:
    v = rec.get(key)
    if v is not None and not isinstance(v, str):
        raise Rejected(Reason.SENML_BAD_RECORD, f"field {key!r} must be a string")
    return v


def _num(rec: dict[str, Any], key: str) -> float | None:
    v = rec.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise Rejected(Reason.SENML_BAD_RECORD, f"field {key!r} must be a number")
    if not math.isfinite(v):
        raise Rejected(Reason.VALUE_NOT_FINITE, f"field {key!r} is not finite")
    return float(v)


def split_name(name: str) -> tuple[str, str]:
    """`[urn:dev:<scheme>:]{sensor}[:{measure}]` -> (sensor, measure)."""
    rest = _URN.sub("", name, count=1)
    sensor, _, measure = rest.partition(":")
    if not sensor or ":" in measure:
        raise Rejected(Reason.SENML_BAD_NAME, f"name {name[:80]!r} is not {{sensor}}[:{{measure}}]")
    return sensor, measure


class SenmlPack:
    """Resolves the records of one pack; a bad record raises with its index in `errors`."""

    def __init__(self, doc: list[Any], now_ms: int):
        self.records: list[SenmlRecord] = []
        self.errors: list[tuple[int, Rejected]] = []
        base = {"bn": "", "bt": 0.0, "bu": None, "bv": 0.0}
        for i, rec in enumerate(doc):
            try:
                self.records.append(self._resolve(i, rec, base, now_ms))
            except Rejected as exc:
                self.errors.append((i, exc))

    @staticmethod
    def _resolve(i: int, rec: Any, base: dict[str, Any], now_ms: int) -> SenmlRecord:
        if not isinstance(rec, dict):
            raise Rejected(Reason.SENML_BAD_RECORD, f"record must be a JSON object, got {type(rec).__name__}")
        if None in rec.values():
            rec = {k: v for k, v in rec.items() if v is not None}
        # base fields take effect before the record's own fields are read (RFC 8428 §4.1)
        bver = rec.get("bver")
        if bver is not None and (not isinstance(bver, int) or isinstance(bver, bool) or bver > SUPPORTED_VERSION):
            raise Rejected(Reason.SENML_UNSUPPORTED, f"bver {bver!r} is not a version up to {SUPPORTED_VERSION}")
        for key in ("bn", "bu"):
            if key in rec:
                base[key] = _str(rec, key)
        for key in ("bt", "bv"):
            if key in rec:
                base[key] = _num(rec, key) or 0.0
        name = base["bn"] + (_str(rec, "n") or "")
        unit = _str(rec, "u") or base["bu"]
        t = base["bt"] + (_num(rec, "t") or 0.0)
        if "v" in rec:
            v = _num(rec, "v")
            assert v is not None
            value = base["bv"] + v
        elif "vb" in rec:
            if not isinstance(rec["vb"], bool):
                raise Rejected(Reason.SENML_BAD_RECORD, "field 'vb' must be true or false")
            value = 1.0 if rec["vb"] else 0.0
        elif any(k in rec for k in ("vs", "vd", "s")):
            raise Rejected(Reason.SENML_UNSUPPORTED, "only numeric (v) and boolean (vb) values are stored")
        else:
            raise Rejected(Reason.SENML_NO_VALUE, "record has no value (v or vb)")
        ms = (t if t >= RELATIVE_BELOW_S else now_ms / 1000 + t) * 1000
        if not 1 <= ms < TS_MS_BELOW:  # bt + t can even add up to inf
            raise Rejected(Reason.BAD_TIMESTAMP, f"time {t!r} s resolves before the epoch or beyond any time")
        ts_ms = round(ms)
        if name:
            sensor, measure = split_name(name)
            return SenmlRecord(i, sensor, measure, ts_ms, value, unit)
        return SenmlRecord(i, None, "", ts_ms, value, unit)
