"""`ews simulate` against a real broker: every reading of the scenario arrives, under the drill
root when it is a drill."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from ews.cli import main
from ews.config import sample_dir
from ews.servers import LocalServers


@pytest.mark.integration
def test_simulate_publishes_every_reading_as_a_drill(
    servers: LocalServers, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        f"mqtt: {{host: 127.0.0.1, port: {servers.mqtt.port}}}\n"
        f"registries: {{regions: '{sample_dir() / 'regions.yaml'}', sensors: '{sample_dir() / 'sensors.yaml'}'}}\n",
        encoding="utf-8",
    )
    topics: list[str] = []
    lock = threading.Lock()
    ready = threading.Event()
    sub = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="simulate-cli-capture")
    sub.on_connect = lambda c, *_: c.subscribe([("ews-drill/#", 1), ("ews/440106/#", 1)])
    sub.on_subscribe = lambda *_: ready.set()

    def on_message(_c: mqtt.Client, _u: object, m: mqtt.MQTTMessage) -> None:
        with lock:
            topics.append(m.topic)

    sub.on_message = on_message
    sub.connect("127.0.0.1", servers.mqtt.port)
    sub.loop_start()
    try:
        assert ready.wait(10)
        code = main(["simulate", "quiet_day", "--config", str(cfg), "--hours", "1", "--speed", "1e9", "--drill",
                     "--batch"])
        assert code == 0
        out = capsys.readouterr().out
        n_sensors = 305
        assert f"published {12 * n_sensors:,} readings" in out and "演练" in out
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(topics) < 12 * 21:
            time.sleep(0.05)
        # one gateway batch per street and tick, all under the drill root
        assert len(topics) == 12 * 21
        assert all(t.startswith("ews-drill/440106/") and "/batch/GW-" in t for t in topics)
    finally:
        sub.loop_stop()
        sub.disconnect()
