"""The rules thread's steps: under load it waits a little to take several batches at once (a
step costs the rules mostly per batch and per kind), at a trickle it never waits, and nothing
it waits for holds back a stop, a drill batch or the end of a stream."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ews.config import InfluxConfig, MqttConfig
from ews.models import ReadingBatch
from ews.servers import LocalServers
from ingest import collector as collector_module
from ingest.collector import Collector, Unregistered
from ingest.process import MessageProcessor

Carry = list[ReadingBatch | list[Unregistered] | None]


@pytest.fixture
def col(servers: LocalServers, influx_db: str, mini_sensors: Any, mini_regions: Any, tmp_path: Path
        ) -> Iterator[Collector]:
    c = Collector(MqttConfig(port=servers.mqtt.port, client_id="rules-steps"),
                  InfluxConfig(url=servers.influx_url, database=influx_db),
                  MessageProcessor(mini_sensors, mini_regions), spool_dir=tmp_path / "spool")
    yield c
    c.stop(drain_s=0.1)


def batch(n: int, first: int = 0, drill: bool = False) -> ReadingBatch:
    """n readings whose timestamps number them from `first`, so that order can be checked."""
    return ReadingBatch(np.zeros(n, np.int64), np.arange(first, first + n, dtype=np.int64), np.ones(n), drill)


def arriving(col: Collector, items: list[ReadingBatch | None], gap_s: float, last: bool = False
             ) -> threading.Thread:
    """Hand `items` to the rules' queue one by one, `gap_s` apart, as the write thread does;
    `last`: they are the last of a burst, nothing more on its way after them."""
    def hand() -> None:
        for item in items:
            time.sleep(gap_s)
            col._to_rules_q.put(item)
        if last:
            more_on_their_way(col, False)
    t = threading.Thread(target=hand, daemon=True)
    t.start()
    return t


def more_on_their_way(col: Collector, more: bool) -> None:
    col._taken, col._done = (1, 0) if more else (0, 0)


@pytest.fixture
def patient(monkeypatch: pytest.MonkeyPatch) -> None:
    """A wait long enough that a busy machine cannot end a step before what a test sends."""
    monkeypatch.setattr(collector_module, "STEP_WAIT_S", 30.0)


def test_under_load_a_step_waits_for_the_batches_on_their_way(col: Collector, patient: None) -> None:
    more_on_their_way(col, True)
    size = collector_module.STEP_FROM
    t = arriving(col, [batch(size, size), batch(size, 2 * size)], gap_s=0.02, last=True)
    carry: Carry = []
    step = col._merged(batch(size), carry)
    t.join()
    assert len(step) == 3 * size and not carry
    assert np.array_equal(step.ts_ms, np.arange(3 * size))  # in the order they came


def test_a_step_ends_once_it_holds_enough(col: Collector, patient: None, monkeypatch: pytest.MonkeyPatch) -> None:
    more_on_their_way(col, True)
    size = collector_module.STEP_FROM
    monkeypatch.setattr(collector_module, "STEP_READINGS", 2 * size)
    t = arriving(col, [batch(size, size), batch(size, 2 * size)], gap_s=0.03)
    step = col._merged(batch(size), [])
    t.join()
    assert len(step) == 2 * size
    left = col._to_rules_q.get_nowait()  # the next step's first batch
    assert isinstance(left, ReadingBatch) and int(left.ts_ms[0]) == 2 * size


def test_at_a_trickle_a_batch_is_evaluated_at_once(col: Collector) -> None:
    more_on_their_way(col, True)
    small = collector_module.STEP_FROM - 1
    t = arriving(col, [batch(10, small)], gap_s=0.03)
    step = col._merged(batch(small), [])
    t.join()
    assert len(step) == small  # the batch behind it was not waited for
    assert len(col._to_rules_q.get_nowait()) == 10  # type: ignore[arg-type]


def test_with_nothing_more_on_its_way_a_step_does_not_wait(col: Collector) -> None:
    more_on_their_way(col, False)  # the last batch of a burst: all received is handed over
    size = collector_module.STEP_FROM
    t = arriving(col, [batch(10, size)], gap_s=0.03)
    step = col._merged(batch(size), [])
    t.join()
    assert len(step) == size
    assert col._to_rules_q.qsize() == 1


def test_a_step_waits_no_longer_than_its_limit(col: Collector, monkeypatch: pytest.MonkeyPatch) -> None:
    more_on_their_way(col, True)  # readings on their way that never come: a stalled write
    monkeypatch.setattr(collector_module, "STEP_WAIT_S", 0.05)
    size = collector_module.STEP_FROM
    t = arriving(col, [batch(10, size)], gap_s=1.5)
    step = col._merged(batch(size), [])
    assert len(step) == size and col._to_rules_q.qsize() == 0  # returned before the late batch
    t.join()


def test_a_stop_or_a_drill_batch_ends_a_waiting_step(col: Collector, patient: None) -> None:
    more_on_their_way(col, True)
    size = collector_module.STEP_FROM
    for other in (None, batch(5, size, drill=True)):
        t = arriving(col, [batch(size, size), other], gap_s=0.02)
        carry: Carry = []
        step = col._merged(batch(size), carry)
        t.join()
        assert len(step) == 2 * size and len(carry) == 1 and carry[0] is other  # the rules loop takes it next
