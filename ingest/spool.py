"""The disk spool: line-protocol batches kept on disk while InfluxDB is down or slow.

One file per batch, named `{sequence:012d}-{readings}.lp`, written to a temporary name,
fsync'ed, renamed into place and the folder fsync'ed: a file is either whole or absent after a
crash, and once `append` returns, the batch survives a power cut, so its messages may be
acknowledged to the broker. Replay takes files oldest first and deletes each only after
InfluxDB accepted it; a crash in between replays it again, which is harmless (same series,
same timestamps). The spool is bounded by `max_bytes`: past `warn_fraction` it says so loudly
(log and metric), and when a batch does not fit, `append` refuses it, the caller stops
acknowledging and the broker keeps the messages: nothing is dropped.

Lines InfluxDB would not store (ingest/refusal.py: a type conflict, a line it cannot parse) go
to `quarantine/` for an operator, counted. The quarantine has a bound of its own, as large as
the spool's: a refusal that lasts (a type conflict holds until its shard rolls over, a week by
default) must not fill the disk the spool and the warning store live on. Past it, refused
lines are counted and logged but not kept.
"""

from __future__ import annotations

import logging
import os
import re
from collections import deque
from collections.abc import Iterator
from pathlib import Path

from ews import metrics

log = logging.getLogger(__name__)


QUARANTINE_FOLDER = "quarantine"
_BATCH_NAME = re.compile(r"(\d{12,})-(\d+)\.lp")
DRILL_FOLDER = "drill"  # the drill lane's spool, inside the main one


def batch_name(seq: int, readings: int) -> str:
    return f"{seq:012d}-{readings}.lp"


def batch_of(path: Path) -> tuple[int, int] | None:
    """(sequence, readings) of a spool or quarantine file, from its name; None for a file this
    pipeline did not write."""
    m = _BATCH_NAME.fullmatch(path.name)
    return (int(m[1]), int(m[2])) if m else None


def batches(folder: Path, warn: bool = True) -> Iterator[tuple[Path, int, int]]:
    """(path, sequence, readings) of the batch files in a spool or quarantine folder, oldest
    first. Anything else there (a copy an operator left, a file of another tool) is named in the
    log and left alone: the pipeline must start on the night it is needed, whatever lies there."""
    for path in sorted(folder.glob("*.lp")):
        b = batch_of(path)
        if b is None:
            if warn:
                log.warning("%s is not a batch this pipeline wrote (named {sequence}-{readings}.lp): "
                            "left in place, neither replayed nor counted", path)
            continue
        yield path, b[0], b[1]


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(folder: Path, name: str, data: bytes) -> Path:
    tmp = folder / f".{name}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError:  # a full or failing disk: leave nothing half-written behind
        tmp.unlink(missing_ok=True)
        raise
    final = folder / name
    os.replace(tmp, final)
    _fsync_dir(folder)
    return final


class Spool:
    def __init__(self, folder: Path, max_bytes: int, warn_fraction: float = 0.8, target: str = "main"):
        self.folder = Path(folder)
        self.quarantine = self.folder / QUARANTINE_FOLDER
        self.quarantine.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.warn_bytes = int(max_bytes * warn_fraction)
        self.target = target
        self._files: deque[tuple[Path, int, int]] = deque()  # (path, bytes, readings), oldest first
        self.bytes = 0
        self.readings = 0
        self._state = 0  # 0 fine, 1 past the warning fraction, 2 full
        for stale in self.folder.glob(".*.tmp"):
            stale.unlink()  # a write that never reached its rename: its messages were not acked
        seq = 0
        for path, file_seq, n in batches(self.folder):
            size = path.stat().st_size
            self._files.append((path, size, n))
            self.bytes += size
            self.readings += n
            seq = max(seq, file_seq)
        self.quarantine_bytes = 0
        for path, file_seq, _ in batches(self.quarantine):
            seq = max(seq, file_seq)
            self.quarantine_bytes += path.stat().st_size
        self._seq = seq
        metrics.SPOOL_LIMIT_BYTES.labels(target).set(max_bytes)
        metrics.initialise(metrics.QUARANTINED, (target,))
        metrics.initialise(metrics.QUARANTINE_DROPPED, (target,))
        self._update()
        if self._files:
            log.warning("spool %s holds %d batches (%d readings, %.1f MB) from before; replaying them first",
                        self.folder, len(self._files), self.readings, self.bytes / 1e6)

    def __len__(self) -> int:
        return len(self._files)

    def fits(self, size: int) -> bool:
        return self.bytes + size <= self.max_bytes

    def append(self, lines: bytes, readings: int) -> bool:
        """Keep a batch durably; False when it would pass the bound or the disk will not take
        it (nothing kept)."""
        if not self.fits(len(lines)):
            return self._full(f"is full ({self.bytes / 1e6:.1f} of {self.max_bytes / 1e6:.1f} MB)",
                              "InfluxDB takes the spool back")
        self._seq += 1
        try:
            path = _write_durably(self.folder, batch_name(self._seq, readings), lines)
        except OSError as exc:
            # the disk is full (or failing) before the bound is: the same as a full spool, the
            # acknowledgements wait and the broker keeps the messages, instead of a batch lost
            # between an InfluxDB that is down and a disk that cannot take it
            return self._full(f"cannot be written ({exc})", "InfluxDB answers or the disk has room")
        self._files.append((path, len(lines), readings))
        self.bytes += len(lines)
        self.readings += readings
        metrics.SPOOLED.labels(self.target).inc(readings)
        self._update()
        return True

    def _full(self, why: str, until: str) -> bool:
        """Refuse a batch: logged once until the spool takes batches again; always False."""
        if self._state != 2:
            log.error("spool %s %s: no longer acknowledging messages; the broker keeps them until %s",
                      self.folder, why, until)
        self._state = 2
        metrics.SPOOL_FILLING.labels(self.target).set(2)
        return False

    def head(self) -> tuple[Path, bytes, int] | None:
        """The oldest batch: (path, line protocol, readings)."""
        if not self._files:
            return None
        path, _, n = self._files[0]
        return path, path.read_bytes(), n

    def contents(self) -> Iterator[bytes]:
        """Every batch it holds, oldest first (read from disk one at a time); a batch replayed
        and deleted meanwhile is left out: InfluxDB has it."""
        for path, _, _ in list(self._files):
            try:
                yield path.read_bytes()
            except FileNotFoundError:
                continue

    def pop(self, path: Path) -> None:
        """Drop the oldest batch once InfluxDB has it."""
        head, size, n = self._files.popleft()
        assert head == path, "the spool replays in order"
        path.unlink()
        metrics.REPLAYED.labels(self.target).inc(n)
        self.bytes -= size
        self.readings -= n
        self._update()

    def quarantine_batch(self, lines: bytes, readings: int) -> Path | None:
        """Keep lines InfluxDB would not store; None when the quarantine is full."""
        if self.quarantine_bytes + len(lines) > self.max_bytes:
            self.quarantine_bytes = self._quarantine_size()  # an operator may have cleared some
            if self.quarantine_bytes + len(lines) > self.max_bytes:
                metrics.QUARANTINE_DROPPED.labels(self.target).inc(readings)
                return None
        self._seq += 1
        try:
            path = _write_durably(self.quarantine, batch_name(self._seq, readings), lines)
        except OSError as exc:  # a full disk must not stop the batch whose rest InfluxDB stored
            log.error("quarantine %s cannot be written (%s): %d refused readings not kept", self.quarantine, exc,
                      readings)
            metrics.QUARANTINE_DROPPED.labels(self.target).inc(readings)
            return None
        metrics.QUARANTINED.labels(self.target).inc(readings)
        self.quarantine_bytes += len(lines)
        return path

    def _quarantine_size(self) -> int:
        return sum(path.stat().st_size for path, _, _ in batches(self.quarantine, warn=False))

    def refresh(self) -> None:
        """Say again how full it is: a disk that refused a batch may have room now."""
        self._update()

    def _update(self) -> None:
        metrics.SPOOL_BYTES.labels(self.target).set(self.bytes)
        metrics.SPOOL_READINGS.labels(self.target).set(self.readings)
        state = 0 if self.bytes < self.warn_bytes else (1 if self.fits(1) else 2)
        if state == 1 and self._state == 0:
            log.error(
                "spool %s passed %.0f%% of its %.1f MB bound (%d readings waiting): InfluxDB has been "
                "unreachable or slow for a while; acknowledgements stop when it is full",
                self.folder, 100 * self.bytes / self.max_bytes, self.max_bytes / 1e6, self.readings,
            )
        elif state == 0 and self._state != 0:
            log.warning("spool %s is back under its warning level (%.1f MB)", self.folder, self.bytes / 1e6)
        self._state = max(state, self._state) if state == 2 else state
        metrics.SPOOL_FILLING.labels(self.target).set(self._state)
