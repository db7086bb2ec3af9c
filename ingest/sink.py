"""Where a batch becomes durable: InfluxDB when it answers within the deadline, else the spool.

`store` returns only once the batch is in InfluxDB or fsync'ed in the spool, so the caller may
then acknowledge its messages. While the spool holds anything, new batches join its tail
(replay stays in order and a struggling InfluxDB is not hammered) and `drain` replays from its
head, a bounded slice of time per call, as soon as InfluxDB answers again; failed attempts
back off exponentially up to `max_backoff_s`. When the spool is full `store` waits, and with
it the acknowledgements, until replay makes room: the broker keeps the messages meanwhile.

A request InfluxDB refuses (ingest/refusal.py) is not an outage and is not spooled: one too
large goes again in halves, and later requests stay under the size that worked; from a
partial write, what InfluxDB left out goes to the quarantine (counted by cause), since the
rest is stored. The database's retention is read at start and every few minutes, so the
collector can reject readings older than InfluxDB keeps before they are written.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Literal, Protocol

from ews import metrics
from ingest.influx_v1 import WriteError
from ingest.loglimit import LogLimit
from ingest.refusal import (
    BEYOND_RETENTION,
    CAUSES,
    REFUSED,
    TOO_LARGE,
    TYPE_CONFLICT,
    UNPARSABLE,
    Refusal,
    lines_before,
    lines_of_measurement,
)
from ingest.spool import Spool

log = logging.getLogger(__name__)
Stored = Literal["written", "spooled", "quarantined"]


MIN_PART_BYTES = 128 * 1024  # smaller batches go in one request
RETENTION_REFRESH_S = 300.0  # an operator may alter the retention policy at any time
REQUEST_HEADROOM = 0.9  # requests aim this far under a learned size limit (parts end at line ends)


def split_lines(lines: bytes, parts: int, min_part_bytes: int = MIN_PART_BYTES) -> list[bytes]:
    """Line protocol cut into up to `parts` pieces of about equal size, at line ends; a single
    line stays whole."""
    if parts <= 1 or len(lines) < 2 * min_part_bytes:
        return [lines]
    parts = min(parts, len(lines) // min_part_bytes)
    out, start = [], 0
    for k in range(1, parts):
        at = max(start, len(lines) * k // parts)
        cut = lines.find(b"\n", at) + 1
        if not start < cut < len(lines):  # the target lies in the last line: cut before it instead
            cut = lines.rfind(b"\n", start, at) + 1
        if not start < cut < len(lines):
            break
        out.append(lines[start:cut])
        start = cut
    out.append(lines[start:])
    return [p for p in out if p]


class LineWriter(Protocol):
    def write(self, lines: bytes) -> None: ...
    def create_database(self) -> None: ...
    def retention_ms(self) -> int | None: ...
    def close(self) -> None: ...


@dataclass(slots=True)
class Writing:
    """A batch being written in the background: its parts, their futures and when it started."""

    lines: list[bytes]
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
        metrics.initialise(metrics.INFLUX_REFUSED, *((spool.target, c) for c in CAUSES))
        self.stop = stop
        self.min_backoff_s = min_backoff_s
        self.max_backoff_s = max_backoff_s
        self.healthy = True
        self._backoff = min_backoff_s
        self._next_try = 0.0
        self.retention_ms: int | None = None  # how far back InfluxDB keeps points, when known
        self._retention_read = -math.inf
        self.max_request_bytes: int | None = None  # learned from a 413
        self._refusal_log = LogLimit(per_window=5, what="refusals")

    def store(self, lines: bytes, readings: int) -> Stored:
        while True:
            self.drain()
            if not len(self.spool) and self._may_try():
                try:
                    return self._write(lines)
                except WriteError as exc:
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
        if time.monotonic() - self._retention_read >= RETENTION_REFRESH_S:
            self._retention_read = time.monotonic()
            # off the write thread and the writers' pool: a query may be slow
            threading.Thread(target=self.refresh_retention, name="influx-retention", daemon=True).start()
        parts = self._parts(lines)
        return Writing(parts, [self._pool().submit(self.writer.write, p) for p in parts], time.perf_counter())

    def finish(self, lines: bytes, readings: int, writing: Writing | None) -> Stored:
        """Wait for a batch `begin` started; if it failed (or was not started), `store` it."""
        if writing is not None:
            try:
                stored = self._settle(writing.lines, [f.result for f in writing.parts])
            except WriteError as exc:
                self._failed(exc)  # straight to the spool, no second attempt now
            except Exception as exc:  # a bug or an unexpected answer: the careful path decides
                log.warning("background write failed (%r); storing the batch again", exc)
            else:
                metrics.WRITE_SECONDS.observe(time.perf_counter() - writing.t0)
                return stored
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
        self.refresh_retention()

    def refresh_retention(self) -> None:
        """Read how far back InfluxDB keeps points; kept as it was when the server cannot be
        asked now, unknown (None) when it does not say."""
        self._retention_read = time.monotonic()
        try:
            keep = self.writer.retention_ms()
        except Exception as exc:
            log.debug("could not read the retention of %s: %r", self.spool.target, exc)
            return
        if keep != self.retention_ms:
            log.info("InfluxDB keeps the %s readings %s", self.spool.target,
                     "for ever" if keep is None else f"for {keep / 3_600_000:g} h")
        self.retention_ms = keep

    def _ensure_database(self) -> None:
        if not self._database_ready:
            try:
                self.writer.create_database()
            except Exception as exc:
                raise WriteError(f"could not create the database: {exc!r}", retryable=True) from exc
            self._database_ready = True

    def _parts(self, lines: bytes) -> list[bytes]:
        """The requests a batch goes out as: `concurrency` of them, more if InfluxDB (or a proxy
        in front of it) refused a request that large."""
        limit = self.max_request_bytes
        if limit is None or len(lines) <= limit * REQUEST_HEADROOM:
            return split_lines(lines, self.concurrency)
        wanted = math.ceil(len(lines) / (limit * REQUEST_HEADROOM))
        return split_lines(lines, max(self.concurrency, wanted), min_part_bytes=1)

    def _write(self, lines: bytes) -> Stored:
        """Write a batch; raises WriteError only for what may heal (an outage), having dealt with
        any refusal (`_refused`: then some of it is in the quarantine)."""
        self._ensure_database()
        t0 = time.perf_counter()
        parts = self._parts(lines)
        # InfluxDB ingests concurrent requests on several cores; the batch is durable once
        # every part is, and a part written twice (after a failed sibling) is harmless
        others = [self._pool().submit(self.writer.write, p) for p in parts[1:]]
        stored = self._settle(parts, [partial(self.writer.write, parts[0]), *(f.result for f in others)])
        metrics.WRITE_SECONDS.observe(time.perf_counter() - t0)
        if not self.healthy:
            log.warning("InfluxDB answers again; resuming direct writes once the spool is replayed")
            self.spool.refresh()
        self.healthy = True
        self._backoff = self.min_backoff_s
        return stored

    def _settle(self, parts: list[bytes], waits: list[Callable[[], object]]) -> Stored:
        """Wait for every part's write (none is left going when the batch is stored again), raise
        the first failure that may heal, and deal with refusals (`_refused`) here, in the write
        thread, not in the writers' threads: the quarantine is not shared."""
        refused: list[tuple[bytes, WriteError]] = []
        failed: WriteError | None = None
        for part, wait in zip(parts, waits, strict=True):
            try:
                wait()
            except WriteError as exc:
                if exc.retryable:
                    failed = failed or exc
                else:
                    refused.append((part, exc))
        if failed is not None:
            raise failed
        quarantined = [self._refused(part, err) for part, err in refused]  # every one, not the first
        return "quarantined" if any(quarantined) else "written"

    def _refused(self, part: bytes, exc: WriteError) -> bool:
        """A request InfluxDB refused: smaller requests for one too large; for a partial write,
        what it left out (or, when that cannot be told apart, the whole request) to the
        quarantine. True if anything went there; raises WriteError if writing the halves meets
        an outage."""
        r = exc.refusal or Refusal(REFUSED, str(exc))
        target = self.spool.target
        if r.cause == TOO_LARGE:
            halves = split_lines(part, 2, min_part_bytes=1)
            if len(halves) > 1:
                self._lower_request_limit(len(part), r)
                quarantined = False
                for half in halves:
                    try:
                        self.writer.write(half)
                    except WriteError as e:
                        if e.retryable:
                            raise
                        quarantined |= self._refused(half, e)
                return quarantined
        kept = part
        if r.cause == BEYOND_RETENTION:
            self.refresh_retention()
            if self.retention_ms is not None:
                kept = lines_before(part, int(time.time() * 1000) - self.retention_ms) or part
        elif r.cause == TYPE_CONFLICT and r.measurement:
            kept = lines_of_measurement(part, r.measurement) or part
        total, lines = part.count(b"\n"), kept.count(b"\n")
        # InfluxDB counts unparsable lines as dropped=0: then the count is the lines kept aside
        metrics.INFLUX_REFUSED.labels(target, r.cause).inc(r.dropped or lines)
        path = self.spool.quarantine_batch(kept, lines)
        if self._refusal_log.allow(r.cause):
            what = (f"refused all {total} lines" if not r.partial
                    else f"could not parse some of {total} lines, storing the rest" if r.cause == UNPARSABLE
                    else f"left out {r.dropped} of {total} lines, storing the rest")
            kept_in = (f"{lines} lines kept in {path}" if path else
                       f"{lines} lines NOT kept: the quarantine {self.spool.quarantine} is full")
            log.error("InfluxDB (%s) %s: %s; %s", target, what, r.detail[:300], kept_in)
        return True

    def _lower_request_limit(self, refused_bytes: int, r: Refusal) -> None:
        limit = refused_bytes // 2
        if self.max_request_bytes is not None and self.max_request_bytes <= limit:
            return
        self.max_request_bytes = limit
        metrics.INFLUX_REQUEST_LIMIT.labels(self.spool.target).set(limit)
        log.warning(
            "InfluxDB (%s) refused a write of %d bytes as too large (%s): writing at most %d bytes a "
            "request from now on. Raise the limit (InfluxDB's [http] max-body-size; nginx's "
            "client_max_body_size in a proxy) to write in fewer requests",
            self.spool.target, refused_bytes, r.detail[:100], limit)

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
