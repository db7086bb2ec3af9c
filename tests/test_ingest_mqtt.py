"""Ingest on the real servers: bad input rejected with its reason, good readings around it stored."""

from __future__ import annotations

import threading
import time

import orjson
import paho.mqtt.client as mqtt

from ews.config import InfluxConfig, MqttConfig
from ews.models import ReadingBatch
from ews.regions import RegionRegistry
from ews.sensors import SensorRegistry
from ews.servers import LocalServers
from ingest.collector import Collector
from ingest.influx_v1 import InfluxV1
from ingest.process import MessageProcessor

from .conftest import COMM_A1, COMM_B1, STREET_A


def publisher(port: int, client_id: str) -> mqtt.Client:
    c = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def wait_for(pred, timeout: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_bad_input_is_rejected_and_good_readings_stored(
    servers: LocalServers, influx_db: str, mini_sensors: SensorRegistry, mini_regions: RegionRegistry
) -> None:
    received: list[ReadingBatch] = []
    mcfg = MqttConfig(port=servers.mqtt.port, client_id="test-ingest-bad", subscriptions=["ews/#"])
    icfg = InfluxConfig(url=servers.influx_url, database=influx_db, flush_interval_s=0.02)
    col = Collector(mcfg, icfg, MessageProcessor(mini_sensors, mini_regions), on_readings=received.append)

    dead: list[tuple[str, dict]] = []  # type: ignore[type-arg]
    lock = threading.Lock()
    watcher = publisher(servers.mqtt.port, "test-ingest-dl-watch")

    def on_dead(_c, _u, msg):  # type: ignore[no-untyped-def]
        with lock:
            dead.append((msg.topic, orjson.loads(msg.payload)))

    watcher.on_message = on_dead
    watcher.subscribe("ews-out/rejected/#", qos=1)
    time.sleep(0.2)
    col.start()
    pub = publisher(servers.mqtt.port, "test-ingest-pub")
    now = int(time.time() * 1000)
    base = f"ews/440106/{STREET_A}/{COMM_A1}"
    good = [(f"{base}/rain/RG-A1", {"ts": now - 600_000 + i * 60_000, "value": 0.5 * i}) for i in range(5)]
    bad = [
        (f"{base}/rain/RG-A1", b'{"ts": 17'),  # truncated JSON
        (f"{base}/rain/RG-A1", b'{"ts": 1764300000000, "value": "high"}'),  # wrong type
        (f"{base}/rain/RG-NOPE", b'{"ts": 1764300000000, "value": 1}'),  # unknown sensor
        (f"{base}/rain/RG-A1", b'{"ts": 1764300000000, "value": 999}'),  # out of range
        ("ews/440106/rain/RG-A1", b'{"ts": 1764300000000, "value": 1}'),  # wrong topic
        (f"ews/440106/440106002/{COMM_B1}/rain/RG-A1", b'{"ts": 1764300000000, "value": 1}'),  # wrong region
    ]
    # interleave: good, bad, good, bad ...
    for i in range(max(len(good), len(bad))):
        if i < len(good):
            pub.publish(good[i][0], orjson.dumps(good[i][1]), qos=1).wait_for_publish(5)
        if i < len(bad):
            pub.publish(bad[i][0], bad[i][1], qos=1).wait_for_publish(5)
    batch = {"readings": [{"sensor": "WL-A1", "ts": now, "value": 4.1}, {"sensor": "WL-A1", "ts": now, "value": None}]}
    pub.publish(f"ews/440106/{STREET_A}/batch/GW-A", orjson.dumps(batch), qos=1).wait_for_publish(5)

    db = InfluxV1(servers.influx_url, influx_db)
    try:
        assert wait_for(lambda: col.stats["messages"] >= len(good) + len(bad) + 1)
        assert wait_for(lambda: len(dead) >= len(bad) + 1)
        assert db.count("rain") == len(good)
        assert db.count("water_level") == 1
        stored = db.query('SELECT "value" FROM "rain" WHERE "sensor" = \'RG-A1\'')[0]["values"]
        assert [(row[0], row[1]) for row in stored] == [(p["ts"], p["value"]) for _, p in good]
        reasons = sorted(d["reason"] for _, d in dead)
        assert reasons == sorted([
            "bad_json", "bad_value_type", "unknown_sensor", "out_of_range", "bad_topic", "region_mismatch",
            "missing_field",
        ])
        for topic, d in dead:
            assert topic.startswith(f"ews-out/rejected/{d['reason']}/")
            assert d["detail"] and "payload_excerpt" in d
        assert sum(len(b) for b in received) == len(good) + 1
        assert col._worker is not None and col._worker.is_alive()
    finally:
        pub.loop_stop()
        watcher.loop_stop()
        col.stop()
        db.close()
