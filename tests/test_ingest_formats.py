"""Payload formats and policies: units, SenML (RFC 8428), time policy, unregistered sensors, line protocol."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson
import pytest

from ews.regions import RegionRegistry
from ews.sensors import SensorRegistry
from ingest.lineproto import LineBuilder, read_lines, unregistered_lines
from ingest.mqttclient import puback_blob
from ingest.process import MessageProcessor
from ingest.reasons import Reason, Rejected
from ingest.units import UnitTable

from .conftest import COMM_A1, COMM_B1, STREET_A

NOW = 1_764_300_000_000
BASE = f"ews/440106/{STREET_A}/{COMM_A1}"
T_RG, T_WL, T_PD = f"{BASE}/rain/RG-A1", f"{BASE}/water_level/WL-A1", f"{BASE}/ponding/PD-A1"
GW = f"ews/440106/{STREET_A}/batch/GW-1"
T_SM = f"ews/440106/440106002/{COMM_B1}/smoke/SM-B1"


@pytest.fixture
def proc(mini_sensors: SensorRegistry, mini_regions: RegionRegistry) -> MessageProcessor:
    return MessageProcessor(mini_sensors, mini_regions)


def reasons(out) -> list[Reason]:  # type: ignore[no-untyped-def]
    return [r.reason for r in out.rejections]


def test_unit_conversion_is_exact_powers_of_ten() -> None:
    u = UnitTable()
    assert u.convert(150.0, "mm", "cm") == 15.0  # 150 * 0.1 would give 15.000000000000002
    assert u.convert(12.0, "cm", "m") == 0.12
    assert u.convert(4.2, "m", "cm") == 420.0
    assert u.convert(0.35, "m", "mm") == 350.0
    assert u.convert(3.0, "mm", "mm") == 3.0
    with pytest.raises(Rejected) as info:
        u.convert(1.0, "furlong", "m")
    assert info.value.reason == Reason.UNKNOWN_UNIT
    for unit, kind_unit in (("mm/h", "mm"), ("ppm", "%LEL"), ("Cel", "m")):
        with pytest.raises(Rejected) as info:
            u.convert(1.0, unit, kind_unit)
        assert info.value.reason == Reason.UNIT_MISMATCH


def test_native_units_normalised_to_the_kind(proc: MessageProcessor, mini_sensors: SensorRegistry) -> None:
    msgs = [
        (T_WL, orjson.dumps({"ts": NOW, "value": 420, "unit": "cm"})),  # station reports cm, kind is m
        (T_PD, orjson.dumps({"ts": NOW, "value": 150, "unit": "mm"})),  # ponding kind is cm
        (T_RG, orjson.dumps({"ts": NOW, "value": 2.5, "unit": "mm"})),  # already the kind's unit: fast path
        (T_RG, orjson.dumps({"ts": NOW + 1, "value": 2.5, "unit": "mm/h"})),
        (T_RG, orjson.dumps({"ts": NOW + 2, "value": 2.5, "unit": "inch-ish"})),
        (T_RG, orjson.dumps({"ts": NOW + 3, "value": 2.5, "unit": 5})),
    ]
    out = proc.process(msgs, now_ms=NOW)
    got = {mini_sensors.sensors[i].id: v for i, v in zip(out.sensor.tolist(), out.value.tolist(), strict=True)}
    assert got == {"WL-A1": 4.2, "PD-A1": 15.0, "RG-A1": 2.5}
    assert reasons(out) == [Reason.UNIT_MISMATCH, Reason.UNKNOWN_UNIT, Reason.BAD_VALUE_TYPE]


def test_senml_on_a_sensor_topic_with_base_fields(proc: MessageProcessor) -> None:
    t0 = NOW // 1000 - 600
    pack = [
        {"bn": "urn:dev:id:WL-A1:", "bt": t0, "bu": "cm", "n": "water_level", "v": 412, "t": 0},
        {"n": "water_level", "v": 415, "t": 300},
        {"n": "battery", "v": 87, "t": 300},
        {"v": 4.2, "u": "m", "t": 600},  # name from the base name alone; unit overridden
    ]
    out = proc.process([(T_WL, orjson.dumps(pack))], now_ms=NOW)
    assert out.rejections == []
    assert out.ts_ms.tolist() == [t0 * 1000, (t0 + 300) * 1000, (t0 + 600) * 1000]
    assert out.value.tolist() == [4.12, 4.15, 4.2]
    assert out.battery is not None
    assert [None if math.isnan(b) else b for b in out.battery.tolist()] == [None, 87.0, None]


def test_senml_gateway_pack_relative_times_and_flags(proc: MessageProcessor, mini_sensors: SensorRegistry) -> None:
    pack = [
        {"bn": "RG-A1:", "n": "rain", "u": "mm", "v": 0.5, "t": -120},  # relative: 2 minutes before receipt
        {"n": "", "v": 0.7, "t": -60},
        {"bn": "", "n": "RG-A2", "v": 1.0, "t": -60},
        {"n": "WL-A1", "v": 4.0},  # no time at all: at receipt
    ]
    out = proc.process([(GW, orjson.dumps(pack))], now_ms=NOW)
    assert out.rejections == []
    ids = [mini_sensors.sensors[i].id for i in out.sensor.tolist()]
    assert list(zip(ids, out.ts_ms.tolist(), out.value.tolist(), strict=True)) == [
        ("RG-A1", NOW - 120_000, 0.5), ("RG-A1", NOW - 60_000, 0.7), ("RG-A2", NOW - 60_000, 1.0),
        ("WL-A1", NOW, 4.0),
    ]
    smoke = [{"bn": "urn:dev:id:SM-B1", "bt": NOW / 1000, "vb": True}, {"vb": False, "t": 60}]
    out = proc.process([(T_SM, orjson.dumps(smoke))], now_ms=NOW + 120_000)
    assert out.value.tolist() == [1.0, 0.0] and out.rejections == []


SENML_BAD: list[tuple[str, str, list[object], Reason]] = [
    ("no value", T_RG, [{"n": "RG-A1", "t": 0}], Reason.SENML_NO_VALUE),
    ("string value", T_RG, [{"n": "RG-A1", "vs": "wet"}], Reason.SENML_UNSUPPORTED),
    ("version too new", T_RG, [{"bver": 11, "v": 1.0}], Reason.SENML_UNSUPPORTED),
    ("no name on a gateway", GW, [{"v": 1.0}], Reason.SENML_NO_NAME),
    ("unknown measure", T_RG, [{"n": "RG-A1:temperature", "v": 21.0}], Reason.SENML_BAD_NAME),
    ("another sensor's name", T_RG, [{"n": "RG-A2", "v": 1.0}], Reason.SENML_BAD_NAME),
    ("record not an object", GW, [{"n": "RG-A1", "v": 1.0}, 7], Reason.SENML_BAD_RECORD),
    ("v not a number", T_RG, [{"n": "RG-A1", "v": "1.0"}], Reason.SENML_BAD_RECORD),
    ("health without reading", T_RG, [{"n": "RG-A1:battery", "v": 80}], Reason.SENML_NO_READING),
    ("sensor outside the gateway", GW, [{"n": "GS-B1", "v": 1.0}], Reason.REGION_MISMATCH),
    ("wrong unit", T_RG, [{"n": "RG-A1", "v": 1.0, "u": "Cel"}], Reason.UNIT_MISMATCH),
    ("null value", T_RG, [{"n": "RG-A1", "v": None}], Reason.SENML_NO_VALUE),
    ("time beyond a float", T_RG, [{"bt": 1e308, "t": 1e308, "v": 1.0}], Reason.BAD_TIMESTAMP),
    ("time beyond an int64", T_RG, [{"bt": 1e300, "v": 1.0}], Reason.BAD_TIMESTAMP),
]


@pytest.mark.parametrize(("name", "topic", "pack", "reason"), SENML_BAD, ids=[c[0] for c in SENML_BAD])
def test_senml_rejections(proc: MessageProcessor, name: str, topic: str, pack: list[object], reason: Reason) -> None:
    out = proc.process([(topic, orjson.dumps(pack))], now_ms=NOW)
    assert reasons(out)[-1] == reason, name
    assert all(r.detail.startswith("record ") for r in out.rejections)


def test_senml_null_fields_count_as_absent(proc: MessageProcessor) -> None:
    """RFC 8428 has no null; a gateway writing one for a field it lacks gets the field's
    default, as in the native format, not an error about something else."""
    pack = [{"bn": "RG-A1", "bt": NOW / 1000, "bu": None, "v": 1.0}, {"bn": None, "n": None, "t": 60, "v": 2.0}]
    out = proc.process([(T_RG, orjson.dumps(pack))], now_ms=NOW + 200_000)
    assert out.rejections == []
    assert out.ts_ms.tolist() == [NOW, NOW + 60_000] and out.value.tolist() == [1.0, 2.0]


def test_senml_bad_record_leaves_its_neighbours(proc: MessageProcessor) -> None:
    pack = [{"bn": "RG-A1", "bt": NOW / 1000, "v": 1.0}, {"t": 60}, {"v": 2.0, "t": 120}]
    out = proc.process([(T_RG, orjson.dumps(pack))], now_ms=NOW + 200_000)
    assert out.value.tolist() == [1.0, 2.0]
    assert [(r.index, r.reason) for r in out.rejections] == [(1, Reason.SENML_NO_VALUE)]


def test_time_policy(mini_sensors: SensorRegistry, mini_regions: RegionRegistry) -> None:
    day = 86_400_000
    msgs = [
        (T_RG, orjson.dumps({"ts": NOW - 2 * day, "value": 1.0})),  # beyond a day's lateness
        (T_RG, orjson.dumps({"ts": NOW - 3_600_000, "value": 2.0})),  # an hour late: fine
        (T_RG, orjson.dumps({"ts": NOW + 200_000, "value": 3.0})),  # clock 200 s ahead: tolerated
        (T_RG, orjson.dumps({"ts": NOW + 400_000, "value": 4.0})),  # 400 s ahead: rejected
    ]
    store = MessageProcessor(mini_sensors, mini_regions, allowed_lateness_s=86400, late_policy="store")
    out = store.process(msgs, now_ms=NOW)
    assert out.value.tolist() == [1.0, 2.0, 3.0]
    assert out.evaluate.tolist() == [False, True, True] and out.late == 1
    assert out.for_rules().value.tolist() == [2.0, 3.0]
    assert reasons(out) == [Reason.FUTURE_TIMESTAMP]
    reject = MessageProcessor(mini_sensors, mini_regions, allowed_lateness_s=86400, late_policy="reject")
    out = reject.process(msgs, now_ms=NOW)
    assert out.value.tolist() == [2.0, 3.0]
    assert reasons(out) == [Reason.TOO_OLD, Reason.FUTURE_TIMESTAMP]


def test_a_host_clock_behind_the_fleet_rejects_nothing(caplog: pytest.LogCaptureFixture) -> None:
    """After a power cut this host's clock is 20 minutes behind: every reading looks ahead. The
    sensors agree with each other, so readings are judged against their clock, and one sensor
    ahead of them is still rejected; a few sensors ahead of the host are just those sensors."""
    from ews import metrics
    from ews.config import RegistryConfig

    reg = RegistryConfig.sample().load()
    sensors = [s for s in reg.sensors.sensors if s.kind in ("gas", "rain")][:20]

    def msg(s: Any, ts: int, v: float = 1.0) -> tuple[str, bytes]:
        return (f"ews/{s.district}/{s.street}/{s.community}/{s.kind}/{s.id}", orjson.dumps({"ts": ts, "value": v}))

    behind = 20 * 60_000
    proc = MessageProcessor(reg.sensors, reg.regions)
    with caplog.at_level("ERROR", logger="ingest.hostclock"):
        out = proc.process([msg(s, NOW + behind) for s in sensors] + [msg(sensors[0], NOW + behind + 600_000, 2.0)],
                           now_ms=NOW)
    assert len(out) == 20 and out.ts_ms.tolist() == [NOW + behind] * 20
    assert reasons(out) == [Reason.FUTURE_TIMESTAMP] and "600 s in the future" in out.rejections[0].detail
    assert proc.clock.behind_ms == behind and metrics.HOST_CLOCK_BEHIND._value.get() == behind / 1000
    assert "this host's clock is 1200 s behind the sensors'" in caplog.text
    # SenML times relative to receipt are stamped by the sensors' clock too
    s = sensors[1]
    pack = [{"bn": f"urn:dev:id:{s.id}:", "n": s.kind, "v": 0.5, "t": -60}]
    out = proc.process([(msg(s, 0)[0], orjson.dumps(pack))], now_ms=NOW + 1000)
    assert out.rejections == [] and out.ts_ms.tolist() == [NOW + 1000 + behind - 60_000]
    # NTP mends the clock: judged against the host's clock again
    out = proc.process([msg(s, NOW + behind + 60_000) for s in sensors], now_ms=NOW + behind + 60_000)
    assert len(out) == 20 and proc.clock.behind_ms == 0

    # a drill's times are made up: they say nothing about this host's clock
    drill = MessageProcessor(reg.sensors, reg.regions)
    out = drill.process([msg(s, NOW + behind) for s in sensors], now_ms=NOW, live=False)
    assert len(out) == 0 and reasons(out) == [Reason.FUTURE_TIMESTAMP] * 20 and drill.clock.behind_ms == 0

    few = MessageProcessor(reg.sensors, reg.regions)
    out = few.process([msg(s, NOW + (behind if i < 3 else 0)) for i, s in enumerate(sensors)], now_ms=NOW)
    assert len(out) == 17 and reasons(out) == [Reason.FUTURE_TIMESTAMP] * 3 and few.clock.behind_ms == 0


def test_unregistered_sensor_policy(mini_sensors: SensorRegistry, mini_regions: RegionRegistry) -> None:
    topic = f"{BASE}/rain/RG-NEW"
    msgs = [(topic, orjson.dumps({"ts": NOW, "value": 1.5})), (topic, orjson.dumps({"ts": NOW + 1, "value": 500}))]
    out = MessageProcessor(mini_sensors, mini_regions).process(msgs, now_ms=NOW)
    assert reasons(out) == [Reason.UNKNOWN_SENSOR] * 2 and not out.unregistered
    out = MessageProcessor(mini_sensors, mini_regions, unknown_sensor="store").process(msgs, now_ms=NOW)
    assert [(u.sensor, u.kind, u.community, u.ts_ms, u.value) for u in out.unregistered] == [
        ("RG-NEW", "rain", COMM_A1, NOW, 1.5)]
    assert reasons(out) == [Reason.OUT_OF_RANGE] and len(out) == 0
    # an unknown community still fails: a device warning needs somewhere to go
    out = MessageProcessor(mini_sensors, mini_regions, unknown_sensor="store").process(
        [("ews/440106/440106001/440106001099/rain/RG-NEW", b'{"ts": 1764300000000, "value": 1}')], now_ms=NOW)
    assert reasons(out) == [Reason.UNKNOWN_REGION]


def test_fast_and_general_paths_agree(proc: MessageProcessor) -> None:
    """The same readings give the same columns whether they take the fast path or not."""
    rng = np.random.default_rng(7)
    values = np.round(rng.uniform(0, 50, 200), 3).tolist()
    fast = [(T_RG, orjson.dumps({"ts": NOW - k * 60_000, "value": v})) for k, v in enumerate(values)]
    slow = [(T_RG, orjson.dumps({"ts": NOW - k * 60_000, "value": v, "seq": k})) for k, v in enumerate(values)]
    secs = [(T_RG, orjson.dumps({"ts": (NOW - k * 60_000) // 1000, "value": v})) for k, v in enumerate(values)]
    rfc = [(T_RG, orjson.dumps({"ts": f"{np.datetime64(NOW - k * 60_000, 'ms')}Z", "value": v}))
           for k, v in enumerate(values)]
    results = [proc.process(m, now_ms=NOW) for m in (fast, slow, secs, rfc)]
    for out in results:
        assert out.rejections == []
        assert out.ts_ms.tolist() == results[0].ts_ms.tolist()
        assert out.value.tolist() == values


def test_line_protocol(mini_sensors: SensorRegistry) -> None:
    b = LineBuilder(mini_sensors)
    rg, wl = mini_sensors.index["RG-A1"], mini_sensors.index["WL-A1"]
    tags_rg = f"rain,community={COMM_A1},district=440106,sensor=RG-A1,street={STREET_A}"
    tags_wl = f"water_level,community={COMM_A1},district=440106,sensor=WL-A1,street={STREET_A}"
    lines = b.build(np.array([rg, wl, rg]), np.array([NOW, NOW, NOW + 1]), np.array([0.1, 4.25, 12.0]))
    assert lines.decode().splitlines() == [
        f"{tags_rg} value=0.1 {NOW}", f"{tags_wl} value=4.25 {NOW}", f"{tags_rg} value=12.0 {NOW + 1}"]
    nan = float("nan")
    lines = b.build(np.array([rg, wl]), np.array([NOW, NOW]), np.array([1.5, 4.0]),
                    np.array([nan, 87.0]), np.array([nan, -71.0]))
    assert sorted(lines.decode().splitlines()) == sorted([
        f"{tags_rg} value=1.5 {NOW}", f"{tags_wl} value=4.0,battery=87.0,rssi=-71.0 {NOW}"])
    assert unregistered_lines([("RG-NEW", "rain", COMM_A1, NOW, 1.5)]).decode() == (
        f"unregistered,community={COMM_A1},district=440106,kind=rain,sensor=RG-NEW,street={STREET_A} "
        f"value=1.5 {NOW}\n")


def test_spooled_lines_read_back_as_built(mini_sensors: SensorRegistry) -> None:
    """The rules rebuild from the spool's line protocol: every registered reading comes back
    exactly, health fields or not; unregistered sensors' lines and foreign lines do not."""
    b = LineBuilder(mini_sensors)
    idx = np.array([mini_sensors.index[i] for i in ("RG-A1", "WL-A1", "GS-B1", "RG-A1")])
    ts = np.array([NOW, NOW, NOW + 60_000, NOW + 300_000])
    value = np.array([0.1, 4.25, 1e-7, 123456.789])
    nan = float("nan")
    lines = (b.build(idx, ts, value, np.array([nan, 87.0, nan, nan]), np.array([nan, -71.0, nan, nan]))
             + unregistered_lines([("RG-NEW", "rain", COMM_A1, NOW, 1.5)])
             + b"cpu,host=a usage=3 1\nrain,sensor=RG-A1 value=oops 5\n")
    got = sorted(read_lines(lines))
    want = sorted((mini_sensors.sensors[i].kind, mini_sensors.sensors[i].id, t, v)
                  for i, t, v in zip(idx.tolist(), ts.tolist(), value.tolist(), strict=True))
    assert got == want


def test_kind_names_need_no_escaping() -> None:
    """A kind is a topic level and a measurement: a name InfluxDB would need escaped, or the
    measurement of unregistered sensors, is refused where the kind is declared."""
    from pydantic import ValidationError

    from ews.sensors import KindSpec

    assert KindSpec(name="air_quality.pm25", unit="ug/m3", min=0, max=1000, interval_s=60).name
    for name in ("air quality", "a,b", "x=y", "back\\slash", "unregistered", ""):
        with pytest.raises(ValidationError):
            KindSpec(name=name, unit="u", min=0, max=1, interval_s=60)


def test_puback_blob() -> None:
    assert puback_blob([1, 258, 65535]) == bytes([0x40, 2, 0, 1, 0x40, 2, 1, 2, 0x40, 2, 0xFF, 0xFF])


def test_reorder_buffer_releases_late_readings_with_newer_ones() -> None:
    from ews.models import ReadingBatch
    from ingest.reorder import ReorderBuffer

    b = ReorderBuffer(hold_s=1.0)
    b.add(ReadingBatch.of([0, 0], [100, 300], [1.0, 3.0]), now=0.0)
    b.add(ReadingBatch.of([0, 0, 1], [200, 400, 50], [2.0, 4.0, 5.0]), now=0.5)  # 200 is late for sensor 0
    assert b.release(0.9) is None and len(b) == 5 and b.next_due() == 1.0
    first = b.release(1.0)
    assert first is not None
    # sensor 0's 200 goes with 100 and 300 (it would be stale after them); 400 and sensor 1 wait
    assert sorted(zip(first.sensor.tolist(), first.ts_ms.tolist(), strict=True)) == [(0, 100), (0, 200), (0, 300)]
    rest = b.release(1.5)
    assert rest is not None and sorted(rest.ts_ms.tolist()) == [50, 400] and len(b) == 0


def test_topic_cache_is_keyed_as_paho_delivers(proc: MessageProcessor) -> None:
    """paho hands over raw topic bytes; the second message of a topic must take the fast path."""
    topic = T_RG.encode()
    proc.process([(topic, b'{"ts": 1764300000000, "value": 1.0}')], now_ms=NOW)
    assert proc._topic_cache.get(topic) == proc.sensors.index["RG-A1"]
    out = proc.process([(topic, b'{"ts": 1764300060000, "value": 2.0}')], now_ms=NOW)
    assert out.value.tolist() == [2.0]


@pytest.mark.parametrize("ident", ["RG-A1\n", "GW-A\n"])
def test_identifiers_ending_in_a_newline_are_refused(ident: str) -> None:
    """`$` in a regular expression also matches before a final newline; an id that kept one
    would split its line of line protocol in two (an unregistered sensor's, under the `store`
    policy). Mosquitto disconnects a publisher that sends such a topic; a broker need not."""
    from pydantic import ValidationError

    from ews.api.deps import region_code
    from ews.regions import tier_of
    from ews.sensors import Sensor
    from ingest.topics import parse_topic

    with pytest.raises(Rejected) as info:
        parse_topic(f"ews/440106/{STREET_A}/{COMM_A1}/rain/{ident}")
    assert info.value.reason == Reason.BAD_TOPIC
    with pytest.raises(Rejected):
        parse_topic(f"ews/440106/{STREET_A}/batch/{ident}")
    with pytest.raises(ValidationError, match="sensor id must be"):
        Sensor(id=ident, kind="rain", community=COMM_A1, lat=23.1, lon=113.3)
    assert tier_of("440106\n") is None and tier_of("440106") == "district"
    with pytest.raises(Exception, match="not a 6, 9 or 12 digit region code"):
        region_code("440106\n")
