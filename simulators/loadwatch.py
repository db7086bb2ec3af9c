"""Watching the pipeline under load: latency probes, the warnings they cause, what InfluxDB
holds, and the pipeline's memory.

Latency is measured end to end on the pipeline's public output: a probe gas sensor is sent a
reading over the first alarm set-point (40 % LEL, stamped with its send time), the pipeline
opens a warning and publishes its community's retained state on the warnings topic, and the
watcher matches the warning's subject and `event_ts_ms` to the probe it came from. The next
reading of that probe (0 % LEL, half a round of probes later) resolves the warning again, so
each probe sensor alternates and every high reading opens a fresh warning. Probes share the
broker and the pipeline's queue with the load, so they wait behind any backlog it builds up.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import orjson
import paho.mqtt.client as mqtt
import psutil

from ingest.influx_v1 import InfluxV1
from simulators.loadfleet import Broker, LoadSensors

PROBE_HIGH = 40.0
PROBE_LOW = 0.0


@dataclass
class Latencies:
    lock: threading.Lock = field(default_factory=threading.Lock)
    pending: dict[tuple[str, int], float] = field(default_factory=dict)  # (sensor, ts) -> sent at
    samples: list[tuple[float, float]] = field(default_factory=list)  # (sent at, latency s)
    sent: int = 0

    def expect(self, sensor: str, ts_ms: int, sent_at: float) -> None:
        with self.lock:
            self.pending[(sensor, ts_ms)] = sent_at
            self.sent += 1

    def seen(self, sensor: str, ts_ms: int, at: float) -> None:
        with self.lock:
            sent_at = self.pending.pop((sensor, ts_ms), None)
            if sent_at is not None:
                self.samples.append((sent_at, at - sent_at))

    def since(self, t: float) -> list[tuple[float, float]]:
        """(sent at, latency s) of the probes sent since `t` that have been answered."""
        with self.lock:
            return [(at, lat) for at, lat in self.samples if at >= t]

    def waiting(self, since: float) -> int:
        with self.lock:
            return sum(1 for at in self.pending.values() if at >= since)


class Prober(threading.Thread):
    """Sends probe readings at `per_s`, alternating high and low on each probe sensor."""

    def __init__(self, broker: Broker, load: LoadSensors, latencies: Latencies, per_s: float = 10.0):
        super().__init__(name="loadtest-prober", daemon=True)
        self.pub = broker.connect(f"ews-loadtest-probe-{int(time.time())}")
        self.load = load
        self.latencies = latencies
        self.per_s = per_s
        self.active = threading.Event()
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        n = len(load.probe_ids)
        self._high = [False] * n
        self._last = [0] * n

    def _send(self, i: int, high: bool) -> None:
        sent_at = time.time()
        ts = max(int(sent_at * 1000), self._last[i] + 1)
        self._last[i] = ts
        self._high[i] = high
        if high:
            self.latencies.expect(self.load.probe_ids[i], ts, sent_at)
        value = PROBE_HIGH if high else PROBE_LOW
        self.pub.publish_many([(self.load.probe_topics[i], b'{"ts":%d,"value":%r}' % (ts, value))])

    def run(self) -> None:
        n = len(self._high)
        k = 0
        while not self.stopping.is_set():
            if not self.active.wait(0.2):
                continue
            with self._lock:
                if self.active.is_set():
                    # every other send raises the next probe, the ones between lower the probe
                    # raised half a round ago: high readings go out evenly, one per two sends
                    j = k // 2
                    if k % 2 == 0:
                        self._send(j % n, True)
                    elif self._high[(j - n // 2) % n]:
                        self._send((j - n // 2) % n, False)
                    k += 1
            self.stopping.wait(1.0 / self.per_s)

    @property
    def acked(self) -> int:
        return self.pub.acked

    def settle(self, timeout_s: float = 10.0) -> None:
        """Stop probing, sending every probe sensor still high a low reading first, so no
        warning stays open into the next step."""
        with self._lock:
            self.active.clear()
            for i, high in enumerate(self._high):
                if high:
                    self._send(i, False)
        self.pub.wait_acked(timeout_s)

    def stop(self) -> None:
        self.stopping.set()
        self.active.set()
        self.join(timeout=5)
        self.pub.close()


class Watcher:
    """Subscribes to the warnings topic and reports every warning it sees to `latencies`."""

    def __init__(self, broker: Broker, prefix: str, latencies: Latencies):
        self.latencies = latencies
        self.connected = threading.Event()
        self.client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"ews-loadtest-watch-{int(time.time())}")
        if broker.username is not None:
            self.client.username_pw_set(broker.username, broker.password)
        if broker.ca_file is not None:
            self.client.tls_set(ca_certs=broker.ca_file, certfile=broker.cert_file, keyfile=broker.key_file)
        self.client.on_message = self._on_message
        topic = f"{prefix.rstrip('/')}/#"

        def on_connect(c: mqtt.Client, *_: object) -> None:
            c.subscribe(topic, qos=1)
            self.connected.set()

        self.client.on_connect = on_connect
        self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.loop_start()

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        at = time.time()
        try:
            state = orjson.loads(msg.payload)
            for w in state.get("warnings", []):
                self.latencies.seen(str(w.get("subject")), int(w.get("event_ts_ms", 0)), at)
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
            pass  # not a warning state: nothing to match

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class StoredCounter:
    """Readings of the load and probe sensors InfluxDB holds in a time range."""

    def __init__(self, url: str, database: str, username: str | None, password: str | None,
                 kinds: list[str], sensor_filter: str):
        self.db = InfluxV1(url, database, username, password, timeout_s=30)
        self.kinds = kinds
        self.filter = sensor_filter

    def count(self, from_ms: int, to_ms: int) -> int:
        measurements = ",".join(f'"{k}"' for k in self.kinds)
        q = (f'SELECT count("value") FROM {measurements} WHERE time >= {from_ms}ms AND time <= {to_ms}ms '
             f'AND "sensor" =~ /{self.filter}/')
        try:
            series = self.db.query(q, method="POST")
        except Exception:
            return -1  # the database is busy or not there yet; the next poll will tell
        return sum(int(s["values"][0][1]) for s in series if s.get("values"))

    def close(self) -> None:
        self.db.close()


class Rss:
    def __init__(self, pid: int):
        self.proc = psutil.Process(pid)

    def mb(self) -> float:
        try:
            return float(self.proc.memory_info().rss) / 2**20
        except psutil.Error:
            return float("nan")
