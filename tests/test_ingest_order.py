"""Out-of-order and duplicate deliveries through the whole pipeline (rules on): the same stored
data and the same warning transitions as the same readings delivered once, in order.

Duplicates need nothing: a redelivered reading lands on the same point and, in the rules
engine's windows, replaces itself. Readings out of order need `ingest.reorder_s`: they are held
that long before the rules see them, and the engine orders what it gets by event time.
"""

from __future__ import annotations

import queue
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import paho.mqtt.client as mqtt

from ews.config import (
    ChannelConfig,
    Config,
    InfluxConfig,
    IngestConfig,
    MqttConfig,
    NotifierConfig,
    RegistryConfig,
)
from ews.models import ReadingBatch
from ews.pipeline import Pipeline
from ews.regions import RegionRegistry
from ews.sensors import SensorRegistry
from ews.servers import LocalServers
from ingest.collector import Collector, _Lane, _Work
from ingest.process import MessageProcessor, Unregistered
from ingest.sink import Sink
from ingest.spool import Spool
from notifiers.lifecycle import Transition

from .conftest import COMM_A1
from .influxpoints import stored
from .test_ingest_spool import FakeInflux

STEP = 300_000  # five-minute gauges
GAUGES = ("RG-0001", "RG-0002")


def storm() -> list[tuple[str, int, float]]:
    """Four hours of rain on two gauges: 3-hour sums cross the orange and red lines, then ease."""
    end = (int(time.time() * 1000) // STEP) * STEP - STEP
    n = 48
    out = []
    for g, scale in zip(GAUGES, (1.0, 0.7), strict=True):
        for k in range(n):
            mm = 2.0 if k < 12 else 6.0 if k < 24 else 4.0 if k < 36 else 0.0
            out.append((g, end - (n - 1 - k) * STEP, round(mm * scale, 1)))
    return sorted(out, key=lambda r: (r[1], r[0]))


def run(servers: LocalServers, tmp: Path, name: str, deliveries: list[tuple[str, int, float]],
        reorder_s: float) -> tuple[set[tuple[str, int, float]], list[tuple[Any, ...]]]:
    db = f"order_{name}_{int(time.time())}"
    cfg = Config(
        mqtt=MqttConfig(port=servers.mqtt.port, client_id=f"order-{name}"),
        influxdb=InfluxConfig(url=servers.influx_url, database=db, flush_interval_s=0.01, batch_size=8),
        ingest=IngestConfig(reorder_s=reorder_s),
        registries=RegistryConfig.sample(),
        rules_profile="guangdong",
        state_dir=tmp / name,
        notifiers=NotifierConfig(channels=[ChannelConfig(name="console", type="console")]),
    )
    p = Pipeline(cfg)
    seen: list[Transition] = []
    p.listeners.append(seen.append)
    p.start()
    pub = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=f"order-pub-{name}")
    pub.connect("127.0.0.1", servers.mqtt.port)
    pub.loop_start()
    try:
        infos = []
        for sensor, ts, v in deliveries:
            s = p.sensors.get(sensor)
            infos.append(pub.publish(f"ews/{s.district}/{s.street}/{s.community}/rain/{sensor}",
                                     orjson.dumps({"ts": ts, "value": v}), qos=1))
            time.sleep(0.002)  # paced, so deliveries spread over many small batches
        for info in infos:
            info.wait_for_publish(5)
        deadline = time.monotonic() + 30
        while p.collector.stats["messages"] < len(deliveries) or not p.idle():
            assert time.monotonic() < deadline, "pipeline did not finish"
            time.sleep(0.05)
        points = set(stored(servers.influx_url, db))
    finally:
        pub.loop_stop()
        p.stop()
    # per subject in event-time order; how two gauges' transitions interleave is not a difference
    transitions = sorted((t.warning["subject"], t.warning["updated_event_ts_ms"], t.type, t.warning["rule"],
                          int(t.level_before), int(t.level_after), round(float(t.warning["value"]), 6))
                         for t in seen)
    return points, transitions


def test_out_of_order_and_duplicates_give_the_same_data_and_warnings(servers: LocalServers, tmp_path: Path) -> None:
    readings = storm()
    rng = random.Random(522)
    stored_a, warned_a = run(servers, tmp_path, "inorder", readings, reorder_s=0)
    assert stored_a == set(readings)
    kinds = {(w[2], w[5]) for w in warned_a}
    assert ("open", 3) in kinds or ("raise", 3) in kinds, warned_a  # the storm reaches orange
    assert any(w[2] == "lower" for w in warned_a), warned_a  # and eases off

    # redelivery: every reading once in order, then a third of them again, older than the newest
    again = rng.sample(readings, len(readings) // 3)
    stored_b, warned_b = run(servers, tmp_path, "redelivered", readings + again, reorder_s=0)
    assert stored_b == stored_a
    assert warned_b == warned_a

    # shuffled with duplicates, held 3 s for the rules (the whole delivery takes well under that)
    shuffled = readings + rng.sample(readings, len(readings) // 4)
    rng.shuffle(shuffled)
    stored_c, warned_c = run(servers, tmp_path, "shuffled", shuffled, reorder_s=3.0)
    assert stored_c == stored_a
    assert warned_c == warned_a


def test_rules_catch_up_on_queued_batches_in_one_step(
        mini_sensors: SensorRegistry, mini_regions: RegionRegistry, tmp_path: Path) -> None:
    """Batches queued for the rules are joined (same lane, in order) up to anything else, which
    is handled next in its turn: an unregistered-sensor note, a drill batch, the stop mark."""
    seen: list[tuple[list[int], bool]] = []
    col = Collector(MqttConfig(port=1, client_id="test-merge"), InfluxConfig(url="http://127.0.0.1:9"),
                    MessageProcessor(mini_sensors, mini_regions),
                    on_readings=lambda b: seen.append((b.sensor.tolist(), b.drill)),
                    ingest_cfg=IngestConfig(), spool_dir=tmp_path / "spool")
    notes: list[list[str]] = []
    col._unregistered = lambda rows: notes.append([u.sensor for u in rows])  # type: ignore[method-assign]

    def batch(*sensors: int, drill: bool = False) -> ReadingBatch:
        n = len(sensors)
        return ReadingBatch(np.asarray(sensors, np.int64), np.arange(n, dtype=np.int64), np.zeros(n), drill)

    items = [batch(1, 2), batch(3), batch(4), [Unregistered("X-1", "rain", COMM_A1, 1, 0.0)], batch(5),
             batch(6, drill=True), batch(7), None]
    col._to_rules_q = queue.Queue()  # all queued at once here, past the live bound
    for item in items:
        col._to_rules_q.put(item)
    col._rules_done = 0
    col._rules_loop()  # returns at the stop mark
    assert seen == [([1, 2, 3, 4], False), ([5], False), ([6], True), ([7], False)]
    assert notes == [["X-1"]]
    assert col._rules_done == 7


def test_writes_start_as_soon_as_decoded_and_batches_finish_as_soon_as_written(
        mini_sensors: SensorRegistry, mini_regions: RegionRegistry, tmp_path: Path) -> None:
    """A batch decoded while the one before it is still being written starts its own write at
    once (InfluxDB is not left with one request at a time); a batch with nobody behind it is
    finished (acknowledged, handed on) as soon as its write is done. Batches finish in order."""
    col = Collector(MqttConfig(port=1, client_id="test-pipelined"), InfluxConfig(url="http://127.0.0.1:9"),
                    MessageProcessor(mini_sensors, mini_regions), ingest_cfg=IngestConfig(),
                    spool_dir=tmp_path / "spool")
    gates = {k: threading.Event() for k in (b"1", b"2", b"3")}
    started: list[bytes] = []
    finished: list[bytes] = []
    db = FakeInflux()
    real_write = db.write

    def write(lines: bytes) -> None:  # answered only once its gate opens
        started.append(lines)
        assert gates[lines].wait(5)
        real_write(lines)

    db.write = write  # type: ignore[method-assign]
    col.sinks = {False: Sink(db, Spool(tmp_path / "s", 1 << 20), threading.Event())}

    def finish(work: _Work) -> None:  # stored, as the real one, then only recorded
        lane = work.lanes[0]
        assert col.sinks[False].finish(lane.lines, 1, lane.writing) == "written"
        finished.append(lane.lines)

    col._finish = finish  # type: ignore[method-assign]

    def work(lines: bytes) -> _Work:
        assert col._slots.acquire(timeout=1)  # as the decode thread does
        return _Work([_Lane(False, lines, 1, None)], [1], [0], 0)  # type: ignore[arg-type]

    def until(cond: Callable[[], bool]) -> bool:
        deadline = time.monotonic() + 5
        while not cond() and time.monotonic() < deadline:
            time.sleep(0.005)
        return cond()

    loop = threading.Thread(target=col._write_loop, daemon=True)
    loop.start()
    col._work.put(work(b"1"))
    assert until(lambda: started == [b"1"])
    time.sleep(0.05)  # the write thread finds nothing behind batch 1 and waits on it
    col._work.put(work(b"2"))
    assert until(lambda: started == [b"1", b"2"]), "batch 2 waited for batch 1's write"
    gates[b"2"].set()
    time.sleep(0.05)
    assert finished == []  # batch 2 is written, but batch 1 finishes first
    gates[b"1"].set()
    assert until(lambda: finished == [b"1", b"2"])
    col._work.put(work(b"3"))
    assert until(lambda: started[-1:] == [b"3"])
    gates[b"3"].set()
    assert until(lambda: finished == [b"1", b"2", b"3"]), "batch 3 waited for a batch behind it"
    col._work.put(None)
    loop.join(5)
    assert not loop.is_alive()
    col.sinks[False].close()
