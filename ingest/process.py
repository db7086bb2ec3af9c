"""Turn a batch of MQTT messages into accepted readings and rejections.

The registry decides what a reading is: the topic names a sensor, the registry says its kind,
region and valid range. A topic that passed once is cached with its sensor index, so the
common case (a known sensor on its own topic) costs one dict lookup before decoding.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ews.models import ReadingBatch
from ews.regions import RegionRegistry
from ews.sensors import SensorRegistry
from ingest.decode import RawReading, batch_items, decode_json, reading_from
from ingest.reasons import Reason, Rejected, Rejection
from ingest.topics import Topic, parse_topic


@dataclass
class Accepted:
    sensor: list[int] = field(default_factory=list)
    ts_ms: list[int] = field(default_factory=list)
    value: list[float] = field(default_factory=list)
    battery: list[float | None] = field(default_factory=list)
    rssi: list[float | None] = field(default_factory=list)
    has_health: bool = False

    def add(self, idx: int, r: RawReading) -> None:
        self.sensor.append(idx)
        self.ts_ms.append(r.ts_ms)
        self.value.append(r.value)
        self.battery.append(r.battery)
        self.rssi.append(r.rssi)
        if r.battery is not None or r.rssi is not None:
            self.has_health = True

    def __len__(self) -> int:
        return len(self.sensor)

    def to_batch(self, drill: bool = False) -> ReadingBatch:
        return ReadingBatch(
            np.asarray(self.sensor, np.int64), np.asarray(self.ts_ms, np.int64),
            np.asarray(self.value, np.float64), drill,
        )


@dataclass
class Outcome:
    accepted: Accepted
    rejections: list[Rejection]
    status_messages: int = 0


class MessageProcessor:
    def __init__(
        self, sensors: SensorRegistry, regions: RegionRegistry, max_payload_bytes: int = 256 * 1024,
        future_tolerance_s: float = 300.0,
    ):
        self.sensors = sensors
        self.regions = regions
        self.max_payload_bytes = max_payload_bytes
        self.future_tolerance_ms = int(future_tolerance_s * 1000)
        self._topic_cache: dict[str, int] = {}
        kinds = sensors.kinds
        self._lo = np.array([kinds[s.kind].min for s in sensors.sensors])
        self._hi = np.array([kinds[s.kind].max for s in sensors.sensors])

    def process(self, messages: list[tuple[str, bytes]], now_ms: int | None = None) -> Outcome:
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        out = Outcome(Accepted(), [])
        latest_ok = now_ms + self.future_tolerance_ms
        for topic, payload in messages:
            try:
                idx = self._topic_cache.get(topic)
                if idx is not None:
                    doc = decode_json(payload, self.max_payload_bytes)
                    self._accept(out, idx, reading_from(doc, False), latest_ok, topic, payload, None)
                    continue
                t = parse_topic(topic)
                if t.shape == "batch":
                    self._batch(out, t, topic, payload, latest_ok)
                    continue
                idx = self._sensor_for(t)
                doc = decode_json(payload, self.max_payload_bytes)
                if t.shape == "status":
                    out.status_messages += 1
                    if not isinstance(doc, dict):
                        raise Rejected(Reason.BAD_SHAPE, "a status message must be a JSON object")
                    continue
                self._topic_cache[topic] = idx
                self._accept(out, idx, reading_from(doc, False), latest_ok, topic, payload, None)
            except Rejected as exc:
                out.rejections.append(Rejection(exc.reason, exc.detail, topic, payload))
        return out

    def _accept(
        self, out: Outcome, idx: int, r: RawReading, latest_ok: int, topic: str, payload: bytes,
        index: int | None,
    ) -> None:
        if not (self._lo[idx] <= r.value <= self._hi[idx]):
            s = self.sensors.sensors[idx]
            k = self.sensors.kinds[s.kind]
            raise Rejected(
                Reason.OUT_OF_RANGE,
                f"{s.id}: value {r.value} outside the valid range of {s.kind} [{k.min}, {k.max}] {k.unit}",
            )
        if r.ts_ms > latest_ok:
            raise Rejected(
                Reason.FUTURE_TIMESTAMP,
                f"ts {r.ts_ms} is {(r.ts_ms - latest_ok) / 1000 + self.future_tolerance_ms / 1000:.0f} s "
                "in the future",
            )
        out.accepted.add(idx, r)

    def _sensor_for(self, t: Topic) -> int:
        assert t.kind is not None and t.sensor is not None
        if t.kind not in self.sensors.kinds:
            raise Rejected(Reason.UNKNOWN_KIND, f"kind {t.kind!r} is not configured")
        idx = self.sensors.index.get(t.sensor)
        if idx is None:
            community = t.region[-1]
            if community not in self.regions:
                raise Rejected(Reason.UNKNOWN_REGION, f"community {community} is not in the region registry")
            raise Rejected(Reason.UNKNOWN_SENSOR, f"sensor {t.sensor} is not registered")
        s = self.sensors.sensors[idx]
        if s.kind != t.kind:
            raise Rejected(Reason.KIND_MISMATCH, f"sensor {s.id} is registered as {s.kind}, topic says {t.kind}")
        if s.community != t.region[-1]:
            raise Rejected(
                Reason.REGION_MISMATCH, f"sensor {s.id} is registered under {s.community}, topic says {t.region[-1]}"
            )
        return idx

    def _batch(self, out: Outcome, t: Topic, topic: str, payload: bytes, latest_ok: int) -> None:
        if t.region[-1] not in self.regions:
            raise Rejected(Reason.UNKNOWN_REGION, f"region {t.region[-1]} is not in the region registry")
        items: list[Any] = batch_items(decode_json(payload, self.max_payload_bytes))
        prefix = t.region[-1]
        for i, item in enumerate(items):
            try:
                r = reading_from(item, True)
                assert r.sensor is not None
                idx = self.sensors.index.get(r.sensor)
                if idx is None:
                    raise Rejected(Reason.UNKNOWN_SENSOR, f"sensor {r.sensor} is not registered")
                if not self.sensors.sensors[idx].community.startswith(prefix):
                    raise Rejected(
                        Reason.REGION_MISMATCH,
                        f"sensor {r.sensor} lies in {self.sensors.sensors[idx].community}, "
                        f"outside the gateway's region {prefix}",
                    )
                self._accept(out, idx, r, latest_ok, topic, payload, i)
            except Rejected as exc:
                excerpt = payload if len(payload) < 512 else _item_excerpt(item)
                out.rejections.append(Rejection(exc.reason, f"reading {i}: {exc.detail}", topic, excerpt, i))


def _item_excerpt(item: Any) -> bytes:
    import orjson

    try:
        return orjson.dumps(item)[:512]
    except TypeError:
        return repr(item)[:512].encode()
