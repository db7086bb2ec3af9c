"""The disk spool and the sink: durable, in order, bounded, and never dropping a batch."""

from __future__ import annotations

import errno
import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from ingest.influx_v1 import InfluxV1, WriteError
from ingest.sink import Sink, Stopped, split_lines
from ingest.spool import Spool

from .httpstub import HttpStub, QuietHandler


class FakeInflux:
    """Accepts writes unless told to be down; records what it got, in order."""

    def __init__(self) -> None:
        self.down = False
        self.malformed: set[bytes] = set()
        self.got: list[bytes] = []

    def write(self, lines: bytes) -> None:
        if self.down:
            raise WriteError("connection refused", retryable=True)
        if lines in self.malformed:
            raise WriteError("400 unable to parse", retryable=False)
        self.got.append(lines)

    def create_database(self) -> None:
        return None

    def retention_ms(self) -> int | None:
        return None

    def close(self) -> None:
        return None


def batch(i: int) -> bytes:
    return f"rain,sensor=RG-{i} value={i}.0 {1_764_300_000_000 + i}\n".encode()


def test_spool_is_durable_ordered_and_bounded(tmp_path: Path) -> None:
    s = Spool(tmp_path, max_bytes=10 * len(batch(1)), warn_fraction=0.3, target="t-spool")
    for i in range(4):
        assert s.append(batch(i), readings=1)
    gauge = REGISTRY.get_sample_value
    assert gauge("ews_spool_bytes", {"target": "t-spool"}) == sum(len(batch(i)) for i in range(4))
    assert gauge("ews_spool_readings", {"target": "t-spool"}) == 4
    assert gauge("ews_spool_filling", {"target": "t-spool"}) == 1  # past 30 %: said loudly
    (tmp_path / ".000000000099-1.lp.tmp").write_bytes(b"torn")  # a write cut off before its rename
    again = Spool(tmp_path, max_bytes=10 * len(batch(1)))  # as after a crash
    assert not list(tmp_path.glob(".*.tmp"))
    assert (len(again), again.readings, again.bytes) == (4, 4, sum(len(batch(i)) for i in range(4)))
    order = []
    while (head := again.head()) is not None:
        path, lines, _ = head
        order.append(lines)
        again.pop(path)
    assert order == [batch(i) for i in range(4)]
    assert again.bytes == 0 and not list(tmp_path.glob("*.lp"))
    assert gauge("ews_spool_bytes", {"target": "main"}) == 0
    small = Spool(tmp_path / "small", max_bytes=len(batch(1)) * 2)
    assert small.append(batch(1), 1) and small.append(batch(2), 1)
    assert not small.append(batch(3), 1)  # refused whole, nothing written
    assert len(small) == 2 and len(list((tmp_path / "small").glob("*.lp"))) == 2


def test_files_the_spool_did_not_write_are_left_alone(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A copy an operator left in the spool or its quarantine made the start fail with a
    ValueError from the file's name: the night it is needed, the pipeline must start."""
    s = Spool(tmp_path, max_bytes=10_000)
    assert s.append(batch(1), readings=1)
    (tmp_path / "backup.lp").write_bytes(batch(2))
    (tmp_path / "quarantine" / "fixed-by-hand.lp").write_bytes(batch(3))
    again = Spool(tmp_path, max_bytes=10_000)
    assert (len(again), again.readings, again.bytes, again.quarantine_bytes) == (1, 1, len(batch(1)), 0)
    assert "backup.lp is not a batch this pipeline wrote" in caplog.text and "fixed-by-hand.lp" in caplog.text
    head = again.head()
    assert head is not None and head[1] == batch(1)
    again.pop(head[0])
    assert again.head() is None and (tmp_path / "backup.lp").exists()
    assert again.append(batch(4), readings=1)  # numbering goes on past the batch it had


def test_sink_spools_while_down_and_replays_in_order(tmp_path: Path) -> None:
    db = FakeInflux()
    sink = Sink(db, Spool(tmp_path, 1 << 20), threading.Event(), min_backoff_s=0.01, max_backoff_s=0.02)
    assert sink.store(batch(0), 1) == "written"
    db.down = True
    assert [sink.store(batch(i), 1) for i in (1, 2, 3)] == ["spooled"] * 3
    db.down = False
    # while the spool holds batches, a new one joins its tail so order is kept
    time.sleep(0.03)
    assert sink.store(batch(4), 1) in ("written", "spooled")
    deadline = time.monotonic() + 5
    while len(sink.spool) and time.monotonic() < deadline:
        time.sleep(0.03)
        sink.drain()
    assert db.got == [batch(i) for i in range(5)]
    assert sink.store(batch(5), 1) == "written"


def test_sink_waits_when_the_spool_is_full(tmp_path: Path) -> None:
    db = FakeInflux()
    db.down = True
    stop = threading.Event()
    sink = Sink(db, Spool(tmp_path, max_bytes=len(batch(1)) * 2), stop, min_backoff_s=0.01, max_backoff_s=0.05)
    assert sink.store(batch(1), 1) == "spooled" and sink.store(batch(2), 1) == "spooled"
    # full: store blocks (no ack) until InfluxDB takes the spool back
    threading.Timer(0.3, lambda: setattr(db, "down", False)).start()
    t0 = time.monotonic()
    assert sink.store(batch(3), 1) in ("written", "spooled")
    assert time.monotonic() - t0 >= 0.25
    sink.drain()
    assert db.got == [batch(1), batch(2), batch(3)]
    # full and stopping: the batch is not stored and the caller must not acknowledge it
    db.down = True
    sink.store(batch(4), 1)
    sink.store(batch(5), 1)
    threading.Timer(0.2, stop.set).start()
    with pytest.raises(Stopped):
        sink.store(batch(6), 1)
    assert batch(6) not in db.got


def test_malformed_batches_are_quarantined(tmp_path: Path) -> None:
    db = FakeInflux()
    db.malformed.add(batch(1))
    sink = Sink(db, Spool(tmp_path, 1 << 20), threading.Event())
    assert sink.store(batch(1), 1) == "quarantined"
    assert [p.read_bytes() for p in (tmp_path / "quarantine").glob("*.lp")] == [batch(1)]


def test_a_full_disk_holds_the_batch_like_a_full_spool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """InfluxDB down and the disk full: `store` waits (the acknowledgements with it, so the
    broker keeps the messages) instead of failing the batch, and writes it once InfluxDB is back."""
    real_fsync = os.fsync

    def no_space(fd: int) -> None:  # the disk fills while the spool file is written
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", no_space)
    db = FakeInflux()
    db.down = True
    sink = Sink(db, Spool(tmp_path, 1 << 20, target="t-disk"), threading.Event(), min_backoff_s=0.01,
                max_backoff_s=0.02)
    filling: list[float | None] = []

    def back() -> None:
        filling.append(REGISTRY.get_sample_value("ews_spool_filling", {"target": "t-disk"}))
        db.down = False

    threading.Timer(0.5, back).start()
    t0 = time.monotonic()
    assert sink.store(batch(1), 1) == "written"
    assert time.monotonic() - t0 >= 0.4  # it waited for InfluxDB; nothing was lost meanwhile
    assert db.got == [batch(1)] and not list(tmp_path.glob(".*.tmp"))
    assert filling == [2]  # said loudly while it waited, and cleared once the batch was written
    assert REGISTRY.get_sample_value("ews_spool_filling", {"target": "t-disk"}) == 0


def test_the_quarantine_is_bounded_and_survives_restarts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A refusal that lasts must not fill the disk; a restart must not overwrite what is kept."""
    s = Spool(tmp_path, max_bytes=3 * len(batch(1)), target="t-quarantine")
    assert s.quarantine_batch(batch(1), 1) is not None
    again = Spool(tmp_path, max_bytes=3 * len(batch(1)), target="t-quarantine")  # as after a restart
    assert again.quarantine_batch(batch(2), 1) is not None and again.quarantine_batch(batch(3), 1) is not None
    kept = sorted((tmp_path / "quarantine").glob("*.lp"))
    assert [p.read_bytes() for p in kept] == [batch(1), batch(2), batch(3)]  # none overwritten
    dropped = REGISTRY.get_sample_value("ews_spool_quarantine_dropped_readings_total", {"target": "t-quarantine"})
    assert again.quarantine_batch(batch(4), 1) is None  # full: counted, not kept
    after = REGISTRY.get_sample_value("ews_spool_quarantine_dropped_readings_total", {"target": "t-quarantine"})
    assert after == (dropped or 0) + 1
    kept[0].unlink()  # an operator dealt with one
    assert again.quarantine_batch(batch(5), 1) is not None

    def no_space(folder: Path, name: str, data: bytes) -> Path:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("ingest.spool._write_durably", no_space)
    assert again.quarantine_batch(batch(6), 1) is None  # a full disk: counted, not raised
    assert REGISTRY.get_sample_value("ews_spool_quarantine_dropped_readings_total", {"target": "t-quarantine"}) \
        == after + 1


@pytest.fixture
def slow_server() -> Iterator[tuple[str, dict[str, float]]]:
    """An InfluxDB stand-in whose /write takes `delay` seconds, then answers 204."""
    state = {"delay": 2.0, "writes": 0.0}

    class H(QuietHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            time.sleep(state["delay"])
            state["writes"] += 1
            self.send_response(204)
            self.end_headers()

    with HttpStub(H) as stub:
        yield stub.url, state


def test_a_write_past_its_deadline_goes_to_the_spool(tmp_path: Path, slow_server: tuple[str, dict[str, float]]) -> None:
    url, state = slow_server
    db = InfluxV1(url, "ews", write_timeout_s=0.3)
    sink = Sink(db, Spool(tmp_path, 1 << 20), threading.Event(), min_backoff_s=0.01)
    t0 = time.monotonic()
    assert sink.store(batch(1), 1) == "spooled"
    assert time.monotonic() - t0 < 1.5  # did not wait for the slow answer
    state["delay"] = 0.0
    time.sleep(0.05)
    sink.drain()
    assert len(sink.spool) == 0 and sink.healthy
    db.close()


def test_large_batches_go_out_as_concurrent_parts(tmp_path: Path) -> None:
    db = FakeInflux()
    sink = Sink(db, Spool(tmp_path, 1 << 30), threading.Event(), concurrency=2)
    big = b"".join(batch(i) for i in range(20_000))
    assert sink.store(big, 20_000) == "written"
    assert len(db.got) == 2 and all(p.endswith(b"\n") for p in db.got)
    assert sorted(b"".join(db.got).splitlines()) == sorted(big.splitlines())
    sink.close()
    assert split_lines(batch(1), 4) == [batch(1)]  # small batches stay whole


def test_background_writes_that_fail_end_in_the_spool(tmp_path: Path) -> None:
    """A batch started in the background while InfluxDB goes down is stored through the careful
    path (spooled, then replayed); the one started after it lands either way; nothing is lost."""
    db = FakeInflux()
    gate = threading.Event()
    real_write = db.write

    def write(lines: bytes) -> None:
        gate.wait(5)  # both batches are started before either is answered
        real_write(lines)

    db.write = write  # type: ignore[method-assign]
    sink = Sink(db, Spool(tmp_path, 1 << 20), threading.Event(), min_backoff_s=0.01, max_backoff_s=0.02,
                concurrency=2)
    first, second = sink.begin(batch(1)), sink.begin(batch(2))
    assert first is not None and second is not None
    db.down = True
    gate.set()
    assert sink.finish(batch(1), 1, first) == "spooled"
    assert sink.finish(batch(2), 1, second) == "spooled"  # joins the tail: order kept
    assert sink.begin(batch(3)) is None  # while the spool holds batches, nothing bypasses it
    db.down = False
    time.sleep(0.03)
    deadline = time.monotonic() + 5
    while len(sink.spool) and time.monotonic() < deadline:
        time.sleep(0.03)
        sink.drain()
    assert db.got == [batch(1), batch(2)]
    writing = sink.begin(batch(3))
    assert writing is not None and sink.finish(batch(3), 1, writing) == "written"
    assert db.got == [batch(1), batch(2), batch(3)]
    sink.close()
