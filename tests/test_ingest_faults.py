"""Fault tests on real servers (slow: about a minute together; deselect with -m 'not slow').

While readings flow: InfluxDB is stopped for 30 s, or frozen (SIGSTOP) under a fast stream;
Mosquitto is restarted; the pipeline process is killed with SIGKILL and started again.
Afterwards every reading sent is in InfluxDB, counted back point by point, and none is there
twice (the stored set equals the sent set exactly).
Each test runs on its own Mosquitto and InfluxDB so the faults touch nothing else.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest
import yaml

from ews.config import InfluxConfig, IngestConfig, MqttConfig, RegistryConfig, sample_dir
from ews.regions import RegionRegistry
from ews.sensors import SensorRegistry
from ews.servers import LocalServers
from ingest.collector import Collector
from ingest.process import MessageProcessor

from .influxpoints import Point, stored
from .pipelineproc import PipelineRun
from .waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.integration]


class Stream:
    """Publishes readings of the given sensors at `rate` per second, QoS 1, from its own thread.

    Its persistent session and paho's own queue carry messages over a broker restart; `sent`
    holds every reading the broker acknowledged."""

    def __init__(self, port: int, sensors: SensorRegistry, ids: list[str], rate: float, client_id: str):
        self.sensors, self.ids, self.rate = sensors, ids, rate
        self.client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv311, clean_session=False)
        self.client.max_queued_messages_set(0)
        self.client.max_inflight_messages_set(100)
        self.client.reconnect_delay_set(0.2, 1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.infos: list[tuple[Point, mqtt.MQTTMessageInfo]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.t0 = (int(time.time()) - 3600) * 1000

    def start(self) -> Stream:
        self._thread.start()
        return self

    def _run(self) -> None:
        k = 0
        start = time.monotonic()
        while not self._stop.is_set():
            s = self.sensors.get(self.ids[k % len(self.ids)])
            p: Point = (s.id, self.t0 + k * 100, round((k % 7) * 0.1, 1))
            topic = f"ews/{s.district}/{s.street}/{s.community}/{s.kind}/{s.id}"
            while True:
                info = self.client.publish(topic, orjson.dumps({"ts": p[1], "value": p[2]}), qos=1)
                if info.rc == mqtt.MQTT_ERR_SUCCESS:
                    break
                # broker away: paho may still send the refused copy later; a second one is harmless
                wait_for(self.client.is_connected, 30)
            self.infos.append((p, info))
            k += 1
            delay = start + k / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def finish(self, timeout: float = 30.0) -> set[Point]:
        self._stop.set()
        self._thread.join()
        assert wait_for(lambda: all(i.is_published() for _, i in self.infos), timeout), "broker never took some"
        self.client.disconnect()
        self.client.loop_stop()
        return {p for p, _ in self.infos}


@pytest.fixture
def mini(mini_sensors: SensorRegistry, mini_regions: RegionRegistry) -> MessageProcessor:
    return MessageProcessor(mini_sensors, mini_regions)


def collector(s: LocalServers, proc: MessageProcessor, tmp: Path, name: str,
              ingest_cfg: IngestConfig | None = None) -> Collector:
    return Collector(
        MqttConfig(port=s.mqtt.port, client_id=f"fault-{name}", drill_root=None),
        InfluxConfig(url=s.influx_url, database="faults", flush_interval_s=0.05, write_deadline_s=2.0),
        proc, ingest_cfg=ingest_cfg or IngestConfig(), spool_dir=tmp / "spool",
    )


def assert_exactly(sent: set[Point], got: list[Point]) -> None:
    assert len(got) == len(set(got)), "a reading is stored twice as a distinct point"
    missing, extra = sent - set(got), set(got) - sent
    assert not missing and not extra, f"{len(missing)} missing, {len(extra)} unexpected"


def test_influxdb_stopped_for_30_s(own_servers: LocalServers, mini: MessageProcessor, tmp_path: Path) -> None:
    col = collector(own_servers, mini, tmp_path, "influx")
    col.start()
    stream = Stream(own_servers.mqtt.port, mini.sensors, ["RG-A1", "RG-A2", "RG-B1"], 100, "fault-pub-1").start()
    try:
        time.sleep(2)
        own_servers.influx.stop()
        time.sleep(30)
        assert col.stats["spooled"] > 0 and col.sinks[False].spool.readings > 0
        own_servers.influx.start()
        time.sleep(2)
        sent = stream.finish()
        assert wait_for(lambda: len(stored(own_servers.influx_url, "faults")) >= len(sent)
                        and col.pending == 0 and not len(col.sinks[False].spool), 60)
        assert_exactly(sent, stored(own_servers.influx_url, "faults"))
        assert len(sent) > 3000
    finally:
        col.stop()


def test_mosquitto_restarted(own_servers: LocalServers, mini: MessageProcessor, tmp_path: Path) -> None:
    col = collector(own_servers, mini, tmp_path, "mqtt")
    col.start()
    stream = Stream(own_servers.mqtt.port, mini.sensors, ["RG-A1", "RG-A2", "RG-B1"], 300, "fault-pub-2").start()
    try:
        time.sleep(3)
        generation = col._generation
        own_servers.mqtt.restart()
        assert wait_for(lambda: col._generation > generation, 20), "the collector did not reconnect"
        time.sleep(3)
        sent = stream.finish()
        assert wait_for(lambda: len(stored(own_servers.influx_url, "faults")) >= len(sent) and col.pending == 0, 30)
        assert_exactly(sent, stored(own_servers.influx_url, "faults"))
    finally:
        col.stop()


def test_a_broker_that_lost_our_session_is_reported(own_servers: LocalServers, mini: MessageProcessor,
                                                    tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A broker restarted without its saved state (persistence off, its disk wiped) has dropped
    our session and what it held for us: nothing the pipeline can recover, but it must say so,
    since the guarantee of nothing lost rests on that broker setting. A broker that kept the
    session, across its own restart or ours, is not reported."""
    from ews import metrics

    lost = metrics.SESSIONS_LOST._value.get
    before = lost()

    def wipe_broker() -> None:
        own_servers.mqtt.stop()
        for saved in own_servers.mqtt.data_dir.glob("*.db"):
            saved.unlink()
        own_servers.mqtt.start()

    def one_run(then: Callable[[Collector], None] = lambda col: None) -> None:
        col = collector(own_servers, mini, tmp_path, "session")
        col.start()
        try:
            assert wait_for(lambda: col.subscribed, 20)
            then(col)
        finally:
            col.stop()

    def broker_restarts(col: Collector) -> None:
        for restart, counted in ((own_servers.mqtt.restart, 0), (wipe_broker, 1)):  # kept, then lost
            generation = col._generation
            with caplog.at_level("ERROR", logger="ingest.collector"):
                restart()
                assert wait_for(lambda g=generation: col._generation > g and col.subscribed, 20)
            assert lost() == before + counted

    one_run(broker_restarts)
    assert "had not kept this pipeline's session (fault-session)" in caplog.text
    one_run()  # the next run of the pipeline: the broker kept the session made just now
    assert lost() == before + 1
    wipe_broker()
    one_run()  # a run that finds its session gone
    assert lost() == before + 2


def test_qos0_readings_wait_for_a_pipeline_that_is_away(own_servers: LocalServers, mini: MessageProcessor,
                                                       tmp_path: Path) -> None:
    """Many gateways publish at QoS 0. A broker keeps QoS 1 messages for a persistent session
    that is away, but drops QoS 0 ones unless told otherwise (Mosquitto's
    queue_qos0_messages, EMQX's mqueue_store_qos0): a restart of the pipeline would lose every
    QoS 0 reading sent meanwhile. The shipped configuration keeps them."""
    col = collector(own_servers, mini, tmp_path, "qos0")
    col.start()
    assert wait_for(lambda: col.subscribed, 20)
    col.stop()  # the session stays with the broker
    pub = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="qos0-gateway")
    pub.connect("127.0.0.1", own_servers.mqtt.port)
    pub.loop_start()
    t0 = int(time.time() * 1000) - 60_000
    sent = [("RG-A1", t0 + k * 100, float(k % 7)) for k in range(50)]
    try:
        for sensor, t, v in sent:
            pub.publish(f"ews/440106/440106001/440106001001/rain/{sensor}", orjson.dumps({"ts": t, "value": v}),
                        qos=0).wait_for_publish(5)
    finally:
        pub.disconnect()
        pub.loop_stop()
    col = collector(own_servers, mini, tmp_path, "qos0")
    col.start()
    try:
        assert wait_for(lambda: len(stored(own_servers.influx_url, "faults")) >= len(sent), 20), \
            f"{len(stored(own_servers.influx_url, 'faults'))} of {len(sent)} QoS 0 readings reached InfluxDB"
        assert_exactly(set(sent), stored(own_servers.influx_url, "faults"))
    finally:
        col.stop()


def test_a_hung_influxdb_holds_the_broker_back_not_memory(own_servers: LocalServers, mini: MessageProcessor,
                                                          tmp_path: Path) -> None:
    """InfluxDB frozen (SIGSTOP: a stalled disk or a long pause, connections accepted and never
    answered) while a fast stream arrives, with the broker's in-flight window far larger than
    the received-messages bound: the MQTT thread stops reading once `queue_max_bytes` of
    payload wait, so TCP holds the broker back, instead of the queue growing without bound.
    Nothing is lost: when InfluxDB thaws, every reading is stored once."""
    from ews import metrics

    bound = 64 * 1024
    waited = metrics.BACKPRESSURE_SECONDS._value.get
    before = waited()
    col = collector(own_servers, mini, tmp_path, "hung", IngestConfig(queue_max_bytes=bound))
    col.start()
    influx = own_servers.influx.proc
    assert influx is not None
    peak = [0]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            peak[0] = max(peak[0], col._received_bytes - col._taken_bytes)
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        assert wait_for(lambda: col.subscribed, 20)
        os.kill(influx.pid, signal.SIGSTOP)
        stream = Stream(own_servers.mqtt.port, mini.sensors, ["RG-A1", "RG-A2", "RG-B1"], 3000, "fault-pub-hung")
        stream.start()
        time.sleep(4)
        os.kill(influx.pid, signal.SIGCONT)
        sent = stream.finish()
        assert wait_for(lambda: len(stored(own_servers.influx_url, "faults")) >= len(sent)
                        and col.pending == 0 and not len(col.sinks[False].spool), 60)
        assert_exactly(sent, stored(own_servers.influx_url, "faults"))
        assert len(sent) * 30 > 2 * bound  # the stream was larger than the bound twice over
    finally:
        os.kill(influx.pid, signal.SIGCONT)
        sampling.set()
        col.stop()
    assert waited() - before > 0.5
    assert bound < peak[0] <= bound + 100  # reached, and passed by one message at most


def test_pipeline_killed_and_restarted(own_servers: LocalServers, tmp_path: Path) -> None:
    cfg = {
        "mqtt": {"port": own_servers.mqtt.port, "client_id": "fault-pipeline", "subscriptions": ["ews/440106/#"]},
        "influxdb": {"url": own_servers.influx_url, "database": "faults"},
        "registries": {"regions": str(sample_dir() / "regions.yaml"), "sensors": str(sample_dir() / "sensors.yaml")},
        "state_dir": str(tmp_path / "state"),
        "rules_profile": "guangdong",
    }
    cfg_file = tmp_path / "pipeline.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    log_file = tmp_path / "pipeline.log"

    sensors = RegistryConfig.sample().load().sensors
    rain = [s.id for s in sensors.of_kind("rain")]
    run = PipelineRun(cfg_file, log_file)
    stream = Stream(own_servers.mqtt.port, sensors, rain, 400, "fault-pub-3").start()
    try:
        time.sleep(3)
        assert stored(own_servers.influx_url, "faults"), "nothing stored before the kill"
        run.kill()
        time.sleep(1)  # the broker queues for the dead session meanwhile
        run = PipelineRun(cfg_file, log_file)
        time.sleep(2)
        sent = stream.finish()
        assert wait_for(lambda: len(stored(own_servers.influx_url, "faults")) >= len(sent), 60)
        time.sleep(0.5)
        assert_exactly(sent, stored(own_servers.influx_url, "faults"))
    finally:
        run.stop()
