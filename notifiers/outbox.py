"""Delivers outbox rows through their channels, with retries and backoff.

Rows are durable before anyone is told (they are written with the transition), so a worker
killed mid-way simply finds them pending on the next start. Every attempt is recorded with
an audit row. Delivery is at least once; the idempotency key lets receivers drop the rare
repeat after a crash between sending and recording.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from ews.store import Store
from notifiers.channels.base import Channel, DeliveryError, Notification

log = logging.getLogger(__name__)


class OutboxWorker:
    """One background thread delivering the rows of `channels` (run several workers over
    disjoint channel sets to keep a slow channel from delaying the others)."""

    def __init__(
        self,
        store: Store,
        channels: dict[str, Channel],
        clock: Callable[[], float] = time.time,
        *,
        batch: int = 100,
        idle_poll_s: float = 1.0,
        jitter: Callable[[], float] = random.random,
    ):
        self.store = store
        self.channels = dict(channels)
        self.clock = clock
        self.batch = batch
        self.idle_poll_s = idle_poll_s
        self.jitter = jitter
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="ews-outbox", daemon=True)
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
                nxt = self.store.next_due_ms(list(self.channels))
                if nxt is not None:
                    wait = min(wait, max(0.0, (nxt - self._now_ms()) / 1000))
            except Exception:
                # a storage hiccup must not end delivery for good; try again after a pause
                log.exception("outbox pass failed")
            self._wake.wait(wait)

    def run_once(self) -> int:
        """Attempt every row that is due now; returns how many were attempted."""
        rows = self.store.due_outbox(self._now_ms(), list(self.channels), self.batch)
        for row in rows:
            if self._stop.is_set() and self._thread is not None:
                break
            self._attempt(row)
        return len(rows)

    def _attempt(self, row: dict[str, Any]) -> None:
        channel = self.channels[str(row["channel"])]
        try:
            note = Notification.from_row(row)
        except (KeyError, TypeError, ValueError) as exc:
            # a row no channel can read would otherwise be retried forever
            log.error("outbox row %s is malformed: %r", row["id"], exc)
            self.store.record_attempt(row, now_ms=self._now_ms(), state="failed",
                                      next_attempt_ts_ms=None, error=f"malformed row: {exc!r}",
                                      detail={"retryable": False})
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
        detail = {"latency_ms": round((time.perf_counter() - started) * 1000, 3)}
        if error is None:
            self.store.record_attempt(row, now_ms=now_ms, state="sent", next_attempt_ts_ms=None,
                                      error=None, detail=detail)
            return
        attempts = note.attempt
        if not retryable or attempts >= channel.retry.max_attempts:
            log.error("outbox row %s on %s failed for good after %d attempts: %s",
                      row["id"], channel.name, attempts, error)
            self.store.record_attempt(row, now_ms=now_ms, state="failed", next_attempt_ts_ms=None,
                                      error=error, detail={**detail, "retryable": retryable})
            return
        delay_ms = int(channel.retry.delay_s(attempts, self.jitter()) * 1000)
        log.warning("outbox row %s on %s failed (attempt %d), retry in %d ms: %s",
                    row["id"], channel.name, attempts, delay_ms, error)
        self.store.record_attempt(row, now_ms=now_ms, state="pending",
                                  next_attempt_ts_ms=now_ms + delay_ms, error=error,
                                  detail={**detail, "retryable": True, "retry_in_ms": delay_ms})
