"""Publish a simulated event over MQTT, compressed in time.

Rows go out in send order, each group at its send time divided by `speed` after the first,
with the readings' own event timestamps, so a six-hour storm replayed in a minute produces the
same warnings as live. QoS 1; the call returns only when the broker has acknowledged every
message.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import orjson
import paho.mqtt.client as mqtt

from ews.config import MqttConfig
from ews.sensors import SensorRegistry
from simulators.rainstorm import SimResult
from simulators.stream import Stream

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

# (groups done, groups in all, readings sent so far, send time of the last group in ms)
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


class Encoder:
    """Topics and payloads for rows of readings, per reading or as per-street gateway batches.

    `root` is the topic root: ``ews`` for live readings, ``ews-drill`` for a drill, whose
    warnings the pipeline keeps apart from the real ones and labels 演练.
    """

    def __init__(self, registry: SensorRegistry, batch: bool = False, root: str = "ews"):
        self.registry = registry
        self.batch = batch
        sensors = registry.sensors
        self.units = [registry.kinds[s.kind].unit for s in sensors]
        self.ids = [s.id for s in sensors]
        self.topics = [f"{root}/{s.district}/{s.street}/{s.community}/{s.kind}/{s.id}" for s in sensors]
        streets = sorted({s.street for s in sensors})
        self.gateway_topics = [f"{root}/{st[:6]}/{st}/batch/GW-{st}" for st in streets]
        number = {st: k for k, st in enumerate(streets)}
        self.street_of = np.array([number[s.street] for s in sensors], np.int64)

    def encode(
        self, sensor: IntArray, ts: IntArray, value: FloatArray, battery: FloatArray | None = None
    ) -> list[Message]:
        rows = list(zip(sensor.tolist(), ts.tolist(), value.tolist(), strict=True))
        bat = battery.tolist() if battery is not None else [math.nan] * len(rows)
        if not self.batch:
            out: list[Message] = []
            for (i, t, v), b in zip(rows, bat, strict=True):
                doc: dict[str, object] = {"ts": t, "value": v, "unit": self.units[i]}
                if b == b:  # not NaN
                    doc["battery"] = b
                out.append((self.topics[i], orjson.dumps(doc), 1))
            return out
        by_gateway: dict[int, list[dict[str, object]]] = {}
        for (i, t, v), b in zip(rows, bat, strict=True):
            item: dict[str, object] = {"sensor": self.ids[i], "ts": t, "value": v}
            if b == b:
                item["battery"] = b
            by_gateway.setdefault(int(self.street_of[i]), []).append(item)
        return [
            (self.gateway_topics[g], orjson.dumps({"readings": items}), len(items))
            for g, items in sorted(by_gateway.items())
        ]


class Messages:
    """The messages of a simulation result's ticks."""

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
        self.encoder = Encoder(registry, batch, root)

    def tick(self, k: int) -> list[Message]:
        n = self.result.values.shape[1]
        return self.encoder.encode(
            np.arange(n, dtype=np.int64), np.full(n, int(self.result.tick_ts[k]), np.int64), self.result.values[k]
        )


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
    registry = result.sensors if sensors is None else sensors
    if len(registry) != result.values.shape[1]:
        raise ValueError(f"the result has {result.values.shape[1]} sensors, the registry {len(registry)}")
    stream = Stream.from_result(result)
    stream.registry = registry
    return publish_stream(
        stream, host, port, speed=speed, batch=batch, root=root, client_id=client_id, username=username,
        password=password, progress=progress, connect_timeout_s=connect_timeout_s, ack_timeout_s=ack_timeout_s,
    )


def tls_hook(cfg: MqttConfig) -> Callable[[mqtt.Client], None] | None:
    """A `configure` hook that sets a configuration's TLS on a client, or None without TLS."""
    tls = cfg.tls
    if tls is None:
        return None

    def configure(client: mqtt.Client) -> None:
        client.tls_set(ca_certs=str(tls.ca_file), certfile=str(tls.cert_file) if tls.cert_file else None,
                       keyfile=str(tls.key_file) if tls.key_file else None)

    return configure


def connect(
    host: str, port: int, client_id: str = "", username: str | None = None, password: str | None = None,
    configure: Callable[[mqtt.Client], None] | None = None, timeout_s: float = 10.0,
) -> tuple[mqtt.Client, _Acks]:
    """A connected paho client with its network loop running, and its acknowledgement counter."""
    acks = _Acks()
    connected = threading.Event()
    refused: list[str] = []

    def on_connect(_c: mqtt.Client, _u: object, _f: object, reason: mqtt.ReasonCode, _p: object) -> None:
        if reason.is_failure:
            refused.append(str(reason))
        connected.set()

    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    if username is not None:
        client.username_pw_set(username, password)
    if configure is not None:
        configure(client)
    client.on_connect = on_connect
    client.on_publish = acks.on_publish
    client.max_inflight_messages_set(0)  # no window: paho feeds a limited one a message per ack, slowly
    try:
        client.connect(host, port, keepalive=30)
    except OSError as exc:
        raise ConnectionError(f"cannot reach MQTT broker {host}:{port}: {exc}") from exc
    client.loop_start()
    if not connected.wait(timeout_s) or refused:
        client.loop_stop()
        why = refused[0] if refused else f"no answer within {timeout_s:g} s"
        raise ConnectionError(f"MQTT broker {host}:{port} refused the connection: {why}")
    return client, acks


def publish_stream(
    stream: Stream,
    host: str = "localhost",
    port: int = 1883,
    *,
    speed: float = 360.0,
    batch: bool = False,
    root: str = "ews",
    client_id: str = "",
    username: str | None = None,
    password: str | None = None,
    configure: Callable[[mqtt.Client], None] | None = None,
    progress: Progress | None = None,
    connect_timeout_s: float = 10.0,
    ack_timeout_s: float = 60.0,
) -> int:
    """Publish a stream in send order, each group of rows due at its send time divided by
    `speed` after the first; return the number of readings the broker acknowledged.

    Readings sent at the same moment go out together (in batch mode, one message per street
    gateway). `configure` may set TLS or other client options before connecting.
    """
    if not speed > 0:
        raise ValueError("speed must be positive")
    encoder = Encoder(stream.registry, batch, root)
    client, acks = connect(host, port, client_id, username, password, configure, connect_timeout_s)
    try:
        sent, readings = _send(client, stream, encoder, speed, progress)
        if not acks.wait_for(sent, ack_timeout_s):
            raise TimeoutError(
                f"broker acknowledged {acks.acked} of {sent} messages within {ack_timeout_s:g} s"
            )
        return readings
    finally:
        client.disconnect()
        client.loop_stop()


def _send(
    client: mqtt.Client, stream: Stream, encoder: Encoder, speed: float, progress: Progress | None
) -> tuple[int, int]:
    groups = stream.send_groups()
    total = len(groups)
    t0 = time.monotonic()
    first = int(stream.send[0]) if len(stream) else 0
    sent = readings = 0
    for k, (a, b) in enumerate(groups):
        at = int(stream.send[a])
        if math.isfinite(speed):
            delay = t0 + (at - first) / 1000 / speed - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        for topic, payload, n in encoder.encode(stream.sensor[a:b], stream.ts[a:b], stream.value[a:b],
                                                stream.battery[a:b]):
            info = client.publish(topic, payload, qos=1)
            # paho queues QoS 1 messages while reconnecting (MQTT_ERR_NO_CONN) and sends them later
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                raise RuntimeError(f"publishing to {topic} failed: {mqtt.error_string(info.rc)}")
            sent += 1
            readings += n
        if progress is not None:
            progress(k + 1, total, readings, at)
    return sent, readings
