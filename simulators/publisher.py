"""Publish a simulated event over MQTT, compressed in time.

Ticks go out in event-time order, each at its event time divided by `speed` after the first,
with the readings' own event timestamps, so a six-hour storm replayed in a minute produces the
same warnings as live. QoS 1; the call returns only when the broker has acknowledged every
message.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

import orjson
import paho.mqtt.client as mqtt

from ews.sensors import SensorRegistry
from simulators.rainstorm import SimResult

# (ticks done, ticks in all, readings sent so far, event time of the last tick sent in ms)
Progress = Callable[[int, int, int, int], None]
Message = tuple[str, bytes, int]  # topic, payload, readings carried


class _Acks:
    """Counts broker acknowledgements; paho calls on_publish from its network thread."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.acked = 0

    def on_publish(self, *_args: object) -> None:
        with self.cond:
            self.acked += 1
            self.cond.notify_all()

    def wait_for(self, n: int, timeout_s: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.acked >= n, timeout_s)


class Messages:
    """Topics and payloads of a result's ticks, per reading or as per-street gateway batches."""

    def __init__(
        self,
        result: SimResult,
        registry: SensorRegistry | None = None,
        batch: bool = False,
        root: str = "ews",
    ):
        registry = result.sensors if registry is None else registry
        if len(registry) != result.values.shape[1]:
            raise ValueError(
                f"the result has {result.values.shape[1]} sensors, the registry {len(registry)}"
            )
        self.result = result
        self.batch = batch
        sensors = registry.sensors
        self.units = [registry.kinds[s.kind].unit for s in sensors]
        self.ids = [s.id for s in sensors]
        self.topics = [
            f"{root}/{s.district}/{s.street}/{s.community}/{s.kind}/{s.id}" for s in sensors
        ]
        by_street: dict[str, list[int]] = {}
        for i, s in enumerate(sensors):
            by_street.setdefault(s.street, []).append(i)
        self.gateways = [
            (f"{root}/{street[:6]}/{street}/batch/GW-{street}", idx)
            for street, idx in sorted(by_street.items())
        ]

    def tick(self, k: int) -> list[Message]:
        ts = int(self.result.tick_ts[k])
        row = self.result.values[k].tolist()
        if not self.batch:
            return [
                (self.topics[i], orjson.dumps({"ts": ts, "value": v, "unit": self.units[i]}), 1)
                for i, v in enumerate(row)
            ]
        return [
            (
                topic,
                orjson.dumps(
                    {"readings": [{"sensor": self.ids[i], "ts": ts, "value": row[i]} for i in idx]}
                ),
                len(idx),
            )
            for topic, idx in self.gateways
        ]


def publish_result(
    result: SimResult,
    sensors: SensorRegistry | None = None,
    host: str = "localhost",
    port: int = 1883,
    *,
    speed: float = 360.0,
    batch: bool = False,
    root: str = "ews",
    client_id: str = "",
    username: str | None = None,
    password: str | None = None,
    progress: Progress | None = None,
    connect_timeout_s: float = 10.0,
    ack_timeout_s: float = 60.0,
) -> int:
    """Publish every tick of `result`; return the number of readings the broker acknowledged.

    `speed` is event time per wall time (360 plays six hours in one minute; math.inf sends as
    fast as the connection allows). `sensors` names topics and units; it defaults to the
    registry the result was simulated from.
    """
    if not speed > 0:
        raise ValueError("speed must be positive")
    messages = Messages(result, sensors, batch, root)
    acks = _Acks()
    connected = threading.Event()
    refused: list[str] = []

    def on_connect(
        _c: mqtt.Client, _u: object, _f: object, reason: mqtt.ReasonCode, _p: object
    ) -> None:
        if reason.is_failure:
            refused.append(str(reason))
        connected.set()

    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=client_id
    )
    if username is not None:
        client.username_pw_set(username, password)
    client.on_connect = on_connect
    client.on_publish = acks.on_publish
    client.max_inflight_messages_set(1000)  # the default 20 throttles a replay to a crawl
    try:
        client.connect(host, port, keepalive=30)
    except OSError as exc:
        raise ConnectionError(f"cannot reach MQTT broker {host}:{port}: {exc}") from exc
    client.loop_start()
    try:
        if not connected.wait(connect_timeout_s) or refused:
            why = refused[0] if refused else f"no answer within {connect_timeout_s:g} s"
            raise ConnectionError(f"MQTT broker {host}:{port} refused the connection: {why}")
        sent, readings = _send(client, messages, speed, progress)
        if not acks.wait_for(sent, ack_timeout_s):
            raise TimeoutError(
                f"broker acknowledged {acks.acked} of {sent} messages within {ack_timeout_s:g} s"
            )
        return readings
    finally:
        client.disconnect()
        client.loop_stop()


def _send(
    client: mqtt.Client, messages: Messages, speed: float, progress: Progress | None
) -> tuple[int, int]:
    result = messages.result
    total = result.n_ticks
    t0 = time.monotonic()
    sent = readings = 0
    for k in range(total):
        if math.isfinite(speed):
            due = t0 + (int(result.tick_ts[k]) - int(result.tick_ts[0])) / 1000 / speed
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        for topic, payload, n in messages.tick(k):
            info = client.publish(topic, payload, qos=1)
            # paho queues QoS 1 messages while reconnecting (MQTT_ERR_NO_CONN) and sends them later
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                raise RuntimeError(f"publishing to {topic} failed: {mqtt.error_string(info.rc)}")
            sent += 1
            readings += n
        if progress is not None:
            progress(k + 1, total, readings, int(result.tick_ts[k]))
    return sent, readings
