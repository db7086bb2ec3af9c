"""Turn a batch of MQTT messages into accepted readings (numpy columns) and rejections.

The registry decides what a reading is: the topic names a sensor, the registry says its kind,
region, unit and valid range. A per-sensor topic that passed once is cached with its sensor
index, so the common message (a known sensor on its own topic, `{"ts": ..., "value": ...}`)
costs one dict lookup, one `orjson.loads` and a few type checks; range, future and lateness
checks then run once over the whole batch in numpy. The common gateway batch from a gateway
topic seen before is read, with every other such batch in the same call, by the compiled
scanner (ingest/gatewayscan.py) straight into columns. Everything else (a batch the scanner
leaves alone, SenML, unit conversion, health fields, first sight of a topic, unregistered
sensors) takes the general path, which names exactly what is wrong.

Time policy (DESIGN §4, docs/decisions.md): a reading more than `future_tolerance_s` ahead of
the receiving clock is rejected (`future_timestamp`); one older than `allowed_lateness_s` is,
under `late_policy: store`, stored in InfluxDB but not handed to the rules (too late to warn
on; it still belongs in the record), or under `late_policy: reject` rejected (`too_old`). One
older than the database's retention policy keeps is rejected (`beyond_retention`) under either
policy: InfluxDB would leave it out of the write (ingest/refusal.py). When the sensors agree
that it is this host's clock that is behind, "ahead" is judged against theirs
(ingest/hostclock.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import orjson

from ews.models import ReadingBatch
from ews.regions import RegionRegistry
from ews.sensors import SensorRegistry
from ingest.decode import (
    SECONDS_BELOW,
    RawReading,
    batch_items,
    decode_json,
    plain_batch,
    reading_from,
    simple_item,
    simple_reading,
)
from ingest.gatewayscan import GatewayScanner
from ingest.hostclock import FleetClock
from ingest.loglimit import LogLimit
from ingest.reasons import Reason, Rejected, Rejection
from ingest.senml import HEALTH, SenmlPack, is_senml
from ingest.topics import Topic, parse_topic, topic_text
from ingest.units import UnitTable

log = logging.getLogger(__name__)
MAX_GATEWAY_TOPICS = 100_000  # parsed gateway topics kept; past it, new ones are parsed each time
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(slots=True)
class Unregistered:
    """A reading of a sensor missing from the registry, kept under the `store` policy."""

    sensor: str
    kind: str
    community: str
    ts_ms: int
    value: float


@dataclass
class Outcome:
    sensor: IntArray  # registry index of each stored reading
    ts_ms: IntArray
    value: FloatArray  # in the kind's unit
    battery: FloatArray | None  # NaN where a reading has none; None when no reading has any
    rssi: FloatArray | None
    evaluate: BoolArray  # False: stored only (older than the allowed lateness)
    rejections: list[Rejection]
    unregistered: list[Unregistered] = field(default_factory=list)
    status_messages: int = 0

    def __len__(self) -> int:
        return int(self.sensor.shape[0])

    @property
    def late(self) -> int:
        return int(self.evaluate.shape[0] - np.count_nonzero(self.evaluate))

    def for_rules(self, drill: bool = False) -> ReadingBatch:
        if self.evaluate.all():
            return ReadingBatch(self.sensor, self.ts_ms, self.value, drill)
        e = self.evaluate
        return ReadingBatch(self.sensor[e], self.ts_ms[e], self.value[e], drill)


class _Rows:
    """Accepted readings column by column, with where each came from for rejections: Python
    lists for readings taken one by one, arrays for the scanner's runs of whole batches, kept in
    the order of the messages."""

    __slots__ = ("_base", "_sealed", "health", "item", "origin", "sensor", "ts", "value")

    def __init__(self) -> None:
        self.sensor: list[int] = []
        self.ts: list[int] = []  # epoch ms
        self.value: list[float] = []
        self.origin: list[int] = []  # message index
        self.item: list[int] = []  # reading index inside the message (-1: the whole message)
        self.health: dict[int, list[float]] = {}  # row -> [battery, rssi] (NaN: absent)
        self._sealed: list[tuple[IntArray, IntArray, FloatArray, IntArray, IntArray]] = []
        self._base = 0  # rows in `_sealed`

    def add(self, idx: int, ts_ms: int, value: float, origin: int, item: int) -> int:
        self.sensor.append(idx)
        self.ts.append(ts_ms)
        self.value.append(value)
        self.origin.append(origin)
        self.item.append(item)
        return self._base + len(self.sensor) - 1

    def extend(self, idx: list[int], ts_ms: list[int], value: list[float], origin: int) -> None:
        """All readings of one message, in its order."""
        n = len(idx)
        self.sensor += idx
        self.ts += ts_ms
        self.value += value
        self.origin += [origin] * n
        self.item += range(n)

    def extend_arrays(self, cols: tuple[IntArray, IntArray, FloatArray, IntArray, IntArray], a: int, b: int) -> None:
        """Readings of whole messages: rows a to b of the (sensor, ts, value, origin, item) arrays."""
        self._seal()
        s, t, v, o, i = cols
        self._sealed.append((s[a:b], t[a:b], v[a:b], o[a:b], i[a:b]))
        self._base += b - a

    def _seal(self) -> None:
        if self.sensor:  # cleared in place: `process` appends through bound methods of these lists
            self._sealed.append((np.asarray(self.sensor, np.int64), np.asarray(self.ts, np.int64),
                                 np.asarray(self.value, np.float64), np.asarray(self.origin, np.int64),
                                 np.asarray(self.item, np.int64)))
            self._base += len(self.sensor)
            for col in (self.sensor, self.ts, self.value, self.origin, self.item):
                col.clear()

    def columns(self) -> tuple[IntArray, IntArray, FloatArray, IntArray, IntArray]:
        self._seal()
        if len(self._sealed) == 1:
            return self._sealed[0]
        if not self._sealed:
            empty = np.empty(0, np.int64)
            return empty, empty, np.empty(0, np.float64), empty, empty
        return tuple(np.concatenate(c) for c in zip(*self._sealed, strict=True))  # type: ignore[return-value]

    def set_health(self, row: int, battery: float | None, rssi: float | None) -> None:
        h = self.health.setdefault(row, [float("nan"), float("nan")])
        if battery is not None:
            h[0] = battery
        if rssi is not None:
            h[1] = rssi


class MessageProcessor:
    def __init__(
        self, sensors: SensorRegistry, regions: RegionRegistry, max_payload_bytes: int = 256 * 1024,
        future_tolerance_s: float = 300.0, allowed_lateness_s: float = 7 * 86400.0,
        late_policy: Literal["store", "reject"] = "store",
        unknown_sensor: Literal["reject", "store"] = "reject",
    ):
        self.sensors = sensors
        self.regions = regions
        self.max_payload_bytes = max_payload_bytes
        self.future_tolerance_ms = int(future_tolerance_s * 1000)
        self.allowed_lateness_ms = int(allowed_lateness_s * 1000)
        self.late_policy = late_policy
        self.unknown_sensor = unknown_sensor
        self.units = UnitTable()
        self._oldest_ms: int | None = None  # of the batch being processed: InfluxDB keeps nothing older
        # topic (str or the raw bytes paho hands over) -> sensor index, for per-sensor topics
        self._topic_cache: dict[str | bytes, int] = {}
        self._gateways: dict[str | bytes, Topic] = {}  # gateway batch topics, parsed once
        # gateway topics of a known region -> (code, divisor) of that region, for the scanner
        self._gateway_regions: dict[str | bytes, tuple[int, int]] = {}
        # of those, the ones first seen in the batch being processed (after its scan was made)
        self._learned: set[str | bytes] = set()
        self._scanner = GatewayScanner([s.id for s in sensors.sensors], [s.community for s in sensors.sensors])
        self._scanner_log = LogLimit(per_window=3, what="gateway scanner failures")
        # gateway region prefix -> {sensor id: index} of sensors seen inside it
        self._inside: dict[str, dict[str, int]] = {}
        kinds = sensors.kinds
        self._unit_of = [kinds[s.kind].unit for s in sensors.sensors]
        self._lo = np.array([kinds[s.kind].min for s in sensors.sensors], np.float64)
        self._hi = np.array([kinds[s.kind].max for s in sensors.sensors], np.float64)
        self.clock = FleetClock(len(sensors), self.future_tolerance_ms)

    # --- the batch ----------------------------------------------------------------------------

    def process(self, messages: Sequence[tuple[Any, ...]], now_ms: int | None = None,
                keep_ms: int | None = None, live: bool = True) -> Outcome:
        """`messages`: tuples whose first two items are the topic (str or bytes) and payload;
        `keep_ms`: how far back the database they go to keeps readings (None: for ever);
        `live`: False for a drill's, whose made-up times must not tell the host's clock."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        self._oldest_ms = now_ms - keep_ms if keep_ms else None
        rows = _Rows()
        rejections: list[Rejection] = []
        unregistered: list[Unregistered] = []
        status = 0
        cache = self._topic_cache
        unit_of = self._unit_of
        loads = orjson.loads
        limit = self.max_payload_bytes
        r_sensor, r_ts, r_value, r_origin, r_item = rows.sensor, rows.ts, rows.value, rows.origin, rows.item
        self._learned.clear()
        scan = self._scan_gateways(messages) if self._gateway_regions else None
        run_a = run_b = 0  # the scanner's rows not yet handed to `rows`
        for j, m in enumerate(messages):
            if scan is not None:
                end = scan[0].get(j)
                if end is not None:
                    run_b = end
                    continue
                if run_b > run_a:
                    rows.extend_arrays(scan[1], run_a, run_b)
                    run_a = run_b
            topic, payload = m[0], m[1]
            idx = cache.get(topic)
            doc: Any = None
            if idx is not None and 0 < len(payload) <= limit:
                try:
                    doc = loads(payload)
                except orjson.JSONDecodeError:
                    doc = None
                else:
                    r = simple_reading(doc, unit_of[idx])
                    if r is not None:
                        t = r[0]
                        r_sensor.append(idx)
                        r_ts.append(t if t >= SECONDS_BELOW else t * 1000)
                        r_value.append(r[1])
                        r_origin.append(j)
                        r_item.append(-1)
                        continue
            text = topic_text(topic)
            try:
                status += self._general(rows, rejections, unregistered, j, topic, text, payload, idx, doc, now_ms)
            except Rejected as exc:
                rejections.append(Rejection(exc.reason, exc.detail, text, payload))
        if scan is not None and run_b > run_a:
            rows.extend_arrays(scan[1], run_a, run_b)
        return self._finish(rows, rejections, unregistered, status, messages, now_ms, live)

    def _scan_gateways(self, messages: Sequence[tuple[Any, ...]]
                       ) -> tuple[dict[int, int], tuple[IntArray, IntArray, FloatArray, IntArray, IntArray]] | None:
        """The plain gateway batches of known gateway topics, read by the scanner all at once:
        (message index -> where its rows end in the columns; the (sensor, ts, value, origin,
        item) columns of every message the scanner took, in order). The rest go the usual way."""
        regions = self._gateway_regions
        limit = self.max_payload_bytes
        js, payloads, where = [], [], []
        for j, m in enumerate(messages):
            r = regions.get(m[0])
            if r is not None and 0 < len(m[1]) <= limit:
                js.append(j)
                payloads.append(m[1])
                where.append(r)
        if not js:
            return None
        return self._scan(js, payloads, where)

    def _scan(self, js: list[int], payloads: list[bytes], where: list[tuple[int, int]]
              ) -> tuple[dict[int, int], tuple[IntArray, IntArray, FloatArray, IntArray, IntArray]] | None:
        """The scanner over messages `js`: as `_scan_gateways` answers, None if it took none."""
        try:
            counts, sensor, ts, value = self._scanner.scan(payloads, where)
        except Exception:  # a fault of the scanner's own: the usual path reads these the slow way
            if self._scanner_log.allow("gateway scanner"):
                log.exception("gateway scanner failed on a batch of %d payloads; reading them one by one", len(js))
            return None
        c = np.asarray(counts)
        took = c > 0
        if not took.any():
            return None
        n = c[took]
        ends = np.cumsum(n)
        scanned = np.asarray(js)[took]
        origin = np.repeat(scanned, n)
        item = np.arange(int(ends[-1])) - np.repeat(ends - n, n)
        return dict(zip(scanned.tolist(), ends.tolist(), strict=True)), (sensor, ts, value, origin, item)

    def _finish(
        self, rows: _Rows, rejections: list[Rejection], unregistered: list[Unregistered], status: int,
        messages: Sequence[tuple[Any, ...]], now_ms: int, live: bool,
    ) -> Outcome:
        sensor, ts, value, origin, item = rows.columns()
        n = sensor.shape[0]
        battery = rssi = None
        if rows.health:
            battery = np.full(n, np.nan)
            rssi = np.full(n, np.nan)
            for row, (b, r) in rows.health.items():
                battery[row], rssi[row] = b, r
        bad_range = ~((self._lo[sensor] <= value) & (value <= self._hi[sensor]))
        future = ts > self.clock.now(now_ms) + self.future_tolerance_ms
        if live and (self.clock.due(now_ms) or future.any()):
            future = ts > now_ms + self.clock.observe(sensor, ts, now_ms) + self.future_tolerance_ms
        late = ts < now_ms - self.allowed_lateness_ms
        drop = bad_range | future
        if self._oldest_ms is not None:
            drop |= ts < self._oldest_ms
        if self.late_policy == "reject":
            drop |= late
        if drop.any():
            for k in np.flatnonzero(drop).tolist():
                rejections.append(self._row_rejection(
                    int(sensor[k]), int(ts[k]), float(value[k]), int(origin[k]), int(item[k]), messages,
                    bool(bad_range[k]), bool(future[k]), now_ms,
                ))
            keep = ~drop
            sensor, ts, value, late = sensor[keep], ts[keep], value[keep], late[keep]
            battery = battery[keep] if battery is not None else None
            rssi = rssi[keep] if rssi is not None else None
        return Outcome(sensor, ts, value, battery, rssi, ~late, rejections, unregistered, status)

    def _row_rejection(
        self, idx: int, t: int, v: float, origin: int, item: int, messages: Sequence[tuple[Any, ...]],
        bad_range: bool, future: bool, now_ms: int,
    ) -> Rejection:
        s = self.sensors.sensors[idx]
        if bad_range:
            k = self.sensors.kinds[s.kind]
            reason = Reason.OUT_OF_RANGE
            detail = f"{s.id}: value {v} outside the valid range of {s.kind} [{k.min}, {k.max}] {k.unit}"
        elif future:
            reason = Reason.FUTURE_TIMESTAMP
            detail = f"{s.id}: ts {t} is {(t - self.clock.now(now_ms)) / 1000:.0f} s in the future"
        elif self._oldest_ms is not None and t < self._oldest_ms:
            reason = Reason.BEYOND_RETENTION
            detail = self._beyond_retention(s.id, t, now_ms)
        else:
            reason = Reason.TOO_OLD
            detail = (f"{s.id}: ts {t} is {(now_ms - t) / 3_600_000:.1f} h old, beyond the allowed "
                      f"lateness of {self.allowed_lateness_ms / 3_600_000:.1f} h")
        topic, payload = messages[origin][0], messages[origin][1]
        text = topic_text(topic)
        if item >= 0:
            detail = f"reading {item}: {detail}"
        return Rejection(reason, detail, text, payload, item if item >= 0 else None)

    def _beyond_retention(self, sensor: str, ts: int, now_ms: int) -> str:
        assert self._oldest_ms is not None
        return (f"{sensor}: ts {ts} is {(now_ms - ts) / 3_600_000:.1f} h old, older than InfluxDB keeps "
                f"readings ({(now_ms - self._oldest_ms) / 3_600_000:g} h, its retention policy)")

    # --- the general path -----------------------------------------------------------------------

    def _general(
        self, rows: _Rows, rejections: list[Rejection], unregistered: list[Unregistered], j: int,
        key: str | bytes, topic: str, payload: bytes, idx: int | None, doc: Any, now_ms: int,
    ) -> int:
        """One message off the fast path; returns 1 for a status message, else 0."""
        t = self._gateways.get(key) or parse_topic(topic)
        if t.shape == "batch":
            if len(self._gateways) < MAX_GATEWAY_TOPICS:
                self._gateways[key] = t
                where = self._scanner.region(t.region[-1]) if t.region[-1] in self.regions else None
                if where is not None and key not in self._gateway_regions:
                    self._gateway_regions[key] = where
                    self._learned.add(key)
            # a gateway's first batches (a backlog's first messages after a start are mostly
            # first sights) go to the scanner too, not through the general path reading by reading
            if key in self._learned and 0 < len(payload) <= self.max_payload_bytes:
                got = self._scan([j], [payload], [self._gateway_regions[key]])
                if got is not None:
                    rows.extend_arrays(got[1], 0, got[0][j])
                    return 0
            self._batch(rows, rejections, j, t, topic, payload, now_ms)
            return 0
        if idx is None:
            idx = self._sensor_for(t)
        if doc is None:
            doc = decode_json(payload, self.max_payload_bytes)
        if t.shape == "status":
            if not isinstance(doc, dict):
                raise Rejected(Reason.BAD_SHAPE, "a status message must be a JSON object")
            return 1
        if idx < 0:
            assert t.kind is not None and t.sensor is not None
            self._unregistered(unregistered, t, doc, now_ms)
            return 0
        if is_senml(doc):
            self._senml(rows, rejections, j, topic, payload, doc, now_ms, sensor_idx=idx)
            return 0
        r = reading_from(doc, False)
        self._add(rows, idx, r, j, -1)
        self._topic_cache[key] = idx  # under the key it arrives with (paho's raw bytes)
        return 0

    def _add(self, rows: _Rows, idx: int, r: RawReading, origin: int, item: int) -> None:
        value = r.value
        if r.unit is not None:
            value = self.units.convert(value, r.unit, self._unit_of[idx])
        row = rows.add(idx, r.ts_ms, value, origin, item)
        if r.battery is not None or r.rssi is not None:
            rows.set_health(row, r.battery, r.rssi)

    def _sensor_for(self, t: Topic) -> int:
        """Registry index of the topic's sensor; -1: unregistered, to be stored (policy `store`)."""
        assert t.kind is not None and t.sensor is not None
        if t.kind not in self.sensors.kinds:
            raise Rejected(Reason.UNKNOWN_KIND, f"kind {t.kind!r} is not configured")
        idx = self.sensors.index.get(t.sensor)
        if idx is None:
            community = t.region[-1]
            if community not in self.regions:
                raise Rejected(Reason.UNKNOWN_REGION, f"community {community} is not in the region registry")
            if self.unknown_sensor == "store":
                return -1
            raise Rejected(Reason.UNKNOWN_SENSOR, f"sensor {t.sensor} is not registered")
        s = self.sensors.sensors[idx]
        if s.kind != t.kind:
            raise Rejected(Reason.KIND_MISMATCH, f"sensor {s.id} is registered as {s.kind}, topic says {t.kind}")
        if s.community != t.region[-1]:
            raise Rejected(
                Reason.REGION_MISMATCH, f"sensor {s.id} is registered under {s.community}, topic says {t.region[-1]}"
            )
        return idx

    def _unregistered(self, out: list[Unregistered], t: Topic, doc: Any, now_ms: int) -> None:
        assert t.kind is not None and t.sensor is not None
        if is_senml(doc):
            pack = SenmlPack(doc, self.clock.now(now_ms))  # receipt, by the best clock known
            if pack.errors:
                raise pack.errors[0][1]
            bad = [r.measure for r in pack.records if r.measure not in ("", t.kind)]
            if bad:
                raise Rejected(Reason.SENML_BAD_NAME, f"measure {bad[0]!r} of an unregistered {t.kind} sensor")
            raws = [RawReading(None, r.ts_ms, r.value, unit=r.unit) for r in pack.records]
        else:
            raws = [reading_from(doc, False)]
        k = self.sensors.kinds[t.kind]
        for r in raws:
            v = self.units.convert(r.value, r.unit, k.unit) if r.unit is not None else r.value
            if not k.min <= v <= k.max:
                raise Rejected(Reason.OUT_OF_RANGE, f"{t.sensor}: value {v} outside [{k.min}, {k.max}] {k.unit}")
            if r.ts_ms > self.clock.now(now_ms) + self.future_tolerance_ms:
                raise Rejected(Reason.FUTURE_TIMESTAMP, f"{t.sensor}: ts {r.ts_ms} is in the future")
            if self._oldest_ms is not None and r.ts_ms < self._oldest_ms:
                raise Rejected(Reason.BEYOND_RETENTION, self._beyond_retention(t.sensor, r.ts_ms, now_ms))
            out.append(Unregistered(t.sensor, t.kind, t.region[-1], r.ts_ms, v))

    def _inside_region(self, prefix: str, sensor: str) -> int:
        """Index of a registered sensor inside the region `prefix`, or raise why not."""
        known = self._inside.setdefault(prefix, {})
        idx = known.get(sensor)
        if idx is not None:
            return idx
        idx = self.sensors.index.get(sensor)
        if idx is None:
            raise Rejected(Reason.UNKNOWN_SENSOR, f"sensor {sensor} is not registered")
        community = self.sensors.sensors[idx].community
        if not community.startswith(prefix):
            raise Rejected(Reason.REGION_MISMATCH,
                           f"sensor {sensor} lies in {community}, outside the gateway's region {prefix}")
        known[sensor] = idx
        return idx

    def _batch(
        self, rows: _Rows, rejections: list[Rejection], j: int, t: Topic, topic: str, payload: bytes,
        now_ms: int,
    ) -> None:
        prefix = t.region[-1]
        if prefix not in self.regions:
            raise Rejected(Reason.UNKNOWN_REGION, f"region {prefix} is not in the region registry")
        known = self._inside.setdefault(prefix, {})
        if 0 < len(payload) <= self.max_payload_bytes and self._plain_batch(rows, j, known, payload):
            return
        doc = decode_json(payload, self.max_payload_bytes)
        if is_senml(doc):
            self._senml(rows, rejections, j, topic, payload, doc, now_ms, prefix=prefix)
            return
        items: list[Any] = batch_items(doc)
        # the common batch took `_plain_batch`; here one of its items is unusual or new
        for i, item in enumerate(items):
            s = simple_item(item)
            if s is not None:
                idx = known.get(s[0])
                if idx is not None:
                    ts = s[1]
                    rows.add(idx, ts if ts >= SECONDS_BELOW else ts * 1000, s[2], j, i)
                    continue
            try:
                r = reading_from(item, True)
                assert r.sensor is not None
                self._add(rows, self._inside_region(prefix, r.sensor), r, j, i)
            except Rejected as exc:
                rejections.append(Rejection(exc.reason, f"reading {i}: {exc.detail}", topic,
                                            _excerpt(payload, item), i))

    @staticmethod
    def _plain_batch(rows: _Rows, j: int, known: dict[str, int], payload: bytes) -> bool:
        """The common gateway batch of sensors already seen under this gateway, column by column."""
        cols = plain_batch(payload)
        if cols is None:
            return False
        sensors, ts, values = cols
        idx = list(map(known.get, sensors))
        if None in idx:
            return False  # first sight of a sensor here: checked one by one on the general path
        if min(ts) < SECONDS_BELOW:
            ts = [t if t >= SECONDS_BELOW else t * 1000 for t in ts]
        rows.extend(idx, ts, values, j)  # type: ignore[arg-type]  # no None left
        return True

    def _senml(
        self, rows: _Rows, rejections: list[Rejection], j: int, topic: str, payload: bytes, doc: list[Any],
        now_ms: int, sensor_idx: int | None = None, prefix: str | None = None,
    ) -> None:
        """A SenML pack on a per-sensor topic (`sensor_idx`) or a gateway topic (`prefix`)."""
        pack = SenmlPack(doc, self.clock.now(now_ms))  # receipt, by the best clock known
        health: list[tuple[int, int, str, float]] = []  # (record index, sensor, measure, value)
        health_ts: list[int] = []
        at: dict[tuple[int, int], int] = {}  # (sensor, ts) -> row of its reading
        for rec in pack.records:
            try:
                if rec.sensor is None:
                    if sensor_idx is None:
                        raise Rejected(Reason.SENML_NO_NAME, "record has no name (bn + n) naming its sensor")
                    idx = sensor_idx
                elif sensor_idx is not None:
                    idx = sensor_idx
                    own = self.sensors.sensors[sensor_idx].id
                    if rec.sensor != own:
                        raise Rejected(Reason.SENML_BAD_NAME, f"record names {rec.sensor}, the topic names {own}")
                else:
                    assert prefix is not None
                    idx = self._inside_region(prefix, rec.sensor)
                kind = self.sensors.sensors[idx].kind
                if rec.measure in HEALTH:
                    health.append((rec.index, idx, rec.measure, rec.value))
                    health_ts.append(rec.ts_ms)
                    continue
                if rec.measure not in ("", kind):
                    raise Rejected(Reason.SENML_BAD_NAME,
                                   f"measure {rec.measure!r} is neither {kind!r} nor one of {', '.join(HEALTH)}")
                value = self.units.convert(rec.value, rec.unit, self._unit_of[idx]) if rec.unit else rec.value
                at[(idx, rec.ts_ms)] = rows.add(idx, rec.ts_ms, value, j, rec.index)
            except Rejected as exc:
                pack.errors.append((rec.index, exc))
        for (i, idx, measure, v), ts in zip(health, health_ts, strict=True):
            row = at.get((idx, ts))
            if row is None:
                pack.errors.append((i, Rejected(
                    Reason.SENML_NO_READING, f"{measure} record has no reading of the same sensor at {ts}")))
                continue
            rows.set_health(row, v if measure == "battery" else None, v if measure == "rssi" else None)
        for i, err in sorted(pack.errors, key=lambda e: e[0]):
            rejections.append(Rejection(err.reason, f"record {i}: {err.detail}", topic,
                                        _excerpt(payload, doc[i]), i))


def _excerpt(payload: bytes, item: Any) -> bytes:
    if len(payload) < 512:
        return payload
    try:
        return orjson.dumps(item)[:512]
    except TypeError:
        return repr(item)[:512].encode()
