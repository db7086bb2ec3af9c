"""Where a batch becomes durable: InfluxDB when it answers within the deadline, else the spool.

`store` returns only once the batch is in InfluxDB or fsync'ed in the spool, so the caller may
then acknowledge its messages. While the spool holds anything, new batches join its tail
(replay stays in order and a struggling InfluxDB is not hammered) and `drain` replays from its
head, a bounded slice of time per call, as soon as InfluxDB answers again; failed attempts
back off exponentially up to `max_backoff_s`. When the spool is full `store` waits, and with
it the acknowledgements, until replay makes room: the broker keeps the messages meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal, Protocol

from ews import metrics
from ingest.influx_v1 import WriteError
from ingest.spool import Spool

log = logging.getLogger(__name__)
Stored = Literal["written", "spooled", "quarantined"]


MIN_PART_BYTES = 128 * 1024  # smaller batches go in one request


def split_lines(lines: bytes, parts: int) -> list[bytes]:
    """Line protocol cut into up to `parts` pieces of about equal size, at line ends."""
    if parts <= 1 or len(lines) < 2 * MIN_PART_BYTES:
        return [lines]
    parts = min(parts, len(lines) // MIN_PART_BYTES)
    out, start = [], 0
    for k in range(1, parts):
        cut = lines.find(b"\n", max(start, len(lines) * k // parts)) + 1
        if cut <= start:
            break
        out.append(lines[start:cut])
        start = cut
    out.append(lines[start:])
    return [p for p in out if p]


class LineWriter(Protocol):
    def write(self, lines: bytes) -> None: ...
    def create_database(self) -> None: ...
    def close(self) -> None: ...


@dataclass(slots=True)
class Writing:
    """A batch being written in the background: its parts' futures and when it started."""

    parts: list[Future[None]]
    t0: float

    def done(self) -> bool:
        return all(f.done() for f in self.parts)


class Stopped(Exception):
    """The collector is stopping while a batch could not be made durable; it stays unacked."""


class Sink:
    def __init__(
        self, writer: LineWriter, spool: Spool, stop: threading.Event,
        min_backoff_s: float = 0.5, max_backoff_s: float = 30.0, create_database: bool = False,
        concurrency: int = 1,
    ):
        self.writer = writer
        self.concurrency = concurrency
        self._executor: ThreadPoolExecutor | None = None
        self._database_ready = not create_database
        self.spool = spool
        self.stop = stop
        self.min_backoff_s = min_backoff_s
        self.max_backoff_s = max_backoff_s
        self.healthy = True
        self._backoff = min_backoff_s
        self._next_try = 0.0

    def store(self, lines: bytes, readings: int) -> Stored:
        while True:
            self.drain()
            if not len(self.spool) and self._may_try():
                try:
                    self._write(lines)
                    return "written"
                except WriteError as exc:
                    if not exc.retryable:
                        path = self.spool.quarantine_batch(lines, readings)
                        log.error("InfluxDB refused a batch of %d readings as malformed (%s); kept in %s",
                                  readings, exc, path)
                        return "quarantined"
                    self._failed(exc)
            if self.spool.append(lines, readings):
                return "spooled"
            if self.stop.wait(min(self._backoff, 1.0)):
                raise Stopped("stopping with the spool full")

    def begin(self, lines: bytes) -> Writing | None:
        """Start writing a batch in the background, so the next one can start before this one
        is done (InfluxDB keeps `concurrency` requests busy instead of waiting at every batch's
        end); `finish` then makes it durable. None when this batch must take `store`'s path (the
        spool holds batches, InfluxDB is failing, the database is not made yet)."""
        if len(self.spool) or not self.healthy or not self._database_ready:
            return None
        parts = split_lines(lines, self.concurrency)
        return Writing([self._pool().submit(self.writer.write, p) for p in parts],
                       time.perf_counter())

    def finish(self, lines: bytes, readings: int, writing: Writing | None) -> Stored:
        """Wait for a batch `begin` started; if it failed (or was not started), `store` it."""
        if writing is not None:
            try:
                for f in writing.parts:
                    f.result()
            except WriteError as exc:
                if exc.retryable:
                    self._failed(exc)  # straight to the spool, no second attempt now
            except Exception as exc:  # a bug or an unexpected answer: the careful path decides
                log.warning("background write failed (%r); storing the batch again", exc)
            else:
                metrics.WRITE_SECONDS.observe(time.perf_counter() - writing.t0)
                return "written"
        return self.store(lines, readings)

    def drain(self, budget_s: float = 0.5) -> None:
        """Replay spooled batches oldest first while InfluxDB takes them, for up to `budget_s`."""
        if not len(self.spool) or not self._may_try():
            return
        until = time.monotonic() + budget_s
        while len(self.spool) and time.monotonic() < until:
            head = self.spool.head()
            assert head is not None
            path, lines, _ = head
            try:
                self._write(lines)
            except WriteError as exc:
                if not exc.retryable:
                    log.error("InfluxDB refused spooled batch %s as malformed (%s); moved to quarantine",
                              path.name, exc)
                    self.spool.pop(path, quarantine=True)
                    continue
                self._failed(exc)
                return
            self.spool.pop(path)
        if not len(self.spool):
            log.info("spool replayed: every reading it held is in InfluxDB")

    def prepare(self) -> None:
        """Create the database ahead of the first batch, if InfluxDB answers now (else the first
        write tries again), so that batch can be written in the background like the others."""
        try:
            self._ensure_database()
        except WriteError as exc:
            log.warning("%s; trying again with the first batch", exc)

    def _ensure_database(self) -> None:
        if not self._database_ready:
            try:
                self.writer.create_database()
            except Exception as exc:
                raise WriteError(f"could not create the database: {exc!r}", retryable=True) from exc
            self._database_ready = True

    def _write(self, lines: bytes) -> None:
        self._ensure_database()
        t0 = time.perf_counter()
        parts = split_lines(lines, self.concurrency)
        if len(parts) == 1:
            self.writer.write(lines)
        else:
            # InfluxDB ingests concurrent requests on several cores; the batch is durable
            # once every part is, and a part written twice (after a failed sibling) is harmless
            others = [self._pool().submit(self.writer.write, p) for p in parts[1:]]
            try:
                self.writer.write(parts[0])
            finally:
                for f in others:
                    f.result()
        metrics.WRITE_SECONDS.observe(time.perf_counter() - t0)
        if not self.healthy:
            log.warning("InfluxDB answers again; resuming direct writes once the spool is replayed")
        self.healthy = True
        self._backoff = self.min_backoff_s

    def _pool(self) -> ThreadPoolExecutor:
        """Background writers: enough for two batches of `concurrency` parts each, so a batch
        begun while the one before it is still being written starts at once."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(2 * self.concurrency, thread_name_prefix="influx-write")
        return self._executor

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown()
        self.writer.close()

    def _may_try(self) -> bool:
        return self.healthy or time.monotonic() >= self._next_try

    def _failed(self, exc: WriteError) -> None:
        metrics.WRITE_ERRORS.inc()
        if self.healthy:
            log.error("InfluxDB write failed or passed its deadline (%s); spooling to disk", exc)
        else:
            log.warning("InfluxDB still unavailable (%s); next attempt in %.1f s", exc, self._backoff)
        self.healthy = False
        self._next_try = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, self.max_backoff_s)
