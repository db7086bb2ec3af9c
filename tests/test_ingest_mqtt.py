"""Ingest on the real servers: every kind of bad input rejected with its own reason over MQTT,
the good readings around it stored, the collector alive throughout; unregistered sensors under
the `store` policy."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY

from ews.config import (
    ChannelConfig,
    Config,
    InfluxConfig,
    IngestConfig,
    MqttConfig,
    NotifierConfig,
    RegistryConfig,
)
from ews.models import ReadingBatch
from ews.pipeline import Pipeline
from ews.regions import RegionRegistry
from ews.sensors import SensorRegistry
from ews.servers import LocalServers
from ingest.collector import Collector
from ingest.influx_v1 import InfluxV1
from ingest.process import MessageProcessor

from .conftest import COMM_A1, COMM_B1, STREET_A
from .mqttpeers import dead_letters, publisher
from .waiting import wait_for

NOW = int(time.time() * 1000)
A1 = f"ews/440106/{STREET_A}/{COMM_A1}"
RG = f"{A1}/rain/RG-A1"
GW = f"ews/440106/{STREET_A}/batch/GW-A"


def j(obj: Any) -> bytes:
    return orjson.dumps(obj)


# (name, topic, payload, reasons expected on the dead-letter topic); each is its own malformed case
BAD: list[tuple[str, str, bytes, list[str]]] = [
    ("truncated json", RG, b'{"ts": 17643', ["bad_json"]),
    ("empty payload", RG, b"", ["empty_payload"]),
    ("non-utf-8 bytes", RG, b'{"ts": 1764300000000, "value": "\xff\xfe\xfd"}', ["not_utf8"]),
    ("number as a string", RG, j({"ts": NOW, "value": "12.5"}), ["bad_value_type"]),
    ("boolean value", RG, j({"ts": NOW, "value": True}), ["bad_value_type"]),
    ("NaN literal", RG, b'{"ts": 1764300000000, "value": NaN}', ["value_not_finite"]),
    ("Infinity literal", RG, b'{"ts": 1764300000000, "value": -Infinity}', ["value_not_finite"]),
    ("NaN as a string", RG, j({"ts": NOW, "value": "NaN"}), ["bad_value_type"]),
    ("null value", RG, j({"ts": NOW, "value": None}), ["missing_field"]),
    ("no timestamp", RG, j({"value": 1.0}), ["missing_field"]),
    ("array, not an object", RG, b"[1, 2, 3]", ["bad_shape"]),
    ("1 MB payload", RG, b'{"ts": 1764300000000, "value": 1, "pad": "' + b"x" * 1_000_000 + b'"}',
     ["payload_too_large"]),
    ("timestamp garbage", RG, j({"ts": "soon", "value": 1.0}), ["bad_timestamp"]),
    ("timestamp without offset", RG, j({"ts": "2025-11-28T03:20:00", "value": 1.0}), ["bad_timestamp"]),
    ("far future", RG, j({"ts": NOW + 86_400_000, "value": 1.0}), ["future_timestamp"]),
    ("too old", RG, j({"ts": NOW - 3 * 86_400_000, "value": 1.0}), ["too_old"]),
    ("out of range", RG, j({"ts": NOW, "value": -3}), ["out_of_range"]),
    ("unknown kind", f"{A1}/lava/RG-A1", j({"ts": NOW, "value": 1}), ["unknown_kind"]),
    ("unknown sensor", f"{A1}/rain/RG-NOPE", j({"ts": NOW, "value": 1}), ["unknown_sensor"]),
    ("kind mismatch", f"{A1}/gas/RG-A1", j({"ts": NOW, "value": 1}), ["kind_mismatch"]),
    ("registered under another region", f"ews/440106/440106002/{COMM_B1}/rain/RG-A1", j({"ts": NOW, "value": 1}),
     ["region_mismatch"]),
    ("malformed region code", f"ews/44010/{STREET_A}/{COMM_A1}/rain/RG-A1", j({"ts": NOW, "value": 1}),
     ["bad_region_code"]),
    ("street outside its district", "ews/440106/440107001/440107001001/rain/RG-A1", j({"ts": NOW, "value": 1}),
     ["bad_region_code"]),
    ("unknown community", f"ews/440106/{STREET_A}/440106001099/rain/RG-NEW", j({"ts": NOW, "value": 1}),
     ["unknown_region"]),
    ("topic too shallow", "ews/440106/rain/RG-A1", j({"ts": NOW, "value": 1}), ["bad_topic"]),
    ("topic too deep", f"{A1}/rain/RG-A1/extra/more", j({"ts": NOW, "value": 1}), ["bad_topic"]),
    ("unknown unit", RG, j({"ts": NOW, "value": 1, "unit": "bucket-tips"}), ["unknown_unit"]),
    ("unit of another quantity", RG, j({"ts": NOW, "value": 1, "unit": "mm/h"}), ["unit_mismatch"]),
    ("SenML without value", RG, j([{"n": "RG-A1", "t": 0}]), ["senml_no_value"]),
    ("SenML without name on a gateway", GW, j([{"v": 1.0}]), ["senml_no_name"]),
    ("SenML with an unknown measure", RG, j([{"n": "RG-A1:humidity", "v": 50}]), ["senml_bad_name"]),
    ("SenML string value", RG, j([{"n": "RG-A1", "vs": "wet"}]), ["senml_unsupported"]),
    ("SenML health without reading", RG, j([{"n": "RG-A1:battery", "v": 80}]), ["senml_no_reading"]),
    ("empty batch", GW, j({"readings": []}), ["bad_shape"]),
    ("status not an object", f"{RG}/status", b'"online"', ["bad_shape"]),
    ("batch mixing good and bad", GW, j({"readings": [
        {"sensor": "WL-A1", "ts": NOW - 1000, "value": 4.1},
        {"sensor": "WL-A1", "ts": NOW - 2000, "value": "high"},
        {"sensor": "RG-B1", "ts": NOW - 3000, "value": 2.0},  # outside the gateway's street
        {"sensor": "WL-A1", "ts": NOW - 4000, "value": 4.2},
    ]}), ["bad_value_type", "region_mismatch"]),
]
GOOD_IN_BATCH = [(NOW - 4000, 4.2), (NOW - 1000, 4.1)]


def test_bad_input_suite_over_mqtt(
    servers: LocalServers, influx_db: str, mini_sensors: SensorRegistry, mini_regions: RegionRegistry, tmp_path: Path,
) -> None:
    assert len(BAD) >= 25
    received: list[ReadingBatch] = []
    col = Collector(
        MqttConfig(port=servers.mqtt.port, client_id="test-ingest-bad", drill_root=None),
        InfluxConfig(url=servers.influx_url, database=influx_db, flush_interval_s=0.02),
        MessageProcessor(mini_sensors, mini_regions, allowed_lateness_s=86400, late_policy="reject"),
        on_readings=received.append, ingest_cfg=IngestConfig(), spool_dir=tmp_path / "spool",
    )
    watcher, dead = dead_letters(servers.mqtt.port, "test-ingest-dl-watch")
    time.sleep(0.2)
    before = {r: REGISTRY.get_sample_value("ews_ingest_rejected_total", {"reason": r}) or 0
              for case in BAD for r in case[3]}
    col.start()
    pub = publisher(servers.mqtt.port, "test-ingest-pub")
    good = [(NOW - 600_000 + i * 10_000, round(0.1 * i, 1)) for i in range(len(BAD) + 1)]
    try:
        # good, bad, good, bad, ... good: each bad message sits between two readings that must be kept
        pub.publish(RG, j({"ts": good[0][0], "value": good[0][1]}), qos=0).wait_for_publish(5)  # QoS 0: no ack
        for i, (_, topic, payload, _) in enumerate(BAD):
            pub.publish(topic, payload, qos=1).wait_for_publish(5)
            ts, v = good[i + 1]
            pub.publish(RG, j({"ts": ts, "value": v}), qos=1).wait_for_publish(5)
        expected = sorted(r for case in BAD for r in case[3])
        assert wait_for(lambda: col.stats["messages"] >= 2 * len(BAD) + 1 and len(dead) >= len(expected))
        assert sorted(d["reason"] for d in dead) == expected
        for r in set(expected):  # the metric counts each rejection by its reason
            after = REGISTRY.get_sample_value("ews_ingest_rejected_total", {"reason": r}) or 0
            assert after - before[r] == expected.count(r), r
        for d in dead:
            assert d["dl_topic"].startswith(f"ews-out/rejected/{d['reason']}/")
            assert d["detail"] and "payload_excerpt" in d
        db = InfluxV1(servers.influx_url, influx_db)
        stored = db.query('SELECT "value" FROM "rain" WHERE "sensor" = \'RG-A1\'')[0]["values"]
        assert [(row[0], row[1]) for row in stored] == good
        stored_wl = db.query('SELECT "value" FROM "water_level"')[0]["values"]
        assert [(row[0], row[1]) for row in stored_wl] == GOOD_IN_BATCH
        assert db.count("rain") == len(good)  # nothing of the bad ones slipped in
        db.close()
        assert sum(len(b) for b in received) == len(good) + len(GOOD_IN_BATCH)
        assert all(t.is_alive() for t in col._threads)
        assert col.pending == 0
    finally:
        pub.loop_stop()
        watcher.loop_stop()
        col.stop()


def test_a_message_that_trips_a_bug_is_rejected_alone(
    servers: LocalServers, influx_db: str, mini_sensors: SensorRegistry, mini_regions: RegionRegistry,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Handling one message raises (a bug, injected here): it is dead-lettered as
    processing_failed and acknowledged; the messages batched with it are stored and evaluated,
    not held unacknowledged with it."""
    import ingest.process

    real = ingest.process.simple_reading

    def buggy(doc: Any, unit: str) -> tuple[int, float] | None:
        if doc.get("value") == 13.13:
            raise ZeroDivisionError("a bug")
        return real(doc, unit)

    monkeypatch.setattr(ingest.process, "simple_reading", buggy)
    received: list[ReadingBatch] = []
    col = Collector(
        MqttConfig(port=servers.mqtt.port, client_id="test-ingest-poison", drill_root=None),
        InfluxConfig(url=servers.influx_url, database=influx_db, flush_interval_s=0.3),
        MessageProcessor(mini_sensors, mini_regions), on_readings=received.append, ingest_cfg=IngestConfig(),
        spool_dir=tmp_path / "spool",
    )
    watcher, dead = dead_letters(servers.mqtt.port, "test-ingest-poison-dl")
    errors = REGISTRY.get_sample_value("ews_pipeline_errors_total", {"stage": "ingest"}) or 0
    col.start()
    pub = publisher(servers.mqtt.port, "test-ingest-poison-pub")
    good = [(NOW - 600_000 + i * 10_000, float(i)) for i in range(30)]
    try:
        for k, (ts, v) in enumerate(good):
            if k == 15:
                pub.publish(RG, j({"ts": NOW - 1000, "value": 13.13}), qos=1)
            pub.publish(RG, j({"ts": ts, "value": v}), qos=1)
        assert wait_for(lambda: col.stats["messages"] >= 31 and len(dead) >= 1)
        assert [d["reason"] for d in dead] == ["processing_failed"] and "a bug" in dead[0]["detail"]
        db = InfluxV1(servers.influx_url, influx_db)
        stored = db.query('SELECT "value" FROM "rain"')[0]["values"]
        db.close()
        assert [(row[0], row[1]) for row in stored] == good
        assert sum(len(b) for b in received) == len(good)
        assert (REGISTRY.get_sample_value("ews_pipeline_errors_total", {"stage": "ingest"}) or 0) > errors
        time.sleep(0.5)
        assert col.stats["messages"] == 31 and len(dead) == 1  # acknowledged: nothing came again
        assert all(t.is_alive() for t in col._threads) and col.pending == 0
    finally:
        pub.loop_stop()
        watcher.loop_stop()
        col.stop()


def test_unregistered_sensor_is_stored_and_raises_a_device_warning(
    servers: LocalServers, influx_db: str, tmp_path: Path,
) -> None:
    sensors = RegistryConfig.sample().load().sensors
    host = sensors.get("RG-0001")
    cfg = Config(
        mqtt=MqttConfig(port=servers.mqtt.port, client_id="test-unregistered"),
        influxdb=InfluxConfig(url=servers.influx_url, database=influx_db, flush_interval_s=0.02),
        ingest=IngestConfig(unknown_sensor="store"),
        registries=RegistryConfig.sample(),
        state_dir=tmp_path / "state",
        notifiers=NotifierConfig(channels=[ChannelConfig(name="console", type="console")]),
    )
    p = Pipeline(cfg)
    p.start()
    pub = publisher(servers.mqtt.port, "test-unregistered-pub")
    try:
        topic = f"ews/{host.district}/{host.street}/{host.community}/rain/RG-9999"
        for k in range(3):
            pub.publish(topic, j({"ts": NOW - 60_000 * (3 - k), "value": 0.5 * k}), qos=1).wait_for_publish(5)
        assert wait_for(lambda: p.collector.stats["unregistered"] >= 3 and p.idle())
        db = InfluxV1(servers.influx_url, influx_db)
        rows = db.query('SELECT "value", "kind", "community" FROM "unregistered" WHERE "sensor" = \'RG-9999\'')
        assert [tuple(r) for r in rows[0]["values"]] == [
            (NOW - 60_000 * (3 - k), 0.5 * k, "rain", host.community) for k in range(3)]
        assert db.count("rain") == 0  # kept apart from the registered series
        db.close()
        device = [w for w in p.warnings.open_warnings() if w["rule"] == "unregistered_sensor"]
        assert len(device) == 1
        w = device[0]
        assert (w["kind"], w["subject"], w["community"], w["level"]) == ("device", "RG-9999", host.community, 1)
    finally:
        pub.loop_stop()
        p.stop()
