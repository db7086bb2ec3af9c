"""Each fault shows up in the stream as its scenario entry says, and in what reaches the broker.

The clean run (no faults) of the same scenario is the reference: every check compares the
faulty stream with it, row by row, using only the fault's stated parameters.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from typing import Any

import numpy as np
import orjson
import paho.mqtt.client as mqtt
import pytest

from ews.sensors import SensorRegistry
from ews.servers import LocalServers
from simulators.compose import Run, run
from simulators.publisher import publish_stream
from simulators.scenario import Scenario

START_MS = 1_590_076_800_000
TICK = 300_000
H = 3_600_000


def faulty(faults: list[dict[str, Any]], **kw: Any) -> Scenario:
    return Scenario.model_validate({"name": "faults", "duration": "6h", "tick": "5m", "seed": 8,
                                    "models": [{"type": "rainstorm"}], "faults": faults, **kw})


def pair(sensors: SensorRegistry, faults: list[dict[str, Any]], **kw: Any) -> tuple[Run, Run]:
    return run(faulty([], **kw), sensors, START_MS), run(faulty(faults, **kw), sensors, START_MS)


def rows(r: Run, sid: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    i = r.stream.registry.index[sid]
    m = r.stream.sensor == i
    return r.stream.ts[m], r.stream.value[m], r.stream.send[m], r.stream.battery[m]


def test_stuck_holds_the_last_value_for_the_window(mini_sensors: SensorRegistry) -> None:
    clean, bad = pair(mini_sensors, [{"type": "stuck", "sensors": ["WL-A1"], "start": "1h", "duration": "2h"}])
    ts, v, _, _ = rows(bad, "WL-A1")
    cts, cv, _, _ = rows(clean, "WL-A1")
    inside = (ts >= START_MS + H) & (ts < START_MS + 3 * H)
    held = cv[cts < START_MS + H][-1]
    assert inside.sum() == 24 and np.all(v[inside] == held)
    assert np.array_equal(v[~inside], cv[~inside])
    assert len(np.unique(cv[inside])) > 1  # the real stage did move meanwhile


def test_dropout_sends_nothing_in_the_window(mini_sensors: SensorRegistry) -> None:
    clean, bad = pair(mini_sensors, [{"type": "dropout", "sensors": ["RG-A1"], "start": "2h", "duration": "90m"}])
    ts, _, _, _ = rows(bad, "RG-A1")
    assert not np.any((ts >= START_MS + 2 * H) & (ts < START_MS + 3.5 * H))
    assert len(ts) == len(rows(clean, "RG-A1")[0]) - 18
    assert len(bad.stream) == len(clean.stream) - 18


def test_spikes_jump_by_the_magnitude(mini_sensors: SensorRegistry) -> None:
    clean, bad = pair(mini_sensors, [{"type": "spikes", "sensors": ["PD-A1"], "per_hour": 2, "magnitude": 40}])
    _, v, _, _ = rows(bad, "PD-A1")
    _, cv, _, _ = rows(clean, "PD-A1")
    jumped = np.flatnonzero(v != cv)
    assert 3 <= jumped.size <= 25  # Poisson, 2 an hour for 6 hours
    assert np.allclose(v[jumped] - cv[jumped], 40.0)
    assert [int(t) for t in rows(bad, "PD-A1")[0][jumped]] == bad.faults[0].detail["ts"]


def test_drift_grows_with_time(mini_sensors: SensorRegistry) -> None:
    clean, bad = pair(mini_sensors, [{"type": "drift", "sensors": ["GS-B1"], "start": "1h", "per_hour": 1.5}])
    ts, v, _, _ = rows(bad, "GS-B1")
    _, cv, _, _ = rows(clean, "GS-B1")
    hours = np.maximum(ts - (START_MS + H), 0) / H
    expected = np.where(ts >= START_MS + H, cv + 1.5 * hours, cv)
    assert np.allclose(v, expected)
    assert v[-1] - cv[-1] == pytest.approx(7.5)


def test_low_battery_falls_then_the_sensor_dies(mini_sensors: SensorRegistry) -> None:
    _, bad = pair(mini_sensors, [{"type": "low_battery", "sensors": ["SM-B1"], "start": "2h",
                                      "duration": "3h", "from_pct": 20, "to_pct": 0, "dies": True}])
    ts, _, _, bat = rows(bad, "SM-B1")
    assert np.all(np.isnan(bat[ts < START_MS + 2 * H]))
    falling = bat[ts >= START_MS + 2 * H]
    assert falling[0] == pytest.approx(20.0) and np.all(np.diff(falling) < 0) and falling[-1] < 1.0
    assert ts.max() < START_MS + 5 * H  # dead after the window
    assert np.all(np.isnan(rows(bad, "RG-A1")[3]))  # other sensors send no battery field


def test_clock_skew_shifts_the_timestamp_not_the_sending(mini_sensors: SensorRegistry) -> None:
    clean, bad = pair(mini_sensors, [{"type": "clock_skew", "sensors": ["RG-B1"], "offset": "-10m"}])
    ts, v, send, _ = rows(bad, "RG-B1")
    cts, cv, csend, _ = rows(clean, "RG-B1")
    assert np.array_equal(ts, cts - 600_000) and np.array_equal(send, csend) and np.array_equal(v, cv)


def test_duplicates_are_sent_again_later(mini_sensors: SensorRegistry) -> None:
    clean, bad = pair(mini_sensors, [{"type": "duplicates", "region": "440106001", "fraction": 0.2,
                                      "delay": "30s"}])
    extra = len(bad.stream) - len(clean.stream)
    assert extra == bad.faults[0].rows and extra > 10
    seen: dict[tuple[int, int], list[int]] = defaultdict(list)
    s = bad.stream
    for i, t, snd in zip(s.sensor.tolist(), s.ts.tolist(), s.send.tolist(), strict=True):
        seen[(i, t)].append(snd)
    twice = [sends for sends in seen.values() if len(sends) == 2]
    assert len(twice) == extra
    assert all(b - a == 30_000 for a, b in twice)
    street_a = {mini_sensors.index[x.id] for x in mini_sensors.sensors if x.street == "440106001"}
    assert {k[0] for k, v in seen.items() if len(v) == 2} <= street_a


def test_out_of_order_delivers_older_after_newer(mini_sensors: SensorRegistry) -> None:
    _, bad = pair(mini_sensors, [{"type": "out_of_order", "sensors": ["RG-A2"], "fraction": 0.3,
                                  "min_delay": "6m", "max_delay": "20m"}])
    ts, _, send, _ = rows(bad, "RG-A2")
    assert np.all(np.diff(send) >= 0)  # the stream is in send order
    assert np.sum(np.diff(ts) < 0) >= 3  # ... and so the timestamps go backwards now and then
    late = send - ts
    assert late.max() <= 20 * 60_000 and set(np.unique(late[late > 0]) >= 6 * 60_000) == {True}


@pytest.mark.parametrize("backfill", [False, True])
def test_silent_gateway(mini_sensors: SensorRegistry, backfill: bool) -> None:
    clean, bad = pair(mini_sensors, [{"type": "gateway_silent", "street": "440106002", "start": "1h",
                                      "duration": "1h", "backfill": backfill}])
    street = {mini_sensors.index[x.id] for x in mini_sensors.sensors if x.street == "440106002"}
    s = bad.stream
    mine = np.isin(s.sensor, list(street))
    in_window = mine & (s.ts >= START_MS + H) & (s.ts < START_MS + 2 * H)
    sent_in_window = mine & (s.send >= START_MS + H) & (s.send < START_MS + 2 * H)
    assert not sent_in_window.any()  # the whole street is silent
    if backfill:
        assert in_window.sum() == 12 * len(street)  # everything arrives ...
        assert np.all(s.send[in_window] == START_MS + 2 * H)  # ... when the gateway is back
        assert len(s) == len(clean.stream)
    else:
        assert not in_window.any() and len(s) == len(clean.stream) - 12 * len(street)
    others = ~mine & (s.send >= START_MS + H) & (s.send < START_MS + 2 * H)
    assert others.sum() == 12 * (len(mini_sensors) - len(street))


def test_faults_apply_in_device_order_whatever_the_file_order(mini_sensors: SensorRegistry) -> None:
    skew_first = [{"type": "clock_skew", "sensors": ["RG-A1"], "offset": "2h"},
                  {"type": "dropout", "sensors": ["RG-A1"], "start": "1h", "duration": "1h"}]
    a = run(faulty(skew_first), mini_sensors, START_MS)
    b = run(faulty(skew_first[::-1]), mini_sensors, START_MS)
    assert np.array_equal(a.stream.ts, b.stream.ts)
    # the dropout window is on the true time: the readings of 1-2 h are gone, stamped 3-4 h
    ts = rows(a, "RG-A1")[0]
    assert not np.any((ts >= START_MS + 3 * H) & (ts < START_MS + 4 * H))
    assert np.any(ts == START_MS + 4 * H)


# --- on the wire -------------------------------------------------------------------------

class Capture:
    def __init__(self, port: int, topic: str):
        self.lock = threading.Lock()
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.ready = threading.Event()
        self.c = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="fault-capture")
        self.c.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.c.on_subscribe = lambda *_: self.ready.set()
        self.c.on_message = self._on_message
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def _on_message(self, _c: mqtt.Client, _u: object, m: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((m.topic, orjson.loads(m.payload)))

    def stop(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


@pytest.mark.integration
def test_faults_reach_the_broker_as_specified(servers: LocalServers, mini_sensors: SensorRegistry) -> None:
    sc = faulty([
        {"type": "stuck", "sensors": ["WL-A1"], "start": "1h", "duration": "2h"},
        {"type": "dropout", "sensors": ["RG-A1"], "start": "2h", "duration": "1h"},
        {"type": "clock_skew", "sensors": ["RG-B1"], "offset": "90s"},
        {"type": "low_battery", "sensors": ["SM-B1"], "start": "3h", "from_pct": 15, "to_pct": 1},
        {"type": "duplicates", "sensors": ["GS-B1"], "fraction": 0.25},
        {"type": "out_of_order", "sensors": ["RG-A2"], "fraction": 0.3, "min_delay": "6m", "max_delay": "20m"},
        {"type": "gateway_silent", "street": "440106002", "start": "4h", "duration": "30m"},
    ])
    sim = run(sc, mini_sensors, START_MS)
    cap = Capture(servers.mqtt.port, "ews-test-faults/#")
    try:
        assert cap.ready.wait(10)
        sent = publish_stream(sim.stream, "127.0.0.1", servers.mqtt.port, speed=float("inf"), root="ews-test-faults")
        assert sent == len(sim.stream)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(cap.messages) < sent:
            time.sleep(0.05)
    finally:
        cap.stop()
    by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for topic, doc in cap.messages:
        by[topic.rsplit("/", 1)[1]].append(doc)
    assert sum(len(v) for v in by.values()) == sent

    def ts(sid: str) -> list[int]:
        return [d["ts"] for d in by[sid]]

    stuck = [d["value"] for d in by["WL-A1"] if START_MS + H <= d["ts"] < START_MS + 3 * H]
    assert len(stuck) == 24 and len(set(stuck)) == 1
    assert not [t for t in ts("RG-A1") if START_MS + 2 * H <= t < START_MS + 3 * H]
    assert all((t - START_MS) % TICK == 90_000 for t in ts("RG-B1"))
    bats = [d.get("battery") for d in by["SM-B1"]]
    assert bats[: 3 * 12 - 1] == [None] * (3 * 12 - 1)
    falling = [b for b in bats if b is not None]
    assert falling[0] == pytest.approx(15.0) and falling == sorted(falling, reverse=True)
    gas = ts("GS-B1")
    assert len(gas) > len(set(gas)) >= 60  # some readings came twice
    assert any(b < a for a, b in zip(ts("RG-A2"), ts("RG-A2")[1:], strict=False))  # arrived out of order
    silent = [t for sid in ("RG-B1", "GS-B1", "SM-B1") for t in ts(sid)
              if START_MS + 4 * H + 90_000 <= t < START_MS + 4.5 * H]
    assert silent == []
