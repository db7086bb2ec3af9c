"""Topic parsing, payload decoding and validation, one reason code per cause."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from ews.regions import RegionRegistry
from ews.sensors import SensorRegistry
from ingest.decode import parse_ts
from ingest.process import MessageProcessor
from ingest.reasons import Reason, Rejected
from ingest.topics import parse_topic

from .conftest import COMM_A1, COMM_B1, STREET_A

NOW = 1_764_300_000_000
T_A1 = f"ews/440106/{STREET_A}/{COMM_A1}/rain/RG-A1"


def test_topic_shapes() -> None:
    t = parse_topic(T_A1)
    assert (t.shape, t.region, t.kind, t.sensor) == ("reading", ("440106", STREET_A, COMM_A1), "rain", "RG-A1")
    assert parse_topic(T_A1 + "/status").shape == "status"
    b = parse_topic(f"ews/440106/{STREET_A}/batch/GW-07")
    assert (b.shape, b.region, b.gateway) == ("batch", ("440106", STREET_A), "GW-07")


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("foo/440106/440106001/440106001001/rain/RG-A1", Reason.BAD_TOPIC),
        ("ews/440106/440106001/440106001001/rain", Reason.BAD_TOPIC),  # too shallow
        ("ews/440106/440106001/440106001001/rain/RG-A1/x/y", Reason.BAD_TOPIC),  # too deep
        ("ews/440106//440106001001/rain/RG-A1", Reason.BAD_TOPIC),
        ("ews/44010/440106001/440106001001/rain/RG-A1", Reason.BAD_REGION_CODE),
        ("ews/440106/440107001/440107001001/rain/RG-A1", Reason.BAD_REGION_CODE),  # street not under district
        ("ews/440106/440106001/4401060010x1/rain/RG-A1", Reason.BAD_REGION_CODE),
    ],
)
def test_bad_topics(topic: str, reason: Reason) -> None:
    with pytest.raises(Rejected) as info:
        parse_topic(topic)
    assert info.value.reason == reason


def test_timestamps() -> None:
    assert parse_ts(1_764_300_000_000) == 1_764_300_000_000
    assert parse_ts(1_764_300_000) == 1_764_300_000_000  # seconds
    assert parse_ts(1_764_300_000.25) == 1_764_300_000_250
    expected = int(datetime(2025, 11, 28, 3, 20, tzinfo=UTC).timestamp() * 1000)
    assert parse_ts("2025-11-28T11:20:00+08:00") == expected
    assert parse_ts("2025-11-28T03:20:00Z") == expected
    for bad in ("yesterday", "2025-11-28T03:20:00", True, None, -5, [1]):
        with pytest.raises(Rejected) as info:
            parse_ts(bad)
        assert info.value.reason == Reason.BAD_TIMESTAMP


def _one(proc: MessageProcessor, topic: str, payload: bytes) -> tuple[int, list[Reason]]:
    out = proc.process([(topic, payload)], now_ms=NOW)
    return len(out), [r.reason for r in out.rejections]


CASES: list[tuple[str, str, bytes, Reason]] = [
    ("truncated json", T_A1, b'{"ts": 1764300000000, "val', Reason.BAD_JSON),
    ("empty", T_A1, b"", Reason.EMPTY_PAYLOAD),
    ("not utf-8", T_A1, b'{"ts": 1, "value": "\xff\xfe"}', Reason.NOT_UTF8),
    ("string value", T_A1, b'{"ts": 1764300000000, "value": "12.5"}', Reason.BAD_VALUE_TYPE),
    ("bool value", T_A1, b'{"ts": 1764300000000, "value": true}', Reason.BAD_VALUE_TYPE),
    ("NaN literal", T_A1, b'{"ts": 1764300000000, "value": NaN}', Reason.VALUE_NOT_FINITE),
    ("huge number", T_A1, b'{"ts": 1764300000000, "value": 1e999}', Reason.BAD_JSON),
    ("missing value", T_A1, b'{"ts": 1764300000000}', Reason.MISSING_FIELD),
    ("missing ts", T_A1, b'{"value": 1.0}', Reason.MISSING_FIELD),
    ("list not object", T_A1, b"[1, 2]", Reason.BAD_SHAPE),
    ("garbage ts", T_A1, b'{"ts": "soon", "value": 1.0}', Reason.BAD_TIMESTAMP),
    ("ts beyond int64", T_A1, b'{"ts": 18446744073709551615, "value": 1.0}', Reason.BAD_TIMESTAMP),
    ("ts beyond any time", T_A1, b'{"ts": 1e300, "value": 1.0}', Reason.BAD_TIMESTAMP),
    ("ts before 1970", T_A1, b'{"ts": "0001-01-01T00:00:00+00:00", "value": 1.0}', Reason.BAD_TIMESTAMP),
    ("ts a fraction of a ms after 1970", T_A1, b'{"ts": 5e-324, "value": 1.0}', Reason.BAD_TIMESTAMP),
    ("far future", T_A1, orjson.dumps({"ts": NOW + 86_400_000, "value": 1.0}), Reason.FUTURE_TIMESTAMP),
    ("out of range", T_A1, b'{"ts": 1764300000000, "value": -3}', Reason.OUT_OF_RANGE),
    ("unknown kind", f"ews/440106/{STREET_A}/{COMM_A1}/lava/RG-A1", b'{"ts": 1, "value": 1}', Reason.UNKNOWN_KIND),
    ("unknown sensor", f"ews/440106/{STREET_A}/{COMM_A1}/rain/RG-ZZ", b'{"ts": 1, "value": 1}',
     Reason.UNKNOWN_SENSOR),
    ("wrong kind", f"ews/440106/{STREET_A}/{COMM_A1}/gas/RG-A1", b'{"ts": 1, "value": 1}', Reason.KIND_MISMATCH),
    ("other region", f"ews/440106/{STREET_A}/440106001002/rain/RG-A1", b'{"ts": 1, "value": 1}',
     Reason.REGION_MISMATCH),
    ("too large", T_A1, b'{"ts": 1764300000000, "value": 1, "pad": "' + b"x" * 1_000_000 + b'"}',
     Reason.PAYLOAD_TOO_LARGE),
]


@pytest.mark.parametrize(("name", "topic", "payload", "reason"), CASES, ids=[c[0] for c in CASES])
def test_bad_payloads(
    mini_sensors: SensorRegistry, mini_regions: RegionRegistry, name: str, topic: str, payload: bytes, reason: Reason
) -> None:
    proc = MessageProcessor(mini_sensors, mini_regions)
    accepted, reasons = _one(proc, topic, payload)
    assert accepted == 0
    assert reasons == [reason], name


def test_good_single_and_cache(mini_sensors: SensorRegistry, mini_regions: RegionRegistry) -> None:
    proc = MessageProcessor(mini_sensors, mini_regions)
    msgs = [(T_A1, orjson.dumps({"ts": NOW - i * 300_000, "value": float(i), "battery": 87})) for i in range(3)]
    out = proc.process(msgs, now_ms=NOW)
    assert out.rejections == []
    assert out.sensor.tolist() == [mini_sensors.index["RG-A1"]] * 3
    assert out.value.tolist() == [0.0, 1.0, 2.0]
    assert out.battery is not None and out.battery.tolist() == [87.0] * 3
    # the cached path still validates the payload
    out = proc.process([(T_A1, b'{"ts": 1764300000000, "value": 500}')], now_ms=NOW)
    assert [r.reason for r in out.rejections] == [Reason.OUT_OF_RANGE]


def test_batch_mixing_good_and_bad(mini_sensors: SensorRegistry, mini_regions: RegionRegistry) -> None:
    proc = MessageProcessor(mini_sensors, mini_regions)
    readings = [
        {"sensor": "RG-A1", "ts": NOW, "value": 1.5},
        {"sensor": "RG-A2", "ts": NOW, "value": "x"},  # bad type
        {"sensor": "RG-B1", "ts": NOW, "value": 2.0},  # outside the gateway's street
        {"sensor": "RG-XX", "ts": NOW, "value": 2.0},  # unknown
        {"ts": NOW, "value": 2.0},  # no sensor
        {"sensor": "WL-A1", "ts": NOW, "value": 4.2},
    ]
    out = proc.process([(f"ews/440106/{STREET_A}/batch/GW-1", orjson.dumps({"readings": readings}))], now_ms=NOW)
    assert out.sensor.tolist() == [mini_sensors.index["RG-A1"], mini_sensors.index["WL-A1"]]
    assert [(r.index, r.reason) for r in out.rejections] == [
        (1, Reason.BAD_VALUE_TYPE), (2, Reason.REGION_MISMATCH), (3, Reason.UNKNOWN_SENSOR), (4, Reason.MISSING_FIELD),
    ]
    # the bare-list form is accepted too, at district depth
    out = proc.process([("ews/440106/batch/GW-D", orjson.dumps(readings[2:3]))], now_ms=NOW)
    assert out.sensor.tolist() == [mini_sensors.index["RG-B1"]] and not out.rejections
    out = proc.process([(f"ews/440106/{STREET_A}/batch/GW-1", b'{"readings": []}')], now_ms=NOW)
    assert [r.reason for r in out.rejections] == [Reason.BAD_SHAPE]
    assert COMM_B1.startswith("440106002")


def test_plain_batches_read_column_by_column_as_item_by_item(
        mini_sensors: SensorRegistry, mini_regions: RegionRegistry) -> None:
    """A batch of sensors already seen under its gateway takes the columnar path; it must give
    what the item-by-item path gives, and leave anything unusual to that path."""
    topic = f"ews/440106/{STREET_A}/batch/GW-1"
    good = [{"sensor": "RG-A1", "ts": NOW - 60_000, "value": 1.5}, {"sensor": "WL-A1", "ts": NOW // 1000, "value": 4},
            {"sensor": "RG-A2", "ts": NOW, "value": 0}]
    first = MessageProcessor(mini_sensors, mini_regions)
    # the compiled scanner aside (tests/test_ingest_gatewayscan.py): this is the path for what it leaves
    first._scan = lambda js, payloads, where: None  # type: ignore[method-assign]
    msgs = [(topic, orjson.dumps({"readings": good})), (topic, orjson.dumps(good[::-1]))]
    slow = first.process(msgs, now_ms=NOW)  # first sight: item by item
    fast = first.process(msgs, now_ms=NOW)  # the same, now known: columns
    assert first._inside  # the gateway's sensors were learnt
    for a, b in ((slow.sensor, fast.sensor), (slow.ts_ms, fast.ts_ms), (slow.value, fast.value)):
        assert a.tolist() == b.tolist()
    assert fast.ts_ms.tolist()[1] == (NOW // 1000) * 1000 and fast.value.dtype.kind == "f"
    assert not slow.rejections and not fast.rejections
    # unusual items in a known batch still get their own reasons, and the good ones are kept
    odd = [*good, {"sensor": "RG-A1", "ts": NOW, "value": 2.0, "unit": "cm"},
           {"sensor": "RG-A1", "ts": True, "value": 1.0}]
    out = first.process([(topic, orjson.dumps({"readings": odd}))], now_ms=NOW)
    assert out.sensor.shape[0] == 4 and out.value.tolist()[3] == 20.0  # 2 cm of rain is 20 mm
    assert [(r.index, r.reason) for r in out.rejections] == [(4, Reason.BAD_TIMESTAMP)]
    # a number no float holds is not JSON to the general path either: the same verdict
    huge = orjson.dumps({"readings": good})[:-2] + b', {"sensor": "RG-A1", "ts": 1764300000000, "value": 1e999}]}'
    out = first.process([(topic, huge)], now_ms=NOW)
    assert out.sensor.shape[0] == 0 and [r.reason for r in out.rejections] == [Reason.BAD_JSON]
