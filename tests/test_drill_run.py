"""Scenarios through the real pipeline on the real servers: the shipped rainstorm raises what its
`expect:` section says, and the same storm run as a drill reaches only the drill audience,
labelled 演练, without touching the real warnings, series or retained state.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
from prometheus_client import REGISTRY

from ews.config import ChannelConfig, Config, InfluxConfig, MqttConfig, NotifierConfig, RegistryConfig
from ews.pipeline import Pipeline
from ews.servers import LocalServers
from ingest.influx_v1 import InfluxV1
from simulators.compose import Run, run
from simulators.dryrun import unmet
from simulators.publisher import publish_stream
from simulators.scenario import load_scenario

from .waiting import wait_for

pytestmark = pytest.mark.integration
KINDS = ("rain", "water_level", "ponding", "gas", "smoke")



def make_pipeline(servers: LocalServers, influx_db: str, tmp_path: Path, name: str) -> Pipeline:
    cfg = Config(
        mqtt=MqttConfig(port=servers.mqtt.port, client_id=f"drill-run-{name}",
                        warnings_prefix=f"{name}-out/warnings", drill_warnings_prefix=f"{name}-out/drill/warnings"),
        influxdb=InfluxConfig(url=servers.influx_url, database=influx_db, flush_interval_s=0.05),
        registries=RegistryConfig.sample(),
        rules_profile="guangdong",  # the sample district is in Guangzhou, as the scenarios assume
        state_dir=tmp_path / "state",
        notifiers=NotifierConfig(channels=[ChannelConfig(name="console", type="console")]),
    )
    from notifiers.channels import ConsoleChannel

    return Pipeline(cfg, channels={"console": ConsoleChannel("console", sink=lambda _line: None)})


def stored(url: str, database: str) -> int:
    db = InfluxV1(url, database)
    try:
        return sum(db.count(k) for k in KINDS)
    except Exception:
        return 0
    finally:
        db.close()


def drive(pipeline: Pipeline, sim: Run, servers: LocalServers, root: str, database: str) -> int:
    """Publish a scenario flat out, as per-street gateway batches (the suite runs on a small
    machine), and wait until it is stored and every message delivered."""
    sent = publish_stream(sim.stream, "127.0.0.1", servers.mqtt.port, speed=float("inf"), root=root,
                          batch=True, client_id=f"drill-run-pub-{root}")
    assert sent == len(sim.stream)
    assert wait_for(lambda: stored(servers.influx_url, database) == sent, 120), stored(servers.influx_url, database)
    assert wait_for(pipeline.idle, 60)
    time.sleep(0.5)
    return sent


class Retained:
    """What a display connecting now would get on a warnings topic tree."""

    def __init__(self, port: int, topic: str):
        self.got: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        c = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=f"retained-{topic[:20]}")
        c.on_connect = lambda cl, *_: cl.subscribe(topic, qos=1)
        c.on_message = self._on
        c.connect("127.0.0.1", port)
        c.loop_start()
        time.sleep(1.5)
        c.loop_stop()
        c.disconnect()

    def _on(self, _c: mqtt.Client, _u: object, m: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.got.append(orjson.loads(m.payload))


@pytest.fixture
def rainstorm() -> Iterator[Any]:
    yield load_scenario("rainstorm")


def test_shipped_rainstorm_raises_what_it_expects(
    servers: LocalServers, influx_db: str, tmp_path: Path, rainstorm: Any
) -> None:
    pipeline = make_pipeline(servers, influx_db, tmp_path, "live")
    sc = load_scenario("rainstorm", pipeline.sensors)
    assert not sc.drill
    sim = run(sc, pipeline.sensors)
    pipeline.start()
    try:
        drive(pipeline, sim, servers, "ews", influx_db)
        warnings = pipeline.store.warnings()
        assert unmet(sc, warnings, pipeline.sensors) == []
        assert warnings and not any(w["drill"] for w in warnings)
        assert not [m for r in pipeline.store.outbox() for m in [r["payload"].get("message", "")] if "演练" in m]
    finally:
        pipeline.stop()


def test_a_drill_reaches_only_the_drill_audience(servers: LocalServers, influx_db: str, tmp_path: Path) -> None:
    pipeline = make_pipeline(servers, influx_db, tmp_path, "drill")
    sc = load_scenario("rainstorm", pipeline.sensors).model_copy(update={"drill": True})
    sim = run(sc, pipeline.sensors)
    pipeline.start()
    try:
        root = pipeline.cfg.mqtt.drill_root
        assert root
        drive(pipeline, sim, servers, root, f"{influx_db}_drill")
        # nothing real happened: no real warning, no reading in the real series
        assert pipeline.store.warnings() == [] and pipeline.store.outbox() == []
        assert stored(servers.influx_url, influx_db) == 0
        lane = pipeline.drill_lane()
        warnings = lane.store.warnings()
        assert unmet(sc, warnings, pipeline.sensors) == []  # the drill raises what the storm would
        assert all(w["drill"] for w in warnings)

        # the drill audience of the packaged routing policy: duty officers of the community and
        # of its street, whatever the level; never grid staff, leaders, the district or the public
        regions = pipeline.regions

        def audience(community: str) -> set[str]:
            return {c.id for code in (community, community[:9]) for c in regions.get(code).contacts
                    if c.role == "duty_officer"}

        rows = lane.store.outbox()
        assert rows
        by_id = {w["id"]: w for w in warnings}
        for r in rows:
            community = by_id[r["warning_id"]]["community"]
            ids = {x["id"] for x in r["recipients"]}
            assert ids and ids <= audience(community), (ids, audience(community))
            assert all(x["role"] == "duty_officer" and x["audience"] == "internal" for x in r["recipients"])
            assert "【演练】" in r["payload"]["message"]
            assert r["payload"]["warning"]["drill"] is True
        red = [r for r in rows if r["payload"]["warning"]["level"] == "red"]
        assert red  # even red, which would reach leaders and the public, stays with the drill audience

        # displays and sirens follow the real retained topic: it says nothing of the drill
        assert Retained(servers.mqtt.port, "drill-out/warnings/#").got == []
        drill_states = Retained(servers.mqtt.port, "drill-out/drill/warnings/#").got
        assert drill_states and all(w["drill"] for s in drill_states for w in s["warnings"])
    finally:
        pipeline.stop()


def test_a_drill_neither_raises_nor_resolves_a_real_warning(
    servers: LocalServers, influx_db: str, tmp_path: Path
) -> None:
    pipeline = make_pipeline(servers, influx_db, tmp_path, "apart")
    gas = pipeline.sensors.get("GS-0025")
    live = f"ews/{gas.district}/{gas.street}/{gas.community}/gas/{gas.id}"
    drill = f"{pipeline.cfg.mqtt.drill_root}/{live[4:]}"
    pub = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="drill-apart-pub")
    pub.connect("127.0.0.1", servers.mqtt.port)
    pub.loop_start()
    pipeline.start()
    now = int(time.time() * 1000)

    def send(topic: str, ts: int, value: float) -> None:
        pub.publish(topic, orjson.dumps({"ts": ts, "value": value}), qos=1).wait_for_publish(5)

    def lag_observations() -> float:
        return REGISTRY.get_sample_value("ews_ingest_event_lag_seconds_count") or 0.0

    try:
        send(live, now - 60_000, 31.0)  # a real first alarm
        assert wait_for(lambda: len(pipeline.store.open_warnings()) == 1, 20)
        real = pipeline.store.open_warnings()[0]
        live_lags = lag_observations()
        send(drill, now - 50_000, 60.0)  # the drill's second alarm on the same sensor
        send(drill, now - 40_000, 0.0)  # and the drill's all-clear
        assert wait_for(lambda: any(w["state"] == "resolved" for w in pipeline.drill_lane().store.warnings()), 20)
        assert lag_observations() == live_lags  # a drill's readings do not count as late live ones
        (d,) = pipeline.drill_lane().store.warnings()
        assert d["drill"] and d["peak_level"] == 4 and d["subject"] == "GS-0025"
        (still,) = pipeline.store.open_warnings()
        assert (still["id"], still["level"], still["state"], still["drill"]) == (real["id"], 3, "open", False)
        send(live, now - 30_000, 0.0)  # the real all-clear resolves the real warning
        assert wait_for(lambda: pipeline.store.open_warnings() == [], 20)
        assert lag_observations() > live_lags
        assert not any(r["payload"]["warning"]["drill"] for r in pipeline.store.outbox())
    finally:
        pub.loop_stop()
        pipeline.stop()
