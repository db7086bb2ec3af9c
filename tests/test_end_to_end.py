"""Sensor to warning on the real servers: MQTT -> InfluxDB -> CMA levels -> signed webhook.

The expected levels are worked out here from the CMA definitions (blue 12 h >= 50 mm,
yellow 6 h >= 50, orange 3 h >= 50, red 3 h >= 100) with plain loops over the series sent.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest

from ews.config import ChannelConfig, Config, InfluxConfig, MqttConfig, NotifierConfig, RegistryConfig
from ews.pipeline import Pipeline
from ews.servers import LocalServers
from ingest.influx_v1 import InfluxV1

from .httpstub import Hook
from .waiting import wait_for

SECRET = "e2e-secret"
STEP_MS = 300_000  # the gauges report every five minutes
LEVELS = ["none", "blue", "yellow", "orange", "red"]


def cma_level(sums: dict[int, float]) -> int:
    level = 0
    if sums[12] >= 50:
        level = 1
    if sums[6] >= 50:
        level = 2
    if sums[3] >= 50:
        level = 3
    if sums[3] >= 100:
        level = 4
    return level


def expected_levels(series: list[tuple[int, float]]) -> list[int]:
    out = []
    for i, (t, _) in enumerate(series):
        sums = {}
        for hours in (3, 6, 12):
            sums[hours] = round(sum(v for (u, v) in series[: i + 1] if u > t - hours * 3_600_000), 6)
        out.append(cma_level(sums))
    return out


def transitions_of(levels: list[int]) -> list[tuple[str, str]]:
    out, cur = [], 0
    for lv in levels:
        if lv == cur:
            continue
        kind = "open" if cur == 0 else "resolve" if lv == 0 else "raise" if lv > cur else "lower"
        out.append((kind, LEVELS[lv] if lv else LEVELS[cur]))
        cur = lv
    return out


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook(SECRET)
    yield h
    h.http.close()



def test_rain_series_to_signed_webhook(
    servers: LocalServers, influx_db: str, hook: Hook, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EWS_E2E_SECRET", SECRET)
    cfg = Config(
        mqtt=MqttConfig(port=servers.mqtt.port, client_id="e2e-pipeline"),
        influxdb=InfluxConfig(url=servers.influx_url, database=influx_db, flush_interval_s=0.02),
        registries=RegistryConfig.sample(),
        state_dir=tmp_path / "state",
        notifiers=NotifierConfig(channels=[
            ChannelConfig(name="webhook", type="webhook", url=hook.url, secret_env="EWS_E2E_SECRET"),
        ]),
    )
    pipeline = Pipeline(cfg)
    gauge = pipeline.sensors.of_kind("rain")[0]
    # 26 hours: steady rain for 11 h, a burst that reaches red, then a dry tail long enough to
    # lift every level, so the series walks through all four levels up and down
    pattern = [0.4] * 130 + [1.2] * 12 + [3.0] * 12 + [6.0] * 12 + [0.0] * 150
    start = (int(time.time() * 1000) - len(pattern) * STEP_MS) // STEP_MS * STEP_MS
    series = [(start + i * STEP_MS, v) for i, v in enumerate(pattern)]
    want = transitions_of(expected_levels(series))
    assert [lv for _, lv in want][:4] == ["blue", "yellow", "orange", "red"]  # the series is worth testing

    topic = f"ews/{gauge.district}/{gauge.street}/{gauge.community}/rain/{gauge.id}"
    pipeline.start()
    pub = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="e2e-pub")
    pub.connect("127.0.0.1", servers.mqtt.port)
    pub.loop_start()
    try:
        for t, v in series:
            pub.publish(topic, orjson.dumps({"ts": t, "value": v, "unit": "mm"}), qos=1).wait_for_publish(5)
        db = InfluxV1(servers.influx_url, influx_db)
        assert wait_for(lambda: db.count("rain") == len(series)), db.count("rain")
        stored = db.query(f"SELECT value FROM rain WHERE sensor = '{gauge.id}'")[0]["values"]
        assert [(r[0], r[1]) for r in stored] == series
        db.close()

        assert wait_for(lambda: len(hook.seen()) >= len(want)), hook.seen()
        time.sleep(0.3)
        assert hook.seen() == want
        assert hook.bad == 0
        first = hook.bodies[0]
        assert first["warning"]["subject"] == gauge.id
        assert first["warning"]["region"]["community"]["code"] == gauge.community
        assert "暴雨" in first["message"] and "蓝色" in first["message"]
        assert len({b["idempotency_key"] for b in hook.bodies}) == len(hook.bodies)
        # the store holds the same story, with an audit row for every transition
        kinds = [t["type"] for t in pipeline.store.transitions()]
        assert kinds == [k for k, _ in want]
        audit_actions = [a["action"] for a in pipeline.store.audit_log()]
        assert [a for a in audit_actions if a.startswith("warning.")] == [f"warning.{k}" for k, _ in want]
        assert audit_actions.count("delivery.attempt") == len(want)
    finally:
        pub.loop_stop()
        pipeline.stop()


def test_retained_state_on_warnings_topic(servers: LocalServers, influx_db: str, tmp_path: Path) -> None:
    cfg = Config(
        mqtt=MqttConfig(port=servers.mqtt.port, client_id="e2e-retained"),
        influxdb=InfluxConfig(url=servers.influx_url, database=influx_db, flush_interval_s=0.02),
        registries=RegistryConfig.sample(),
        state_dir=tmp_path / "state",
        notifiers=NotifierConfig(channels=[ChannelConfig(name="console", type="console")]),
    )
    pipeline = Pipeline(cfg)
    gas = pipeline.sensors.of_kind("gas")[0]
    pipeline.start()
    pub = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="e2e-retained-pub")
    pub.connect("127.0.0.1", servers.mqtt.port)
    pub.loop_start()
    try:
        now = int(time.time() * 1000)
        topic = f"ews/{gas.district}/{gas.street}/{gas.community}/gas/{gas.id}"
        pub.publish(topic, orjson.dumps({"ts": now - 1000, "value": 31.0}), qos=1).wait_for_publish(5)
        assert wait_for(lambda: len(pipeline.store.open_warnings()) == 1)
        time.sleep(0.3)
        # a consumer that connects afterwards still gets the current state (retained)
        seen: list[dict[str, Any]] = []
        sub = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="e2e-display")
        sub.on_message = lambda _c, _u, m: seen.append(orjson.loads(m.payload))
        sub.connect("127.0.0.1", servers.mqtt.port)
        sub.subscribe(f"ews-out/warnings/{gas.district}/{gas.street}/{gas.community}", qos=1)
        sub.loop_start()
        assert wait_for(lambda: bool(seen), 10)
        state = seen[-1]
        assert state["version"] == 1
        (w,) = state["warnings"]
        got = (w["kind"], w["subject"], w["level"], w["state"], w["measure"])
        assert got == ("gas", gas.id, "orange", "open", "gas")
        assert w["value"] == 31.0 and w["drill"] is False and w["event_ts_ms"] == now - 1000
        assert w["event_ts"].endswith("+08:00")
        assert w["region"]["street"]["code"] == gas.street and w["message"]
        sub.loop_stop()
    finally:
        pub.loop_stop()
        pipeline.stop()
