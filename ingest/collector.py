"""The MQTT collector: receive, batch, store, acknowledge, hand on.

The paho network thread only appends to a queue. One worker thread takes batches, decodes and
validates them, writes accepted readings to InfluxDB, and only then acknowledges the messages to
the broker (QoS 1, manual ack, persistent session): a reading is never acknowledged before it
is stored, so a crash makes the broker redeliver it, and a redelivered duplicate lands on the
same series and timestamp. Rejections go to the dead-letter topic, a metric and a log line.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ews import metrics
from ews.config import InfluxConfig, MqttConfig, secret
from ews.models import ReadingBatch
from ingest.influx_v1 import InfluxV1, WriteError
from ingest.lineproto import LineBuilder
from ingest.process import MessageProcessor, Outcome
from ingest.reasons import Rejection

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Msg:
    topic: str
    payload: bytes
    mid: int
    qos: int
    generation: int


class Collector:
    def __init__(
        self,
        mqtt_cfg: MqttConfig,
        influx_cfg: InfluxConfig,
        processor: MessageProcessor,
        on_readings: Callable[[ReadingBatch], None] | None = None,
    ):
        self.cfg = mqtt_cfg
        self.influx_cfg = influx_cfg
        self.processor = processor
        self.builder = LineBuilder(processor.sensors)
        self.kind_of = [s.kind for s in processor.sensors.sensors]
        self.on_readings = on_readings
        self.influx = InfluxV1(
            influx_cfg.url, influx_cfg.database, influx_cfg.username, secret(influx_cfg.password_env),
            influx_cfg.timeout_s,
        )
        self._queue: deque[_Msg] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._generation = 0
        self._connected = threading.Event()
        self._worker: threading.Thread | None = None
        self.stats = {"messages": 0, "readings": 0, "rejected": 0, "batches": 0}
        self.client = self._make_client()

    # --- MQTT -------------------------------------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        c = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.cfg.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        if self.cfg.username:
            c.username_pw_set(self.cfg.username, secret(self.cfg.password_env))
        c.max_inflight_messages_set(1000)
        c.max_queued_messages_set(0)
        c.reconnect_delay_set(min_delay=1, max_delay=30)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        return c

    def _on_connect(self, client: mqtt.Client, _ud: Any, _flags: Any, rc: Any, _props: Any) -> None:
        if rc.is_failure:
            log.error("MQTT connection refused: %s", rc)
            return
        # a new connection: packet ids of messages received before it are no longer ours to ack
        self._generation += 1
        client.subscribe([(f, mqtt.SubscribeOptions(qos=1)) for f in self.cfg.subscriptions])
        self._connected.set()
        log.info("MQTT connected to %s:%d, subscribed %s", self.cfg.host, self.cfg.port, self.cfg.subscriptions)

    def _on_disconnect(self, _c: mqtt.Client, _ud: Any, _flags: Any, rc: Any, _props: Any) -> None:
        self._connected.clear()
        if not self._stop.is_set():
            log.warning("MQTT disconnected (%s); reconnecting with backoff", rc)

    def _on_message(self, _c: mqtt.Client, _ud: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            topic = msg._topic.decode("utf-8", errors="replace")
        self._queue.append(_Msg(topic, bytes(msg.payload), msg.mid, msg.qos, self._generation))
        self._wake.set()

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain)

    # --- lifecycle --------------------------------------------------------------------------

    def start(self, wait_connected_s: float = 10.0) -> None:
        if self.influx_cfg.create_database:
            self._retry_forever("create database", self.influx.create_database)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.cfg.session_expiry_s
        self.client.connect_async(
            self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s, clean_start=False, properties=props
        )
        self.client.loop_start()
        self._worker = threading.Thread(target=self._run, name="ingest-worker", daemon=True)
        self._worker.start()
        if not self._connected.wait(wait_connected_s):
            log.warning("MQTT broker %s:%d not reachable yet; still trying", self.cfg.host, self.cfg.port)

    def stop(self, drain_s: float = 10.0) -> None:
        """Process what is queued (up to drain_s), then disconnect."""
        deadline = time.monotonic() + drain_s
        while self._queue and time.monotonic() < deadline:
            time.sleep(0.02)
        self._stop.set()
        self._wake.set()
        if self._worker is not None:
            self._worker.join(timeout=drain_s)
        self.client.disconnect()
        self.client.loop_stop()
        self.influx.close()

    @property
    def pending(self) -> int:
        return len(self._queue)

    # --- worker -----------------------------------------------------------------------------

    def _take(self) -> list[_Msg]:
        if not self._queue:
            self._wake.wait(0.5)
            self._wake.clear()
        if not self._queue:
            return []
        # linger briefly at low rates so one HTTP write carries more than one reading
        linger_until = time.monotonic() + self.influx_cfg.flush_interval_s
        while len(self._queue) < self.influx_cfg.batch_size and time.monotonic() < linger_until:
            time.sleep(0.005)
        n = min(len(self._queue), self.influx_cfg.batch_size)
        return [self._queue.popleft() for _ in range(n)]

    def _run(self) -> None:
        while not (self._stop.is_set() and not self._queue):
            batch = self._take()
            metrics.QUEUE_DEPTH.set(len(self._queue))
            if not batch:
                continue
            try:
                self._handle(batch)
            except Exception:  # the worker must outlive any bug in one batch
                metrics.PIPELINE_ERRORS.labels("ingest").inc()
                log.exception("ingest batch of %d messages failed; they stay unacknowledged", len(batch))

    def _handle(self, batch: list[_Msg]) -> None:
        now_ms = int(time.time() * 1000)
        outcome = self.processor.process([(m.topic, m.payload) for m in batch], now_ms)
        acc = outcome.accepted
        if len(acc):
            lines = self.builder.build(
                acc.sensor, acc.ts_ms, acc.value,
                acc.battery if acc.has_health else None, acc.rssi if acc.has_health else None,
            )
            self._retry_forever("write to InfluxDB", lambda: self._write(lines))
        for r in outcome.rejections:
            self._reject(r)
        self._ack(batch)
        self._count(batch, outcome, now_ms)
        if len(acc) and self.on_readings is not None:
            try:
                self.on_readings(acc.to_batch())
            except Exception:
                metrics.PIPELINE_ERRORS.labels("rules").inc()
                log.exception("rules/warnings stage failed on a batch of %d readings", len(acc))

    def _write(self, lines: bytes) -> None:
        with metrics.WRITE_SECONDS.time():
            self.influx.write(lines)

    def _retry_forever(self, what: str, fn: Callable[[], None]) -> None:
        delay = 0.2
        while True:
            try:
                fn()
                return
            except WriteError as exc:
                metrics.WRITE_ERRORS.inc()
                if not exc.retryable:
                    # a 4xx on well-formed line protocol is a bug or a schema conflict; keep
                    # the messages unacknowledged and let the operator see it
                    log.error("%s failed and will not succeed by retrying: %s", what, exc)
                log.warning("%s failed (%s); retrying in %.1f s", what, exc, delay)
            except Exception as exc:
                metrics.WRITE_ERRORS.inc()
                log.warning("%s failed (%r); retrying in %.1f s", what, exc, delay)
            if self._stop.wait(delay):
                raise RuntimeError(f"stopped while trying to {what}")
            delay = min(delay * 2, 10.0)

    def _ack(self, batch: list[_Msg]) -> None:
        gen = self._generation
        for m in batch:
            if m.qos > 0 and m.generation == gen:
                self.client.ack(m.mid, m.qos)

    def _reject(self, r: Rejection) -> None:
        metrics.REJECTED.labels(r.reason.value).inc()
        log.warning("rejected %s on %s: %s; payload: %s", r.reason.value, r.topic, r.detail, r.excerpt(120))
        suffix = r.topic[4:] if r.topic.startswith("ews/") else r.topic.lstrip("/")
        body = orjson.dumps({
            "reason": r.reason.value, "detail": r.detail, "topic": r.topic, "index": r.index,
            "payload_excerpt": r.excerpt(512), "rejected_ts": int(time.time() * 1000),
        })
        self.client.publish(f"{self.cfg.dead_letter_prefix}/{r.reason.value}/{suffix}", body, qos=1)

    def _count(self, batch: list[_Msg], outcome: Outcome, now_ms: int) -> None:
        acc = outcome.accepted
        metrics.MESSAGES.inc(len(batch))
        metrics.BATCHES.inc()
        metrics.BATCH_SIZE.observe(len(batch))
        kinds: dict[str, int] = {}
        for i in acc.sensor:
            k = self.kind_of[i]
            kinds[k] = kinds.get(k, 0) + 1
        for k, n in kinds.items():
            metrics.READINGS.labels(k).inc(n)
        if len(acc):
            metrics.EVENT_LAG.observe(max(0.0, (now_ms - max(acc.ts_ms)) / 1000))
        self.stats["messages"] += len(batch)
        self.stats["readings"] += len(acc)
        self.stats["rejected"] += len(outcome.rejections)
        self.stats["batches"] += 1
