"""The MQTT collector: receive, batch, store, acknowledge, hand on.

Four threads, so that each stage works while the next one waits for I/O or the GIL:

- paho's network thread only appends (topic, payload, packet id, connection) to a queue;
- the decode thread takes a batch (up to `batch_size` messages or `batch_bytes`, growing to
  that from 64 KB after an idle spell, lingering at most `flush_interval_s` at low rates, and
  not once the broker's in-flight window is full: `ingest/window.py`), validates it against
  the registry into numpy columns and builds its line protocol, while the previous batch is
  still being written;
- the write thread makes the batch durable (InfluxDB within the deadline, else the fsync'ed
  spool: `ingest/sink.py`), publishes its rejections to the dead-letter topic, acknowledges
  all its messages to the broker in one packet, and only then hands the readings on; it starts
  writing the next batch before it waits for this one, so InfluxDB never idles between
  batches, and finishes batches in the order they arrived;
- the rules thread runs `on_readings` (the rules engine and the warning lifecycle), through
  the reorder buffer when `ingest.reorder_s` is set, and raises unregistered-sensor warnings;
  under load it takes several batches a step, waiting up to a tenth of a second for them.

Each hand-over is bounded (a few batches), so a slow stage holds the broker back instead of
filling memory; an acknowledged reading that the process dies before evaluating is in
InfluxDB, from which the rules rebuild their state at start-up.

A message is never acknowledged before its readings are durable (QoS 1, manual ack,
persistent session), so a crash makes the broker redeliver it, and a redelivered duplicate
lands on the same series and timestamp. Packet ids of an earlier connection are never
acknowledged on a later one: the broker redelivers those messages instead.

Drill readings (topics under `mqtt.drill_root`) are read as the live topic they mirror, stored
in their own database with their own spool, and reach the rules as drill batches.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import paho.mqtt.client as mqtt

from ews import heap, metrics, statelock
from ews.config import InfluxConfig, IngestConfig, MqttConfig
from ews.levels import Level
from ews.models import LevelChange, ReadingBatch
from ingest.influx import make_writer
from ingest.lineproto import LineBuilder, unregistered_lines
from ingest.loglimit import LogLimit
from ingest.mqttclient import Client, ack_many, connect_async, honour_receive_maximum, make_client
from ingest.process import MessageProcessor, Outcome, Unregistered
from ingest.reasons import Reason, Rejection
from ingest.reorder import ReorderBuffer
from ingest.sink import Sink, Stopped, Writing
from ingest.spool import DRILL_FOLDER, Spool
from ingest.topics import topic_text
from ingest.window import InflightWindow

log = logging.getLogger(__name__)

# topic as paho received it (bytes), payload, packet id (0 under QoS 0), connection generation
Msg = tuple[bytes, bytes, int, int]
UNREGISTERED_RULE = "unregistered_sensor"
MAX_UNREGISTERED_WARNED = 10_000  # distinct unregistered ids warned about per process
MERGE_READINGS = 100_000  # queued batches the rules take in one step, at most
# under load the rules wait for a step of STEP_READINGS: a step costs them mostly per batch and
# per kind, hardly per reading, so three batches in one step cost little more than one. They wait
# only while the first batch is one the decode thread took full (STEP_FROM readings or more: a
# high rate, not a trickle, whose latency stays as it was), only while more readings are on their
# way to them, and at most STEP_WAIT_S after that batch came (docs/decisions.md)
STEP_READINGS, STEP_FROM, STEP_WAIT_S = 60_000, 10_000, 0.1
STEP_POLL_S = 0.005  # how often a waiting step looks whether more are still on their way
# batches closed by a full in-flight window within WINDOW_WARN_S that make it a throughput limit
# worth a warning (a fleet publishing in bursts closes one a burst)
WINDOW_WARN_BATCHES, WINDOW_WARN_S = 20, 10.0
# deliveries that start this soon after we let the broker send more (our connect or an ack) are
# the broker's answer to it, not a fleet's own burst: only those tell the window
RELEASE_ECHO_S = 0.02
# a backlog's first batch after an idle spell, in payload bytes; each next one twice the one
# before, up to `batch_bytes`: InfluxDB gets the first readings as soon as they are decoded
# instead of idling while a whole batch arrives and is decoded (docs/performance.md)
FIRST_BATCH_BYTES = 64 * 1024
# a finished write wakes the write thread through its future's callback; this is the safety net
WRITE_POLL_S = 0.05
# memory each worker maps before the first batch, in `batch_bytes` of payload (ews/heap.py):
# the decode thread makes a batch's joined payloads, columns and line protocol, about five times
# its payload, for up to three batches in flight; the write thread copies a batch's line
# protocol into requests; the rules' arrays settle at about 6 MB for 1 MB batches
RESERVE_BATCHES = {"ingest-decode": 16, "ingest-write": 4, "ingest-rules": 8}


@dataclass(slots=True)
class _Lane:
    drill: bool
    lines: bytes
    readings: int
    outcome: Outcome
    writing: Writing | None = None  # its write, while in flight


class _WriteDone:
    """Put on the work queue when a background write finishes, to wake the write thread."""


WRITE_DONE = _WriteDone()


@dataclass(slots=True)
class _Work:
    lanes: list[_Lane]
    mids: list[int]
    generations: list[int]
    now_ms: int


class Collector:
    def __init__(
        self,
        mqtt_cfg: MqttConfig,
        influx_cfg: InfluxConfig,
        processor: MessageProcessor,
        on_readings: Callable[[ReadingBatch], None] | None = None,
        ingest_cfg: IngestConfig | None = None,
        spool_dir: Path | None = None,
        on_device: Callable[[list[LevelChange]], Any] | None = None,
    ):
        self.cfg = mqtt_cfg
        self.influx_cfg = influx_cfg
        self.ingest_cfg = ingest_cfg = ingest_cfg or IngestConfig()
        self.processor = processor
        metrics.initialise(metrics.REJECTED, *((r.value,) for r in Reason))
        self.builder = LineBuilder(processor.sensors)
        kinds = sorted(processor.sensors.kinds)
        self._kind_names = kinds
        self._kind_of = np.array([kinds.index(s.kind) for s in processor.sensors.sensors], np.int64)
        self.on_readings = on_readings
        self.on_device = on_device
        self._stop = threading.Event()
        folder = Path(spool_dir or ingest_cfg.spool_dir or Path(".state/pipeline/spool"))
        # before the spool reads its folder (and deletes what looks like a crash's leftovers)
        self._folder = statelock.claim(folder, "spool folder")
        self.sinks = {False: self._sink(influx_cfg.database, folder, "main")}
        # which broker kept a session for us before: a connect without it then means loss
        self._session_file = folder / "mqtt-session"
        if mqtt_cfg.drill_root:
            # drill readings are kept apart, never in the real series
            self.sinks[True] = self._sink(influx_cfg.drill_db, folder / DRILL_FOLDER, "drill")
        self._drill_prefix = f"{mqtt_cfg.drill_root}/".encode() if mqtt_cfg.drill_root else None
        self._queue: deque[Msg] = deque()
        self._received_bytes = 0  # written by the network thread only
        self._taken_bytes = 0  # written by the decode thread only
        self._taken = 0  # messages taken by the decode thread
        self._done = 0  # messages finished by the write thread
        self._idle = False
        self._batch_limit = FIRST_BATCH_BYTES  # payload bytes the next batch may take
        self._idle_from: float | None = None  # since when the decode thread has found nothing
        self._wake = threading.Event()
        self._work: queue.Queue[_Work | _WriteDone | None] = queue.Queue()
        # at most three batches between taking and finishing: two being written (one finishing,
        # one started), one decoded meanwhile
        self._slots = threading.Semaphore(3)
        self._generation = 0
        # the broker's in-flight window (ingest/window.py): QoS 1 messages received and
        # acknowledged, counted since the start; `_unacked_base` is what an earlier connection
        # left unacknowledged (never acknowledged on this one)
        self._window = InflightWindow(mqtt_cfg.receive_maximum if mqtt_cfg.protocol == "5" else None)
        self._received_q1 = 0  # network thread
        self._acked_q1 = 0  # write thread
        self._unacked_base = 0
        self._released_at = 0.0  # monotonic time of our last connect or ack
        self._window_closes: deque[float] = deque(maxlen=WINDOW_WARN_BATCHES)
        self._window_warned_at = -1e9
        # set on the SUBACK of the current connection: only then does a reading published now reach us
        self._subscribed = threading.Event()
        self._subscribe_mid: int | None = None
        self._threads: list[threading.Thread] = []
        self._gate = threading.Event()  # set by `start`: the workers may take batches
        self._prepared = False  # the live database created and its retention read (`prepare`)
        self._warned: set[str] = set()
        self._log_limit = LogLimit()
        hold = ingest_cfg.reorder_s
        self._reorder = {d: ReorderBuffer(hold, d) for d in (False, True)} if hold > 0 else None
        # stored readings on their way to the rules; bounded, so slow rules hold the broker back
        # (a few batches: behind, the rules take them all in one step)
        self._to_rules_q: queue.Queue[ReadingBatch | list[Unregistered] | None] = queue.Queue(maxsize=6)
        self._to_rules = 0  # readings handed over (write thread)
        self._rules_done = 0  # readings evaluated (rules thread)
        self.stats = {"messages": 0, "readings": 0, "rejected": 0, "batches": 0, "spooled": 0, "late": 0,
                      "unregistered": 0}
        self.client = make_client(mqtt_cfg)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        if isinstance(self.client, Client):
            self.client.on_publish_raw = self._on_publish_raw

    def _sink(self, database: str, folder: Path, target: str) -> Sink:
        spool = Spool(folder, self.ingest_cfg.spool_max_bytes, self.ingest_cfg.spool_warn_fraction, target)
        return Sink(make_writer(self.influx_cfg, database), spool, self._stop,
                    create_database=self.influx_cfg.create_database,
                    concurrency=self.influx_cfg.write_concurrency)

    # --- MQTT (network thread) ----------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, _ud: Any, _flags: Any, rc: Any, props: Any) -> None:
        if rc.is_failure:
            log.error("MQTT connection refused: %s", rc)
            return
        # a new connection: packet ids of messages received before it are no longer ours to ack
        self._generation += 1
        try:
            honour_receive_maximum(client, props)
        except Exception:  # raised out of a paho callback, it would end the network thread and ingest
            metrics.PIPELINE_ERRORS.labels("ingest").inc()
            log.exception("reading the broker's CONNACK failed; keeping our own publishing limits")
        self._unacked_base = self._received_q1 - self._acked_q1
        self._window.forget()
        self._released_at = time.monotonic()
        metrics.INFLIGHT_WINDOW.set(self._window.limit or 0)
        resumed = bool(getattr(_flags, "session_present", False))
        if not resumed and (self._generation > 1 or self._had_session()):
            metrics.SESSIONS_LOST.inc()
            log.error("the broker at %s:%d had not kept this pipeline's session (%s): what it was sent for us while "
                      "we were away is lost at the broker; check that it keeps sessions and their messages across "
                      "restarts (Mosquitto: persistence, persistent_client_expiration; EMQX: session expiry)",
                      self.cfg.host, self.cfg.port, self.cfg.client_id)
        self._subscribe_mid = client.subscribe([(f, 1) for f in self.subscriptions])[1]
        log.info("MQTT connected to %s:%d (MQTT %s, %s), subscribing %s", self.cfg.host, self.cfg.port,
                 self.cfg.protocol, "session resumed" if resumed else "new session", self.subscriptions)
        self._note_session()

    def _on_subscribe(self, _c: mqtt.Client, _ud: Any, mid: int, codes: list[Any], _props: Any) -> None:
        if mid != self._subscribe_mid:
            return
        # a filter the broker's ACL denies is refused here and only here: nothing under it ever
        # arrives, and the connection looks healthy
        answered = list(zip(self.subscriptions, codes, strict=False))
        refused = [(f, code) for f, code in answered if code.is_failure]
        metrics.SUBSCRIPTIONS_REFUSED.set(len(refused))
        for f, code in refused:
            log.error("the MQTT broker at %s:%d refused the subscription %s (%s): no reading under it reaches "
                      "the pipeline; check that its ACL lets %s read it", self.cfg.host, self.cfg.port, f, code,
                      self.cfg.username or self.cfg.client_id)
        # from here on, what is published under these reaches us (tools starting the pipeline wait for this line)
        log.info("MQTT subscribed to %s", [f for f, code in answered if not code.is_failure])
        self._subscribed.set()

    @property
    def subscribed(self) -> bool:
        """Connected, and the broker has answered this connection's subscription."""
        return self._subscribed.is_set()

    def _session_key(self) -> str:
        return f"{self.cfg.client_id} {self.cfg.host}:{self.cfg.port}\n"

    def _had_session(self) -> bool:
        """Whether an earlier run had a session with this broker under this client id."""
        try:
            return self._session_file.read_text() == self._session_key()
        except OSError:
            return False

    def _note_session(self) -> None:
        if not self._had_session():
            try:
                self._session_file.write_text(self._session_key())
            except OSError as exc:  # only the check above is lost
                log.warning("could not note the MQTT session in %s: %s", self._session_file, exc)

    @property
    def subscriptions(self) -> list[str]:
        """The configured filters and, for drills, the same filters under the drill root."""
        root = self.cfg.drill_root
        mirrored = [f"{root}/{f[4:]}" for f in self.cfg.subscriptions if root and f.startswith("ews/")]
        return [*self.cfg.subscriptions, *mirrored]

    def _on_disconnect(self, _c: mqtt.Client, _ud: Any, _flags: Any, rc: Any, _props: Any) -> None:
        self._subscribed.clear()
        if not self._stop.is_set():
            log.warning("MQTT disconnected (%s); reconnecting with backoff", rc)

    def _on_message(self, _c: mqtt.Client, _ud: Any, msg: mqtt.MQTTMessage) -> None:
        # the raw topic bytes: `msg.topic` would decode them on every access
        payload = bytes(msg.payload) if msg.payload.__class__ is not bytes else msg.payload
        self._on_publish_raw(msg._topic, payload, msg.mid if msg.qos else 0)

    def _on_publish_raw(self, topic: bytes, payload: bytes, mid: int) -> None:
        self._queue.append((topic, payload, mid, self._generation))
        self._received_bytes += len(payload)
        if mid:
            self._received_q1 += 1
        if self._received_bytes - self._taken_bytes > self.ingest_cfg.queue_max_bytes:
            self._backpressure()
        if self._idle:
            self._wake.set()

    def _backpressure(self) -> None:
        # not reading the socket makes TCP hold the broker back; nothing is lost or acked
        t0 = time.monotonic()
        while (self._received_bytes - self._taken_bytes > self.ingest_cfg.queue_max_bytes
               and not self._stop.is_set()):
            self._wake.set()
            time.sleep(0.005)
        metrics.BACKPRESSURE_SECONDS.inc(time.monotonic() - t0)

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain)

    # --- lifecycle ------------------------------------------------------------------------------

    def start_workers(self) -> None:
        """Start the decode, write and rules threads ahead of `start` (the pipeline does so before
        its rules are rebuilt): each first maps the memory its batches will use (ews/heap.py),
        then waits for `start` to let it in."""
        if self._threads:
            return
        batch = self.influx_cfg.batch_bytes
        for name, fn in (("ingest-decode", self._decode_loop), ("ingest-write", self._write_loop),
                         ("ingest-rules", self._rules_loop)):
            t = threading.Thread(target=self._worker, args=(fn, RESERVE_BATCHES[name] * batch), name=name,
                                 daemon=True)
            t.start()
            self._threads.append(t)

    def _worker(self, loop: Callable[[], None], reserve_bytes: int) -> None:
        heap.reserve(reserve_bytes)
        self._gate.wait()
        loop()

    def prepare(self) -> None:
        """Create the live database and read its retention, once (drill databases: when used).
        The pipeline does it before its rules are rebuilt, well ahead of the connect, so that a
        restart's backlog is decoded as soon as the broker sends it instead of waiting behind a
        CREATE DATABASE (docs/decisions.md). `start` does it, while the broker connects, when
        nobody has."""
        if self._prepared:
            return
        self._prepared = True
        sink = self.sinks[False]
        sink.prepare()
        keep = sink.retention_ms
        if keep is not None and keep < self.processor.allowed_lateness_ms:
            log.warning("InfluxDB keeps readings for %g h, less than the allowed lateness of %g h: readings "
                        "between the two are rejected as beyond_retention, not evaluated; lengthen the "
                        "retention policy", keep / 3_600_000, self.processor.allowed_lateness_ms / 3_600_000)

    def start(self, wait_subscribed_s: float = 10.0) -> None:
        self.start_workers()
        connect_async(self.client, self.cfg)
        self.client.loop_start()
        self.prepare()  # the workers wait for the retention: a reading beyond it is not written
        self._gate.set()
        if not self._subscribed.wait(wait_subscribed_s):
            log.warning("MQTT broker %s:%d not reachable yet, or not answering our subscription; still trying",
                        self.cfg.host, self.cfg.port)

    def stop(self, drain_s: float = 10.0) -> None:
        """Finish what was received (up to drain_s), then disconnect; the rest stays unacked."""
        deadline = time.monotonic() + drain_s
        while self.pending and time.monotonic() < deadline:
            time.sleep(0.02)
        self._stop.set()
        self._wake.set()
        self._gate.set()  # workers started but never let in end at once
        for t in self._threads:
            t.join(timeout=max(1.0, deadline - time.monotonic()))
        self.client.disconnect()
        self.client.loop_stop()
        for sink in self.sinks.values():
            sink.close()
        statelock.release(self._folder)

    @property
    def pending(self) -> int:
        """Messages received and not yet finished (stored, acknowledged, evaluated)."""
        return self._before_rules() + self._to_rules - self._rules_done

    def _before_rules(self) -> int:
        """Messages received and not yet handed to the rules (queued, decoded or being written)."""
        return len(self._queue) + self._taken - self._done

    # --- decode thread --------------------------------------------------------------------------

    def _take(self) -> list[Msg]:
        q = self._queue
        cfg = self.influx_cfg
        if not q:
            self._idle = True
            if self._idle_from is None:
                self._idle_from = time.monotonic()
            if not q:
                self._wake.wait(0.2)
            self._wake.clear()
            self._idle = False
            if not q:
                return []
        if self._idle_from is not None:
            # nothing came for longer than a batch lingers: what comes now may be a backlog
            if time.monotonic() - self._idle_from >= cfg.flush_interval_s:
                self._batch_limit = FIRST_BATCH_BYTES
            self._idle_from = None
        most = min(self._batch_limit, cfg.batch_bytes)
        self._batch_limit = min(2 * most, cfg.batch_bytes)
        self._linger(most)
        metrics.INFLIGHT_WINDOW.set(self._window.limit or 0)  # learned, or forgotten, while lingering
        out: list[Msg] = []
        size = 0
        while q and len(out) < cfg.batch_size and size < most:
            m = q.popleft()
            out.append(m)
            size += len(m[1])
        self._taken_bytes += size
        self._taken += len(out)
        return out

    def _linger(self, most: int) -> None:
        """Wait briefly at low rates so one write carries more than a few readings: until the
        batch is full (`most` payload bytes), the broker's in-flight window is (nothing more can
        come before we acknowledge), or `flush_interval_s` has passed."""
        cfg = self.influx_cfg
        q = self._queue
        start = time.monotonic()
        until = start + cfg.flush_interval_s
        seen, seen_at = self._received_q1, start
        answer = start - self._released_at < RELEASE_ECHO_S  # these deliveries answer our ack
        while (len(q) < cfg.batch_size and self._received_bytes - self._taken_bytes < most
               and not self._stop.is_set()):
            unacked = self._received_q1 - self._acked_q1 - self._unacked_base
            if self._window.full(unacked):
                self._window_closed(answer)
                return
            now = time.monotonic()
            if now >= until:
                # deliveries that answered our ack, stopped in the first quarter of the linger
                # and stayed stopped: the broker is waiting for our acknowledgements
                if (answer and seen_at - start <= cfg.flush_interval_s / 4
                        and (w := self._window.stalled(unacked))):
                    log.info("MQTT deliveries stop at %d unacknowledged messages: taking that as the broker's "
                             "in-flight window, batches close there instead of lingering", w)
                return
            if self._received_q1 != seen:
                seen, seen_at = self._received_q1, now
            # closer to a window that closes batches, look more often: it fills within a millisecond
            limit = self._window.limit
            time.sleep(0.0005 if limit is not None and limit - unacked < cfg.batch_size else 0.002)

    def _window_closed(self, answer: bool) -> None:
        metrics.WINDOW_CLOSED.inc()
        if not answer:
            return  # a fleet's burst that filled the learned count, not a broker holding a backlog
        now = time.monotonic()
        closes = self._window_closes
        closes.append(now)
        if (len(closes) == closes.maxlen and now - closes[0] < WINDOW_WARN_S
                and now - self._window_warned_at > 600):
            self._window_warned_at = now
            log.warning("the MQTT broker sends at most %d unacknowledged messages (its in-flight window), "
                        "so every batch waits for the one before it to be stored: %d batches in %.1f s "
                        "closed there. Raise it to at least %d (Mosquitto max_inflight_messages, EMQX "
                        "mqtt.max_inflight; docs/operations.md)",
                        self._window.limit, len(closes), now - closes[0], 3 * self.influx_cfg.batch_size)

    def _decode_loop(self) -> None:
        while not (self._stop.is_set() and not self._queue):
            if not self._slots.acquire(timeout=0.2):
                continue
            batch = self._take()
            metrics.QUEUE_DEPTH.set(len(self._queue))
            metrics.QUEUE_BYTES.set(self._received_bytes - self._taken_bytes)
            if not batch:
                self._slots.release()
                continue
            try:
                self._work.put(self._prepare(batch))
            except Exception:  # the worker must outlive any bug in one batch
                metrics.PIPELINE_ERRORS.labels("ingest").inc()
                log.exception("ingest batch of %d messages failed; they stay unacknowledged", len(batch))
                self._done += len(batch)
                self._slots.release()
        self._work.put(None)

    def _prepare(self, batch: list[Msg]) -> _Work:
        now_ms = int(time.time() * 1000)
        prefix = self._drill_prefix
        lanes = []
        if prefix is not None and any(m[0].startswith(prefix) for m in batch):
            # a drill topic is read as the live topic it mirrors: ews-drill/440106/... -> ews/440106/...
            cut = len(prefix)
            real = [m for m in batch if not m[0].startswith(prefix)]
            drill = [(b"ews/" + m[0][cut:], m[1]) for m in batch if m[0].startswith(prefix)]
            if real:
                lanes.append(self._lane(real, False, now_ms))
            lanes.append(self._lane(drill, True, now_ms))
        else:
            lanes.append(self._lane(batch, False, now_ms))
        return _Work(lanes, [m[2] for m in batch], [m[3] for m in batch], now_ms)

    def _lane(self, msgs: list[Any], drill: bool, now_ms: int) -> _Lane:
        keep = self.sinks[drill].retention_ms
        try:
            o = self.processor.process(msgs, now_ms, keep, live=not drill)
        except Exception:
            o = self._isolate(msgs, now_ms, keep, drill)
        lines = self.builder.build(o.sensor, o.ts_ms, o.value, o.battery, o.rssi)
        if o.unregistered:
            lines += unregistered_lines([(u.sensor, u.kind, u.community, u.ts_ms, u.value) for u in o.unregistered])
        return _Lane(drill, lines, len(o) + len(o.unregistered), o)

    def _isolate(self, msgs: list[Any], now_ms: int, keep: int | None, drill: bool) -> Outcome:
        """A batch whose handling raised (a bug): each message is tried alone, the ones that
        raise are rejected as `processing_failed` and acknowledged, and the rest of the batch
        goes on, instead of every message of it staying unacknowledged and unevaluated (and
        failing again, all together, when the broker redelivers them)."""
        failed: dict[int, Exception] = {}
        for i, m in enumerate(msgs):
            try:
                self.processor.process([m], now_ms, keep, live=not drill)
            except Exception as exc:
                failed[i] = exc
        metrics.PIPELINE_ERRORS.labels("ingest").inc()
        log.error("handling a batch of %d messages failed; %d of them fail alone and are rejected as %s, "
                  "the rest go on", len(msgs), len(failed), Reason.PROCESSING_FAILED,
                  exc_info=next(iter(failed.values()), None))
        o = self.processor.process([m for i, m in enumerate(msgs) if i not in failed], now_ms, keep, live=not drill)
        for i, err in failed.items():
            o.rejections.append(Rejection(Reason.PROCESSING_FAILED, f"handling it raised {err!r}",
                                          topic_text(msgs[i][0]), msgs[i][1]))
        return o

    # --- write thread ---------------------------------------------------------------------------

    def _write_loop(self) -> None:
        # one batch in flight while the next is started: its writes overlap the previous
        # batch's last request, and batches still finish (ack, hand on) in arrival order
        pending: _Work | None = None
        while True:
            try:
                work = self._work.get(timeout=0.5) if pending is None else self._next_or_done(pending)
            except queue.Empty:
                if pending is not None:
                    self._complete(pending)
                    pending = None
                    continue
                for sink in self.sinks.values():
                    try:
                        sink.drain()
                    except Exception:
                        log.exception("spool replay failed")
                continue
            if work is WRITE_DONE:
                continue  # of a batch already completed
            if work is None:
                if pending is not None:
                    self._complete(pending)
                self._to_rules_q.put(None)
                return
            assert isinstance(work, _Work)
            for lane in work.lanes:
                if lane.readings:
                    lane.writing = self.sinks[lane.drill].begin(lane.lines)
                    for f in lane.writing.parts if lane.writing else ():
                        f.add_done_callback(self._written)
            if pending is not None:
                self._complete(pending)
            pending = work

    def _next_or_done(self, pending: _Work) -> _Work | None:
        """The next batch as soon as it is decoded, so its write starts while `pending`'s is
        still going; Empty once `pending`'s writes are all done (or it must take the careful
        path), so its acknowledgement does not wait for the next batch."""
        while True:
            done = all(lane.writing is None or lane.writing.done() for lane in pending.lanes)
            try:
                item = self._work.get_nowait() if done else self._work.get(timeout=WRITE_POLL_S)
            except queue.Empty:
                if done:
                    raise
                continue
            if not isinstance(item, _WriteDone):
                return item

    def _written(self, _f: object) -> None:
        self._work.put(WRITE_DONE)

    def _complete(self, work: _Work) -> None:
        try:
            self._finish(work)
        except Stopped:
            log.warning("stopped before %d messages were stored; the broker redelivers them", len(work.mids))
        except Exception:
            metrics.PIPELINE_ERRORS.labels("ingest").inc()
            log.exception("storing a batch of %d messages failed; they stay unacknowledged", len(work.mids))
        finally:
            self._done += len(work.mids)
            self._slots.release()

    def _finish(self, work: _Work) -> None:
        for lane in work.lanes:
            if lane.readings and self.sinks[lane.drill].finish(lane.lines, lane.readings, lane.writing) == "spooled":
                self.stats["spooled"] += lane.readings
        for lane in work.lanes:
            for r in lane.outcome.rejections:
                self._reject(r, lane.drill)
        self._ack(work)
        for lane in work.lanes:
            self._count(lane, work.now_ms)
        self.stats["messages"] += len(work.mids)
        self.stats["batches"] += 1
        metrics.MESSAGES.inc(len(work.mids))
        metrics.BATCHES.inc()
        metrics.BATCH_SIZE.observe(len(work.mids))
        for lane in work.lanes:
            self._hand_on(lane)

    def _ack(self, work: _Work) -> None:
        gen = self._generation
        mids = [m for m, g in zip(work.mids, work.generations, strict=True) if m and g == gen]
        self._acked_q1 += len(mids)  # before the ack: the broker may answer it with new deliveries at once
        ack_many(self.client, mids)
        if mids:
            self._released_at = time.monotonic()
        metrics.ACKS.inc(len(mids))

    def _hand_on(self, lane: _Lane) -> None:
        """Stored and acknowledged: on to the rules thread (which may wait; the next batch is
        written meanwhile). A full hand-over queue makes this wait, and the broker with it."""
        o = lane.outcome
        if self.on_readings is not None and o.evaluate.any():
            batch = o.for_rules(lane.drill)
            self._to_rules += len(batch)
            self._to_rules_q.put(batch)
        if o.unregistered and not lane.drill:
            # a drill's unregistered sensor is stored in the drill database, but warns nobody
            self._to_rules_q.put(o.unregistered)

    # --- rules thread ---------------------------------------------------------------------------

    def _rules_loop(self) -> None:
        carry: list[ReadingBatch | list[Unregistered] | None] = []  # taken while merging, not yet handled
        while True:
            timeout = 0.5
            if self._reorder:
                due = [t for b in self._reorder.values() if (t := b.next_due()) is not None]
                if due:
                    timeout = min(timeout, max(0.0, min(due) - time.monotonic()))
            if carry:
                item = carry.pop()
            else:
                try:
                    item = self._to_rules_q.get(timeout=timeout)
                except queue.Empty:
                    self._release()
                    continue
            if item is None:
                self._release(everything=True)
                return
            try:
                if isinstance(item, ReadingBatch):
                    if self._reorder:
                        self._reorder[item.drill].add(item, time.monotonic())
                        self._release()
                    else:
                        self._evaluate(self._merged(item, carry))
                else:
                    self._unregistered(item)
            except Exception:  # the thread must outlive any bug in one batch
                metrics.PIPELINE_ERRORS.labels("rules").inc()
                log.exception("handing %s to the rules failed", type(item).__name__)

    def _merged(self, batch: ReadingBatch, carry: list[ReadingBatch | list[Unregistered] | None]) -> ReadingBatch:
        """The batch joined by the batches queued behind it (same lane), and under load by those
        that come within STEP_WAIT_S while more are on their way; the first item that cannot
        join is put in `carry`. When the rules fall behind they catch up in larger steps: their
        cost is mostly per batch and per kind, hardly per reading."""
        parts = [batch]
        size = len(batch)
        until = time.monotonic() + STEP_WAIT_S if size >= STEP_FROM else 0.0
        while size < MERGE_READINGS:
            try:
                nxt = self._to_rules_q.get_nowait()
            except queue.Empty:
                wait = until - time.monotonic()
                if size >= STEP_READINGS or wait <= 0 or not self._before_rules():
                    break
                try:
                    nxt = self._to_rules_q.get(timeout=min(wait, STEP_POLL_S))
                except queue.Empty:
                    continue
            if not isinstance(nxt, ReadingBatch) or nxt.drill != batch.drill:
                carry.append(nxt)
                break
            parts.append(nxt)
            size += len(nxt)
        if len(parts) == 1:
            return batch
        return ReadingBatch(np.concatenate([p.sensor for p in parts]), np.concatenate([p.ts_ms for p in parts]),
                            np.concatenate([p.value for p in parts]), batch.drill)

    def _evaluate(self, batch: ReadingBatch) -> None:
        assert self.on_readings is not None
        try:
            self.on_readings(batch)
        except Exception:
            metrics.PIPELINE_ERRORS.labels("rules").inc()
            log.exception("rules/warnings stage failed on a batch of %d readings", len(batch))
        finally:
            self._rules_done += len(batch)

    def _release(self, everything: bool = False) -> None:
        """Hand the readings the reorder buffers let go of to the rules."""
        if not self._reorder:
            return
        now = time.monotonic()
        for buffer in self._reorder.values():
            batch = buffer.release(now, everything)
            if batch is not None and len(batch):
                self._evaluate(batch)

    def _unregistered(self, rows: list[Unregistered]) -> None:
        changes = []
        for u in rows:
            key = u.sensor
            if key in self._warned or len(self._warned) >= MAX_UNREGISTERED_WARNED:
                continue
            self._warned.add(key)
            log.warning("unregistered sensor %s (%s) publishes in community %s; its readings are stored "
                        "under measurement 'unregistered'", u.sensor, u.kind, u.community)
            unit = self.processor.sensors.kinds[u.kind].unit
            changes.append(LevelChange(
                rule_id=UNREGISTERED_RULE, rule_version="1", kind="device", subject=u.sensor,
                community=u.community, measure=UNREGISTERED_RULE, unit=unit, before=Level.NONE,
                after=Level.BLUE, value=u.value, threshold=None, event_ts_ms=u.ts_ms,
                readings=[(u.ts_ms, u.value)], rule_name="未登记传感器上报数据",
            ))
        if changes and self.on_device is not None:
            try:
                self.on_device(changes)
            except Exception:
                metrics.PIPELINE_ERRORS.labels("device").inc()
                log.exception("could not raise %d unregistered-sensor warnings", len(changes))

    def _reject(self, r: Rejection, drill: bool) -> None:
        if drill:
            r = dataclasses.replace(r, topic=f"{self.cfg.drill_root}/{r.topic[4:]}")
        metrics.REJECTED.labels(r.reason.value).inc()
        if self._log_limit.allow(r.reason.value):
            log.warning("rejected %s on %s: %s; payload: %s", r.reason.value, r.topic, r.detail, r.excerpt(120))
        suffix = r.topic[4:] if r.topic.startswith("ews/") else r.topic.lstrip("/")
        body = orjson.dumps({
            "reason": r.reason.value, "detail": r.detail, "topic": r.topic, "index": r.index,
            "payload_excerpt": r.excerpt(512), "rejected_ts": int(time.time() * 1000),
        })
        self.client.publish(f"{self.cfg.dead_letter_prefix}/{r.reason.value}/{suffix}", body, qos=1)

    def _count(self, lane: _Lane, now_ms: int) -> None:
        o = lane.outcome
        self.stats["readings"] += lane.readings
        self.stats["rejected"] += len(o.rejections)
        late = o.late
        self.stats["late"] += late
        self.stats["unregistered"] += len(o.unregistered)
        if late:
            metrics.LATE_STORED.inc(late)
        if o.unregistered:
            metrics.UNREGISTERED.inc(len(o.unregistered))
        if len(o):
            counts = np.bincount(self._kind_of[o.sensor], minlength=len(self._kind_names))
            for k in np.flatnonzero(counts):
                metrics.READINGS.labels(self._kind_names[k]).inc(int(counts[k]))
            if not lane.drill:  # a drill replays an old storm: late by design, not a late pipeline
                metrics.EVENT_LAG.observe(max(0.0, (now_ms - int(o.ts_ms.max())) / 1000))
