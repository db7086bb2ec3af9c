"""Two pipeline shards, each taking one region subtree from the same broker, split a stream."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt

from ews.config import ChannelConfig, Config, InfluxConfig, MqttConfig, NotifierConfig, RegistryConfig
from ews.models import ReadingBatch
from ews.pipeline import Pipeline
from ews.servers import LocalServers

from .influxpoints import stored
from .waiting import wait_for


def _shard(servers: LocalServers, db: str, name: str, streets: list[str], tmp: Path) -> Config:
    """A shard's configuration: its own client id (persistent session), state and topic filters."""
    return Config(
        mqtt=MqttConfig(port=servers.mqtt.port, client_id=f"shard-{name}",
                        subscriptions=[f"ews/440106/{s}/#" for s in streets]),
        influxdb=InfluxConfig(url=servers.influx_url, database=db, flush_interval_s=0.02),
        registries=RegistryConfig.sample(),
        state_dir=tmp / name,
        notifiers=NotifierConfig(channels=[ChannelConfig(name="console", type="console")]),
    )


def test_two_shards_split_the_stream(servers: LocalServers, influx_db: str, tmp_path: Path) -> None:
    # shard A: 沙河街道 .. 车陂街道 by topic filter; shard B: every other street
    a_streets = ["440106001", "440106002", "440106003", "440106004"]
    a = Pipeline(_shard(servers, influx_db, "a", a_streets, tmp_path))
    others = sorted({s.street for s in a.sensors.sensors} - set(a_streets))
    b = Pipeline(_shard(servers, influx_db, "b", others, tmp_path))
    seen: dict[str, list[tuple[str, int]]] = {"a": [], "b": []}

    def recorder(name: str, p: Pipeline) -> Callable[[ReadingBatch], None]:
        inner = p.on_readings

        def rec(batch: ReadingBatch) -> None:
            seen[name].extend((p.sensors.sensors[i].id, int(t)) for i, t in zip(batch.sensor, batch.ts_ms, strict=True))
            inner(batch)
        return rec

    a.collector.on_readings = recorder("a", a)
    b.collector.on_readings = recorder("b", b)
    a.start()
    b.start()
    pub = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="shard-pub")
    pub.connect("127.0.0.1", servers.mqtt.port)
    pub.loop_start()
    try:
        now = (int(time.time() * 1000) // 60_000) * 60_000
        sent = []
        for k in range(3):
            for s in a.sensors.sensors:
                ts = now - (3 - k) * 60_000
                topic = f"ews/{s.district}/{s.street}/{s.community}/{s.kind}/{s.id}"
                value = 0.0 if s.kind in ("rain", "smoke", "gas", "ponding") else 1.0
                pub.publish(topic, orjson.dumps({"ts": ts, "value": value}), qos=1)
                sent.append((s.id, ts))
        wait_for(lambda: len(seen["a"]) + len(seen["b"]) >= len(sent))
        time.sleep(0.3)
        assert sorted(seen["a"] + seen["b"]) == sorted(sent)  # none missed, none twice
        street = {s.id: s.street for s in a.sensors.sensors}
        assert seen["a"] and all(street[sid] in a_streets for sid, _ in seen["a"])
        assert seen["b"] and all(street[sid] not in a_streets for sid, _ in seen["b"])
        # the rules get a batch once it is durable: in InfluxDB, or in the spool until its replay
        wait_for(lambda: len(stored(servers.influx_url, influx_db, a.sensors.kinds)) >= len(sent))
        points = stored(servers.influx_url, influx_db, a.sensors.kinds)
        missing = sorted(set(sent) - {(sid, ts) for sid, ts, _ in points})
        assert not missing, (f"{len(missing)} readings the rules saw are not in InfluxDB, e.g. {missing[:10]}; "
                             f"shard a {a.collector.stats}, shard b {b.collector.stats}")
        assert len(points) == len(sent)  # none twice
    finally:
        pub.loop_stop()
        a.stop()
        b.stop()
