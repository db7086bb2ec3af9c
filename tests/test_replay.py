"""Replaying a recorded event from CSV or InfluxDB history, as a drill by default."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import paho.mqtt.client as mqtt
import pytest

from ews.cli import main
from ews.config import RegistryConfig, sample_dir
from ews.sensors import SensorRegistry
from ews.servers import LocalServers
from ews.yamlfile import ConfigError
from ingest.influx_v1 import InfluxV1
from simulators.replay import ending_now, read_csv, read_influx, selector

T0 = 1_590_076_800_000  # 2020-05-22 00:00 Beijing time


@pytest.fixture(scope="module")
def sample() -> SensorRegistry:
    return RegistryConfig.sample().load().sensors


def write_csv(path: Path, rows: list[str]) -> Path:
    path.write_text("sensor,ts,value\n" + "".join(r + "\n" for r in rows), encoding="utf-8")
    return path


def test_csv_in_time_order_with_either_timestamp_form(tmp_path: Path, sample: SensorRegistry) -> None:
    f = write_csv(tmp_path / "522.csv", [
        f"RG-0001,{T0 + 600_000},12.5",
        "RG-0002,2020-05-22T00:05:00+08:00,3",
        f"RG-0001,{(T0 + 300_000) // 1000},7.25",  # epoch seconds
    ])
    s = read_csv(f, sample)
    assert s.ts.tolist() == [T0 + 300_000, T0 + 300_000, T0 + 600_000]
    assert [sample.sensors[i].id for i in s.sensor] == ["RG-0001", "RG-0002", "RG-0001"]
    assert s.value.tolist() == [7.25, 3.0, 12.5]
    only = read_csv(f, sample, selector("RG-0002", sample))
    assert len(only) == 1
    assert len(read_csv(f, sample, selector("440106001", sample))) == 2  # RG-0001 lies in 沙河街道


def test_bad_csv_rows_are_named_by_line(tmp_path: Path, sample: SensorRegistry) -> None:
    f = write_csv(tmp_path / "bad.csv", [
        f"RG-0001,{T0},1.0",
        f"RG-9999,{T0},1.0",  # line 3
        "RG-0001,yesterday,1.0",  # line 4
        f"RG-0001,{T0},lots",  # line 5
    ])
    with pytest.raises(ConfigError) as info:
        read_csv(f, sample)
    text = str(info.value)
    assert f"{f}:3: sensor" in text and "RG-9999" in text
    assert f"{f}:4: ts" in text and f"{f}:5: value" in text
    (tmp_path / "nohead.csv").write_text("id,time,v\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="missing column"):
        read_csv(tmp_path / "nohead.csv", sample)


def test_shifted_to_end_now(tmp_path: Path, sample: SensorRegistry) -> None:
    s = read_csv(write_csv(tmp_path / "a.csv", [f"RG-0001,{T0},1", f"RG-0001,{T0 + 3_600_000},2"]), sample)
    now = T0 + 10 * 86_400_000
    moved = ending_now(s, now)
    assert moved.ts.tolist() == [now - 3_600_000, now]
    assert np.array_equal(moved.send, moved.ts)


@pytest.mark.integration
def test_history_from_influxdb(servers: LocalServers, influx_db: str, sample: SensorRegistry) -> None:
    db = InfluxV1(servers.influx_url, influx_db)
    db.create_database()
    lines = []
    for k in range(12):
        lines.append(f"rain,sensor=RG-0001 value={k * 1.5} {T0 + k * 300_000}")
        lines.append(f"water_level,sensor=WL-0007 value={6.3 + k * 0.1:.2f} {T0 + k * 300_000}")
    lines.append(f"rain,sensor=RG-0001 value=99 {T0 - 300_000}")  # before the window
    lines.append(f"rain,sensor=XX-1 value=1 {T0}")  # a sensor no longer registered
    db.write("\n".join(lines).encode())
    s = read_influx(db, sample, T0, T0 + 12 * 300_000)
    db.close()
    assert len(s) == 24
    rain = s.value[s.sensor == sample.index["RG-0001"]]
    assert rain.tolist() == [k * 1.5 for k in range(12)]
    assert np.all(np.diff(s.ts) >= 0)


class Capture:
    def __init__(self, port: int, topic: str):
        self.got: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.c = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=f"cap-{topic[:10]}")
        self.c.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.c.on_subscribe = lambda *_: self.ready.set()
        self.c.on_message = lambda _c, _u, m: self.got.append((m.topic, orjson.loads(m.payload)))
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def stop(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


@pytest.mark.integration
def test_replay_command_publishes_as_a_drill_by_default(
    servers: LocalServers, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        f"mqtt: {{host: 127.0.0.1, port: {servers.mqtt.port}}}\n"
        f"influxdb: {{url: '{servers.influx_url}', database: replay}}\n"
        f"registries: {{regions: '{sample_dir() / 'regions.yaml'}', sensors: '{sample_dir() / 'sensors.yaml'}'}}\n",
        encoding="utf-8",
    )
    csv = write_csv(tmp_path / "522.csv", [f"RG-0001,{T0 + k * 300_000},{k}" for k in range(10)])
    drill, live = Capture(servers.mqtt.port, "ews-drill/#"), Capture(servers.mqtt.port, "ews/440106/#")
    try:
        assert drill.ready.wait(10) and live.ready.wait(10)
        before = int(time.time() * 1000)
        assert main(["replay", "--config", str(cfg), "--csv", str(csv), "--speed", "1e6"]) == 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(drill.got) < 10:
            time.sleep(0.05)
        assert len(drill.got) == 10 and live.got == []
        topic, last = drill.got[-1]
        assert topic == "ews-drill/440106/440106001/440106001004/rain/RG-0001"
        assert before - 1000 <= last["ts"] <= int(time.time() * 1000)  # ends now
        assert [d["ts"] for _, d in drill.got] == [last["ts"] - (9 - k) * 300_000 for k in range(10)]
        assert main(["replay", "--config", str(cfg), "--csv", str(csv), "--speed", "1e6", "--live",
                     "--keep-time"]) == 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(live.got) < 10:
            time.sleep(0.05)
        assert [d["ts"] for _, d in live.got] == [T0 + k * 300_000 for k in range(10)]
        assert "LIVE" in capsys.readouterr().out
    finally:
        drill.stop()
        live.stop()
