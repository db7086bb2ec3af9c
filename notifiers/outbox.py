"""Delivers outbox rows through their channels, with retries, backoff, rate limits and a deadline.

Rows are durable before anyone is told (they are written with the transition), so a worker
killed mid-way simply finds them pending on the next start. Every attempt is recorded with
an audit row. Delivery is at least once; the idempotency key lets receivers drop the rare
repeat after a crash between sending and recording.

A row is given up when its channel says retrying cannot help, after the channel's
`max_attempts`, or once its deadline (written with it: creation + `give_up_s`) has passed;
the last retry is moved to the deadline rather than past it. Giving up writes, in the same
transaction, a notice to the duty officers on their other channels (`on_failure`), so a
message that could not be delivered is itself something someone on duty hears about.

`OutboxPool` runs one worker thread per channel group, so a slow or throttled channel (an
SMS gateway timing out, a robot at its rate limit) does not hold up the others.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ews import metrics
from ews.config import RateLimit
from ews.store import Delivery, Store
from ews.yamlfile import ConfigError, Problem
from notifiers.channels.base import Channel, DeliveryError, Notification
from notifiers.ratelimit import TokenBucket

log = logging.getLogger(__name__)

OnFailure = Callable[[dict[str, Any], str], list[Delivery]]


class OutboxWorker:
    """One background thread delivering the rows of `channels`."""

    def __init__(
        self,
        store: Store,
        channels: dict[str, Channel],
        clock: Callable[[], float] = time.time,
        *,
        batch: int = 100,
        idle_poll_s: float = 1.0,
        jitter: Callable[[], float] = random.random,
        limits: Mapping[str, TokenBucket] | None = None,
        on_failure: OnFailure | None = None,
        name: str = "ews-outbox",
    ):
        self.store = store
        self.channels = dict(channels)
        for ch in self.channels:
            metrics.initialise(metrics.DELIVERIES, (ch, "sent"), (ch, "failed"))
            metrics.initialise(metrics.DELIVERY_GIVEN_UP, (ch,))
        self.clock = clock
        self.batch = batch
        self.idle_poll_s = idle_poll_s
        self.jitter = jitter
        self.limits = dict(limits or {})
        self.on_failure = on_failure
        self.name = name
        self._throttled_s: float | None = None  # wait for a token, when the last pass hit a limit
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def wake(self) -> None:
        """New rows were committed: look at once instead of at the next poll."""
        self._wake.set()

    def _now_ms(self) -> int:
        return round(self.clock() * 1000)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            wait = self.idle_poll_s
            try:
                while self.run_once() and not self._stop.is_set():
                    pass
                if self._throttled_s is not None:
                    wait = min(wait, max(self._throttled_s, 0.005))
                else:
                    nxt = self.store.next_due_ms(list(self.channels))
                    if nxt is not None:
                        wait = min(wait, max(0.0, (nxt - self._now_ms()) / 1000))
            except Exception:
                # a storage hiccup must not end delivery for good; try again after a pause
                log.exception("outbox pass failed")
            self._wake.wait(wait)

    def run_once(self) -> int:
        """Attempt every row that is due now and within its channel's rate limit; returns
        how many were attempted."""
        rows = self.store.due_outbox(self._now_ms(), list(self.channels), self.batch)
        attempted = 0
        self._throttled_s = None
        for row in rows:
            if self._stop.is_set() and self._thread is not None:
                break
            bucket = self.limits.get(str(row["channel"]))
            if bucket is not None and not bucket.try_take():
                w = bucket.wait_s()
                self._throttled_s = w if self._throttled_s is None else min(self._throttled_s, w)
                continue
            self._attempt(row)
            attempted += 1
        return attempted

    def _give_up(self, row: dict[str, Any], now_ms: int, error: str, detail: dict[str, Any]) -> None:
        notices: list[Delivery] = []
        if self.on_failure is not None:
            try:
                notices = self.on_failure(row, error)
            except Exception:
                log.exception("could not build the failure notice for outbox row %s", row["id"])
        metrics.DELIVERY_GIVEN_UP.labels(row["channel"]).inc()
        self.store.record_attempt(row, now_ms=now_ms, state="failed", next_attempt_ts_ms=None,
                                  error=error, detail={**detail, "notices": [n.key for n in notices]},
                                  notices=notices, event_ts_ms=_event_ts(row))

    def _attempt(self, row: dict[str, Any]) -> None:
        channel = self.channels[str(row["channel"])]
        try:
            note = Notification.from_row(row)
        except (KeyError, TypeError, ValueError) as exc:
            # a row no channel can read would otherwise be retried forever
            log.error("outbox row %s is malformed: %r", row["id"], exc)
            self._give_up(row, self._now_ms(), f"malformed row: {exc!r}", {"retryable": False})
            return
        started = time.perf_counter()
        error: str | None = None
        retryable = True
        try:
            channel.send(note)
        except DeliveryError as exc:
            error, retryable = str(exc), exc.retryable
        except Exception as exc:
            # a bug in a channel is treated as a transient failure, never as delivered
            log.exception("channel %s raised while sending outbox row %s", channel.name, row["id"])
            error = f"{type(exc).__name__}: {exc}"
        now_ms = self._now_ms()
        detail: dict[str, Any] = {"latency_ms": round((time.perf_counter() - started) * 1000, 3)}
        if error is None:
            metrics.DELIVERIES.labels(channel.name, "sent").inc()
            origin = row.get("origin_ts_ms") or row["created_ts_ms"]
            metrics.DELIVERY_SECONDS.labels(channel.name).observe(max(0, now_ms - int(origin)) / 1000)
            event_ts = _event_ts(row)
            if event_ts is not None and row.get("notice", "transition") == "transition":
                metrics.END_TO_END_LAG.labels(channel.name).observe(max(0, now_ms - event_ts) / 1000)
            self.store.record_attempt(row, now_ms=now_ms, state="sent", next_attempt_ts_ms=None,
                                      error=None, detail=detail, event_ts_ms=_event_ts(row))
            return
        metrics.DELIVERIES.labels(channel.name, "failed").inc()
        attempts = note.attempt
        deadline = row.get("deadline_ts_ms")
        past = deadline is not None and now_ms >= int(deadline)
        if not retryable or attempts >= channel.retry.max_attempts or past:
            why = "permanent error" if not retryable else "deadline passed" if past else "attempts used up"
            log.error("outbox row %s on %s given up after %d attempts (%s): %s",
                      row["id"], channel.name, attempts, why, error)
            self._give_up(row, now_ms, error, {**detail, "retryable": retryable, "given_up": why})
            return
        delay_ms = int(channel.retry.delay_s(attempts, self.jitter()) * 1000)
        next_ms = now_ms + delay_ms
        if deadline is not None:
            next_ms = min(next_ms, int(deadline))  # one last try at the deadline, not after it
        log.warning("outbox row %s on %s failed (attempt %d), retry in %d ms: %s",
                    row["id"], channel.name, attempts, next_ms - now_ms, error)
        self.store.record_attempt(row, now_ms=now_ms, state="pending", next_attempt_ts_ms=next_ms,
                                  error=error, event_ts_ms=_event_ts(row),
                                  detail={**detail, "retryable": True, "retry_in_ms": next_ms - now_ms})


def _event_ts(row: dict[str, Any]) -> int | None:
    w = (row.get("payload") or {}).get("warning") or {}
    v = w.get("event_ts_ms")
    return int(v) if isinstance(v, int | float) else None


class OutboxPool:
    """One OutboxWorker per channel group: the groups named in configuration, and every
    other channel on its own."""

    def __init__(
        self,
        store: Store,
        channels: dict[str, Channel],
        *,
        groups: Sequence[Sequence[str]] = (),
        rate_limits: Mapping[str, RateLimit] | None = None,
        clock: Callable[[], float] = time.time,
        on_failure: OnFailure | None = None,
        **worker_kw: Any,
    ):
        problems = []
        grouped: list[list[str]] = []
        seen: set[str] = set()
        for i, g in enumerate(groups):
            for name in g:
                if name not in channels:
                    problems.append(Problem("(config)", None, f"notifiers.worker_groups[{i}]",
                                            f"no channel named {name!r}"))
                elif name in seen:
                    problems.append(Problem("(config)", None, f"notifiers.worker_groups[{i}]",
                                            f"channel {name!r} is in two groups"))
                seen.add(name)
            grouped.append([n for n in g if n in channels])
        for name in rate_limits or {}:
            if name not in channels:
                problems.append(Problem("(config)", None, f"notifiers.rate_limits.{name}",
                                        f"no channel named {name!r}"))
        if problems:
            raise ConfigError(problems)
        grouped += [[n] for n in channels if n not in seen]
        limits = {n: TokenBucket(r.per_s, r.burst) for n, r in (rate_limits or {}).items()}
        self.workers = [
            OutboxWorker(store, {n: channels[n] for n in g}, clock,
                         limits={n: limits[n] for n in g if n in limits}, on_failure=on_failure,
                         name=f"ews-outbox-{'+'.join(g)}", **worker_kw)
            for g in grouped if g
        ]

    @property
    def on_failure(self) -> OnFailure | None:
        return self.workers[0].on_failure if self.workers else None

    @on_failure.setter
    def on_failure(self, fn: OnFailure | None) -> None:
        for w in self.workers:
            w.on_failure = fn

    def start(self) -> None:
        for w in self.workers:
            w.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        for w in self.workers:
            w._stop.set()
            w.wake()
        for w in self.workers:
            w.stop(timeout_s)

    def wake(self) -> None:
        for w in self.workers:
            w.wake()

    def run_once(self) -> int:
        """Every worker's pass, on the caller's thread (tests, benchmarks)."""
        return sum(w.run_once() for w in self.workers)
