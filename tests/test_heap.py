"""The long-lived heap is frozen after start-up and after a rules reload, and nothing frozen
is kept once it is garbage; batches' memory is mapped before the first batch and reused."""

from __future__ import annotations

import gc
import subprocess
import sys
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ews import heap
from ews.config import ChannelConfig, Config, InfluxConfig, MqttConfig, NotifierConfig, RegistryConfig
from ews.pipeline import Pipeline
from ews.servers import LocalServers
from ingest.collector import Collector
from ingest.process import MessageProcessor
from rules.runtime import RuleRuntime

from .test_reload import RULES_V1, config, registry, write


class Node:
    peer: Node | None = None


@pytest.fixture
def thawed() -> Iterator[None]:
    yield
    gc.unfreeze()  # leave the test process as it was


def test_settle_freezes_what_survives_and_frees_frozen_garbage_at_the_next_call(thawed: None) -> None:
    a, b = Node(), Node()
    a.peer, b.peer = b, a  # a cycle: only the collector can free it
    ref = weakref.ref(a)
    heap.settle()
    assert gc.get_freeze_count() > 0
    del a, b
    gc.collect()
    assert ref() is not None  # frozen: out of the collector's sight
    heap.settle()
    assert ref() is None


def test_a_rules_reload_settles_the_heap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(heap, "settle", lambda: calls.append("settle"))
    path = tmp_path / "rules.yaml"
    write(path, RULES_V1)
    rt = RuleRuntime(config(path), registry())
    old = rt.engine
    assert rt.reload() == [] and calls == []  # nothing changed: nothing replaced
    write(path, RULES_V1.replace("version: v1", "version: v2").replace("orange: 25", "orange: 15"))
    rt.reload()
    assert rt.engine is not old and calls == ["settle"]


# In a process of its own (the allocator's settings are the whole process's): a thread maps
# 16 MB, then makes and frees batch-like buffers, four of 1-3 MB alive at once, twenty times.
# Prints the page faults of the reserve and of the batches.
BATCHES = """
import resource, sys, threading
from ews import heap
if sys.argv[1] == "keep":
    assert heap.keep_freed_memory()
out = []
def work():
    faults = lambda: resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    f0 = faults()
    heap.reserve(16 << 20)
    f1 = faults()
    for i in range(20):
        bufs = [bytearray(n) for n in (3 << 20, 1 << 20, 2 << 20, (2 << 20) + i * 4096)]
        del bufs
    out.extend([f1 - f0, faults() - f1])
t = threading.Thread(target=work)
t.start()
t.join()
print(*out)
"""


def _faults(mode: str) -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-c", BATCHES, mode], capture_output=True, text=True, check=True)
    reserve, batches = map(int, out.stdout.split())
    return reserve, batches


def test_reserved_memory_is_reused_without_page_faults() -> None:
    reserve, batches = _faults("keep")
    assert reserve >= 0.9 * (16 << 20) // 4096  # every page of the reserve was mapped
    assert batches < 100, batches  # and the batches found them mapped
    reserve, batches = _faults("as-is")
    assert reserve == 0  # without the allocator keeping it, a reserve would only cost faults
    assert batches > 1000, batches  # the allocator's own way: faulted in and given back


def test_workers_started_ahead_wait_for_start_and_end_with_stop(
    servers: LocalServers, influx_db: str, mini_sensors: Any, mini_regions: Any, tmp_path: Path
) -> None:
    col = Collector(MqttConfig(port=servers.mqtt.port, client_id="heap-workers"),
                    InfluxConfig(url=servers.influx_url, database=influx_db),
                    MessageProcessor(mini_sensors, mini_regions), spool_dir=tmp_path / "spool")
    col.start_workers()
    col.start_workers()  # once only
    names = sorted(t.name for t in col._threads)
    assert names == ["ingest-decode", "ingest-rules", "ingest-write"]
    assert all(t.is_alive() for t in col._threads) and not col._gate.is_set()
    col.stop(drain_s=1.0)  # never started: the workers are let out, not left waiting
    assert not any(t.is_alive() for t in col._threads)
    assert "ingest-decode" not in {t.name for t in threading.enumerate()}


def test_the_pipeline_maps_memory_readies_its_database_and_settles_the_heap_before_it_connects(
    servers: LocalServers, influx_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    ready: list[bool] = []
    monkeypatch.setattr(heap, "settle", lambda: events.append("settle"))
    keep = heap.keep_freed_memory
    monkeypatch.setattr(heap, "keep_freed_memory", lambda: events.append("keep") or keep())
    workers = Collector.start_workers

    def start_workers(self: Collector) -> None:
        events.append("workers")
        workers(self)

    monkeypatch.setattr(Collector, "start_workers", start_workers)
    prepare = Collector.prepare

    def prepared(self: Collector) -> None:
        events.append("prepare")
        prepare(self)

    monkeypatch.setattr(Collector, "prepare", prepared)
    p = Pipeline(Config(
        mqtt=MqttConfig(port=servers.mqtt.port, client_id="heap-settle"),
        influxdb=InfluxConfig(url=servers.influx_url, database=influx_db),
        registries=RegistryConfig.sample(),
        state_dir=tmp_path / "state",
        notifiers=NotifierConfig(channels=[ChannelConfig(name="console", type="console")]),
    ))
    connect = p.collector.start

    def start() -> None:
        events.append("connect")
        # the database is there before the broker sends a backlog, which then need not wait for it
        databases = httpx.post(f"{servers.influx_url}/query", data={"q": "SHOW DATABASES"}).json()
        ready.append([influx_db] in databases["results"][0]["series"][0]["values"])
        connect()

    p.collector.start = start  # type: ignore[method-assign]
    p.start()
    try:
        # the second `workers` finds them running, the second `prepare` the database ready
        assert events == ["keep", "workers", "prepare", "settle", "connect", "workers", "prepare"]
        assert ready == [True]
        assert {"ingest-decode", "ingest-write", "ingest-rules"} <= {t.name for t in threading.enumerate()}
    finally:
        p.stop()
