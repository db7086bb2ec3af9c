"""The long-lived heap is frozen after start-up and after a rules reload, and nothing frozen
is kept once it is garbage."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from ews import heap
from ews.config import ChannelConfig, Config, InfluxConfig, MqttConfig, NotifierConfig, RegistryConfig
from ews.pipeline import Pipeline
from ews.servers import LocalServers
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


def test_the_pipeline_settles_the_heap_before_it_connects(
    servers: LocalServers, influx_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    monkeypatch.setattr(heap, "settle", lambda: events.append("settle"))
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
        connect()

    p.collector.start = start  # type: ignore[method-assign]
    p.start()
    try:
        assert events == ["settle", "connect"]
    finally:
        p.stop()
