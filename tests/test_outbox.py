"""Outbox worker: retries with backoff, giving up, audit per attempt, restart, wake-up, deadlines,
failure notices, rate limits and one worker per channel group."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from ews.config import RateLimit
from ews.regions import RegionRegistry
from ews.sensors import SensorRegistry
from ews.store import Delivery, Store
from ews.yamlfile import ConfigError
from notifiers.channels.base import Channel, DeliveryError, Notification, RetryPolicy
from notifiers.channels.console import ConsoleChannel
from notifiers.lifecycle import WarningService
from notifiers.outbox import OutboxPool, OutboxWorker
from notifiers.ratelimit import TokenBucket
from notifiers.routing import Router
from notifiers.templates import Renderer

from .waiting import wait_for


class FlakyChannel(Channel):
    """Fails the first `failures` sends of each key with the given retryability."""

    def __init__(self, name: str, failures: int, retryable: bool, retry: RetryPolicy):
        self.name = name
        self.failures = failures
        self.retryable = retryable
        self.retry = retry
        self.calls: list[str] = []
        self.delivered: list[str] = []
        self.sent = threading.Event()

    def send(self, note: Notification) -> None:
        self.calls.append(note.idempotency_key)
        if self.calls.count(note.idempotency_key) <= self.failures:
            raise DeliveryError("boom", retryable=self.retryable)
        self.delivered.append(note.idempotency_key)
        self.sent.set()


class Clock:
    """Whole milliseconds, so stepping it is exact."""

    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000


def _commit(store: Store, wid: str, channels: list[str], ts_ms: int = 1_000_000) -> int:
    w = {
        "id": wid, "rule": "r", "rule_name": "", "subject": wid, "kind": "rain",
        "community": "440106001001", "street": "440106001", "district": "440106", "level": 2,
        "peak_level": 2, "state": "open", "measure": "rain_3h", "value": 1.0, "unit": "mm",
        "threshold": None, "opened_event_ts_ms": ts_ms, "opened_ts_ms": ts_ms,
        "updated_event_ts_ms": ts_ms, "updated_ts_ms": ts_ms, "resolved_event_ts_ms": None,
        "resolved_ts_ms": None, "rule_version": "v1", "drill": False, "message": "m",
        "acknowledged": False, "acknowledged_by": None, "acknowledged_ts_ms": None,
    }
    t = {"type": "open", "level_before": 0, "level_after": 2, "value": 1.0, "measure": "rain_3h",
         "event_ts_ms": ts_ms, "processed_ts_ms": ts_ms, "rule_version": "v1"}
    payload = {"transition": "open", "warning": {"id": wid, "level": "yellow"}, "message": f"msg {wid}"}
    return store.commit_transition(
        w, t, [Delivery(ch, [{"id": "duty", "name": "值班员"}], payload) for ch in channels]
    )


def test_retries_with_doubling_capped_backoff(tmp_path: Path) -> None:
    store = Store(tmp_path / "ews.sqlite")
    tid = _commit(store, "W-1", ["flaky"])
    retry = RetryPolicy(max_attempts=10, backoff_s=0.1, max_backoff_s=0.3)
    ch = FlakyChannel("flaky", failures=4, retryable=True, retry=retry)
    clock = Clock(1_000_000)
    worker = OutboxWorker(store, {"flaky": ch}, clock, jitter=lambda: 1.0)

    # with full jitter factor the waits are 100, 200, 300 (capped), 300 ms
    expected_waits = []
    wait = 100
    for _ in range(4):
        expected_waits.append(wait)
        wait = min(wait * 2, 300)
    waits = []
    while not ch.delivered:
        assert worker.run_once() == 1
        row = store.outbox()[0]
        if row["state"] == "pending":
            waits.append(row["next_attempt_ts_ms"] - clock.ms)
            clock.ms += waits[-1] - 1
            assert worker.run_once() == 0  # not due one millisecond early
            clock.ms += 1
    assert waits == expected_waits
    assert ch.calls == [f"{tid}:flaky"] * 5
    (row,) = store.outbox()
    assert (row["state"], row["attempts"]) == ("sent", 5)
    attempts = [a["detail"] for a in store.audit_log("W-1") if a["action"] == "delivery.attempt"]
    assert [(a["attempt"], a["result"]) for a in attempts] == [
        (1, "pending"), (2, "pending"), (3, "pending"), (4, "pending"), (5, "sent")
    ]


def test_jitter_stays_within_half_to_full_interval() -> None:
    retry = RetryPolicy(max_attempts=5, backoff_s=2.0, max_backoff_s=60.0)
    assert retry.delay_s(3, 0.0) == 4.0
    assert retry.delay_s(3, 0.5) == 6.0
    assert retry.delay_s(10, 0.999) <= 60.0


def test_gives_up_after_max_attempts_and_on_permanent_errors(tmp_path: Path) -> None:
    store = Store(tmp_path / "ews.sqlite")
    _commit(store, "W-1", ["always", "rejects"])
    always = FlakyChannel("always", 99, True, RetryPolicy(3, 0.01, 0.01))
    rejects = FlakyChannel("rejects", 99, False, RetryPolicy(3, 0.01, 0.01))
    clock = Clock(1_000_000)
    worker = OutboxWorker(store, {"always": always, "rejects": rejects}, clock)
    for _ in range(10):
        worker.run_once()
        clock.ms += 1_000
    assert len(always.calls) == 3
    assert len(rejects.calls) == 1
    assert {r["channel"]: (r["state"], r["attempts"]) for r in store.outbox()} == {
        "always": ("failed", 3), "rejects": ("failed", 1)
    }
    results = [(a["detail"]["channel"], a["detail"]["result"])
               for a in store.audit_log() if a["action"] == "delivery.attempt"]
    assert sorted(results) == sorted(
        [("always", "pending"), ("always", "pending"), ("always", "failed"), ("rejects", "failed")]
    )


def test_rows_left_pending_are_delivered_after_restart(tmp_path: Path) -> None:
    db = tmp_path / "ews.sqlite"
    store = Store(db)
    keys = [f"{_commit(store, f'W-{i}', ['console'])}:console" for i in range(3)]
    store.close()  # the process dies before any worker ran

    lines: list[str] = []
    store = Store(db)
    worker = OutboxWorker(store, {"console": ConsoleChannel("console", lines.append)},
                          Clock(2_000_000))
    assert worker.run_once() == 3
    assert worker.run_once() == 0  # nothing is sent twice
    assert [r["idempotency_key"] for r in store.outbox("sent")] == keys
    assert len(lines) == 3
    assert lines[0] == "[YELLOW] W-0 open: msg W-0 -> 值班员"


def test_wake_delivers_from_the_background_thread(tmp_path: Path) -> None:
    store = Store(tmp_path / "ews.sqlite")
    ch = FlakyChannel("c", 0, True, RetryPolicy())
    # a long idle poll: only wake() can make the worker look before the wait below ends
    worker = OutboxWorker(store, {"c": ch}, idle_poll_s=3600.0)
    worker.start()
    try:
        tid = _commit(store, "W-1", ["c"], ts_ms=0)
        worker.wake()
        assert ch.sent.wait(30.0)
    finally:
        worker.stop()
    assert ch.delivered == [f"{tid}:c"]
    assert [r["state"] for r in store.outbox()] == ["sent"]


class BlockingChannel(Channel):
    """Holds every send until released: a channel whose endpoint hangs."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.retry = RetryPolicy()
        self.release = threading.Event()
        self.entered = threading.Event()

    def send(self, note: Notification) -> None:
        self.entered.set()
        self.release.wait(30.0)


def states(store: Store) -> dict[str, str]:
    return {r["channel"]: r["state"] for r in store.outbox()}


def test_a_hanging_channel_does_not_hold_up_the_others(tmp_path: Path) -> None:
    store = Store(tmp_path / "ews.sqlite")
    slow = BlockingChannel("sms")
    fast = FlakyChannel("console", 0, True, RetryPolicy())
    pool = OutboxPool(store, {"sms": slow, "console": fast}, idle_poll_s=0.05)
    assert [sorted(w.channels) for w in pool.workers] == [["sms"], ["console"]]
    pool.start()
    try:
        _commit(store, "W-1", ["sms", "console"], ts_ms=0)
        pool.wake()
        assert slow.entered.wait(30.0)
        # the SMS gateway hangs; the console message goes out meanwhile
        assert fast.sent.wait(30.0)
        # the worker records the delivery just after the channel's send returns
        assert wait_for(lambda: states(store)["console"] == "sent", 10)
        assert states(store) == {"sms": "pending", "console": "sent"}
    finally:
        slow.release.set()
        pool.stop()


def test_worker_groups_and_unknown_channels_in_config(tmp_path: Path) -> None:
    store = Store(tmp_path / "ews.sqlite")
    chans: dict[str, Channel] = {n: FlakyChannel(n, 0, True, RetryPolicy()) for n in ("a", "b", "c")}
    pool = OutboxPool(store, chans, groups=[["a", "c"]])
    assert [sorted(w.channels) for w in pool.workers] == [["a", "c"], ["b"]]
    with pytest.raises(ConfigError) as err:
        OutboxPool(store, chans, groups=[["a", "x"]], rate_limits={"y": RateLimit(per_s=1)})
    assert [p.field for p in err.value.problems] == ["notifiers.worker_groups[0]", "notifiers.rate_limits.y"]


def test_rate_limit_spaces_messages_without_losing_any(tmp_path: Path) -> None:
    store = Store(tmp_path / "ews.sqlite")
    keys = [f"{_commit(store, f'W-{i}', ['robot'])}:robot" for i in range(5)]
    ch = FlakyChannel("robot", 0, True, RetryPolicy())
    t = {"s": 0.0}
    bucket = TokenBucket(per_s=2.0, burst=2, clock=lambda: t["s"])
    worker = OutboxWorker(store, {"robot": ch}, Clock(2_000_000), limits={"robot": bucket})
    assert worker.run_once() == 2  # the burst
    assert worker.run_once() == 0
    assert bucket.wait_s() == pytest.approx(0.5)
    t["s"] += 0.5
    assert worker.run_once() == 1
    t["s"] += 10.0  # a long pause refills only up to the burst
    assert worker.run_once() == 2
    assert ch.delivered == keys
    # waiting for a token is not an attempt: nothing was retried or failed
    assert [(r["state"], r["attempts"]) for r in store.outbox()] == [("sent", 1)] * 5


def _commit_with_deadline(store: Store, wid: str, channel: str, deadline_ms: int) -> None:
    w = {
        "id": wid, "rule": "r", "rule_name": "", "subject": wid, "kind": "rain",
        "community": "440106001001", "street": "440106001", "district": "440106", "level": 2,
        "peak_level": 2, "state": "open", "measure": "rain_3h", "value": 1.0, "unit": "mm",
        "threshold": None, "opened_event_ts_ms": 1_000, "opened_ts_ms": 1_000_000,
        "updated_event_ts_ms": 1_000, "updated_ts_ms": 1_000_000, "rule_version": "v1",
        "drill": False, "message": "m",
    }
    t = {"type": "open", "level_before": 0, "level_after": 2, "value": 1.0, "measure": "rain_3h",
         "event_ts_ms": 1_000, "processed_ts_ms": 1_000_000, "rule_version": "v1"}
    body = {"notice": "transition", "transition": "open", "message": "车陂社区 暴雨黄色预警",
            "warning": {"id": wid, "level": "yellow", "event_ts_ms": 1_000,
                        "region": {"community": {"code": "440106001001", "name": "车陂社区"}}}}
    store.commit(1_000_000, warning=w, transition=t, deliveries=[
        Delivery(channel, [{"id": "C-duty", "name": "车陂社区值班"}], body, deadline_ts_ms=deadline_ms)])


def test_deadline_gives_up_and_tells_the_district_duty_officer(
    tmp_path: Path, mini_regions: RegionRegistry, mini_sensors: SensorRegistry
) -> None:
    store = Store(tmp_path / "ews.sqlite")
    _commit_with_deadline(store, "W-1", "sms", deadline_ms=1_010_000)
    sms = FlakyChannel("sms", 99, True, RetryPolicy(max_attempts=100, backoff_s=4.0, max_backoff_s=4.0))
    console = FlakyChannel("console", 0, True, RetryPolicy())
    clock = Clock(1_000_000)
    svc = WarningService(store, mini_regions, mini_sensors, Router(mini_regions, clock=clock), Renderer.load(),
                         None, ["sms", "console"], clock=clock)
    pool = OutboxPool(store, {"sms": sms, "console": console}, clock=clock, on_failure=svc.failure_notices,
                      jitter=lambda: 1.0)
    retries = []
    for _ in range(10):
        pool.run_once()
        (row, *_) = store.outbox()
        if row["state"] != "pending":
            break
        retries.append(row["next_attempt_ts_ms"] - clock.ms)
        clock.ms = row["next_attempt_ts_ms"]
    # 4 s, 4 s, then the last retry is moved to the deadline (10 s after writing), not past it
    assert retries == [4_000, 4_000, 2_000]
    (failed, notice) = store.outbox()
    assert (failed["state"], failed["attempts"]) == ("failed", 4)
    # the failure is itself a notice to the district's duty officer, on another channel
    assert (notice["channel"], notice["notice"], notice["idempotency_key"]) == (
        "console", "delivery_failed", "F1:console")
    assert [r["id"] for r in notice["recipients"]] == ["duty_officer-440106"]
    assert notice["payload"]["message"] == (  # the test clock is 1 010 s after 1970-01-01 08:00 Beijing
        "【投递失败】sms渠道未能将以下预警送达车陂社区值班（4次尝试，最后错误：boom，1970-01-01 08:16）："
        "车陂社区 暴雨黄色预警")
    assert notice["payload"]["failed"]["idempotency_key"] == failed["idempotency_key"]
    pool.run_once()
    assert console.delivered == ["F1:console"]
    last = [a for a in store.audit_log("W-1") if a["action"] == "delivery.attempt"][-2]
    assert (last["detail"]["result"], last["detail"]["given_up"], last["detail"]["notices"]) == (
        "failed", "deadline passed", ["F1:console"])
    assert last["event_ts_ms"] == 1_000


def test_a_failure_notice_that_fails_is_not_reported_again(tmp_path: Path) -> None:
    store = Store(tmp_path / "ews.sqlite")
    _commit_with_deadline(store, "W-1", "console", deadline_ms=1_000_000)
    called = []

    def on_failure(row: dict[str, Any], error: str) -> list[Delivery]:
        called.append(row["notice"])
        return []

    ch = FlakyChannel("console", 99, False, RetryPolicy())
    OutboxWorker(store, {"console": ch}, Clock(1_000_000), on_failure=on_failure).run_once()
    assert called == ["transition"]
    assert store.outbox()[0]["state"] == "failed"
