"""Writes InfluxDB will not take whole: a request over its size limit, points older than its
retention policy keeps, a field type conflict. On the real InfluxDB 1.6 wherever it can show
them; the v2 answers (InfluxDB 2.x does not run here) on a stub speaking the documented format."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client import REGISTRY

from ews.config import InfluxConfig, IngestConfig, MqttConfig, sample_dir
from ews.regions import RegionRegistry
from ews.sensors import SensorRegistry
from ews.servers import InfluxServer, LocalServers, VictoriaServer, influxdb
from ingest.collector import Collector
from ingest.influx_v1 import InfluxV1, WriteError, duration_ms, refused
from ingest.influx_v2 import InfluxV2
from ingest.process import MessageProcessor
from ingest.refusal import BEYOND_RETENTION, REFUSED, TOO_LARGE, TYPE_CONFLICT, UNPARSABLE, read_refusal
from ingest.sink import Sink
from ingest.spool import Spool

from .conftest import COMM_A1, STREET_A, VICTORIA_PASSWORD, VICTORIA_USER
from .httpstub import HttpStub, QuietHandler
from .mqttpeers import dead_letters, publisher
from .test_ingest_spool import FakeInflux
from .waiting import wait_for

H = 3_600_000
TAGS = f"community={COMM_A1},district=440106,sensor=RG-A1,street={STREET_A}"


def rain(ts: list[int], sensor: str = "RG-A1") -> bytes:
    return "".join(f"rain,{TAGS.replace('RG-A1', sensor)} value={k % 7}.5 {t}\n" for k, t in enumerate(ts)).encode()


def refused_count(cause: str, target: str) -> float:
    return REGISTRY.get_sample_value("ews_influx_refused_points_total", {"target": target, "cause": cause}) or 0.0


def quarantined(spool: Spool) -> list[bytes]:
    return [ln for p in sorted(spool.quarantine.glob("*.lp")) for ln in p.read_bytes().splitlines(keepends=True)]


def make_db(url: str, name: str, duration: str = "1h") -> InfluxV1:
    httpx.post(f"{url}/query", data={
        "q": f'CREATE DATABASE "{name}" WITH DURATION {duration} REPLICATION 1 SHARD DURATION 1h NAME "short"',
    }).raise_for_status()
    return InfluxV1(url, name)


# --- what InfluxDB's answers say ------------------------------------------------------------------

# answers as InfluxDB 1.6 gave them here; the 2.x one as its API documents a 422
ANSWERS = [
    (400, '{"error":"partial write: points beyond retention policy dropped=3"}', BEYOND_RETENTION, 3, None),
    (400, '{"error":"partial write: field type conflict: input field \\"value\\" on measurement \\"rain\\" is type '
          'integer, already exists as type float dropped=2"}', TYPE_CONFLICT, 2, "rain"),
    (400, '{"error":"partial write: unable to parse \'bad line here\': invalid field format dropped=0"}',
     UNPARSABLE, 0, None),
    (413, '{"error":"Request Entity Too Large"}', TOO_LARGE, None, None),
    (413, "<html><body>413 Request Entity Too Large</body></html>", TOO_LARGE, None, None),  # nginx
    (400, '{"error":"unable to parse \'x\': missing fields"}', REFUSED, None, None),
    (422, '{"code":"unprocessable entity","message":"failure writing points to database: partial write: '
          'points beyond retention policy dropped=1"}', BEYOND_RETENTION, 1, None),
]


@pytest.mark.parametrize(("status", "body", "cause", "dropped", "measurement"), ANSWERS)
def test_refusals_are_read(status: int, body: str, cause: str, dropped: int | None, measurement: str | None) -> None:
    r = read_refusal(status, body)
    assert (r.cause, r.dropped, r.measurement) == (cause, dropped, measurement)
    assert r.partial == (dropped is not None)
    err = refused("InfluxDB /write", status, body)
    assert not err.retryable and err.refusal == r
    assert refused("InfluxDB /write", 404, '{"error":"database not found"}').retryable  # configuration: heals


def test_durations_as_influxql_shows_them() -> None:
    assert duration_ms("0s") == 0
    assert duration_ms("1h0m0s") == H
    assert duration_ms("168h0m0s") == 168 * H
    assert duration_ms("1h30m0s") == 90 * 60_000
    assert duration_ms("500ms") == 500


# --- on the real InfluxDB 1.6 ---------------------------------------------------------------------


def test_a_partial_write_stores_the_rest_and_keeps_only_what_was_left_out(
    servers: LocalServers, influx_db: str, tmp_path: Path,
) -> None:
    db = make_db(servers.influx_url, influx_db)  # keeps one hour
    spool = Spool(tmp_path, 1 << 20, target="t-partial")
    sink = Sink(InfluxV1(servers.influx_url, influx_db), spool, threading.Event(), concurrency=2)
    sink.prepare()
    assert sink.retention_ms == H
    now = int(time.time() * 1000)
    fresh = [now - 60_000 * k for k in range(40)]
    old = [now - 2 * H - 60_000 * k for k in range(3)]
    before = refused_count(BEYOND_RETENTION, "t-partial")
    assert sink.store(rain(fresh + old), 43) == "quarantined"
    assert db.count("rain") == 40  # InfluxDB stored everything else
    assert quarantined(spool) == rain(fresh + old).splitlines(keepends=True)[40:]  # the three, no more
    assert refused_count(BEYOND_RETENTION, "t-partial") - before == 3
    assert sink.healthy and len(spool) == 0  # not an outage: nothing spooled, nothing retried

    # a field type conflict: someone first wrote gas as an integer; the rain in the same request goes in
    httpx.post(f"{servers.influx_url}/write", params={"db": influx_db, "precision": "ms"},
               content=f"gas,sensor=GS-X value=1i {now}\n".encode()).raise_for_status()
    gas = f"gas,sensor=GS-X value=2.5 {now - 1000}\ngas,sensor=GS-X value=3.5 {now - 2000}\n".encode()
    more = rain([now - 1000, now - 2000], "RG-A2")
    before = refused_count(TYPE_CONFLICT, "t-partial")
    writing = sink.begin(more + gas)  # the background path reads the same answers
    assert sink.finish(more + gas, 4, writing) == "quarantined"
    assert quarantined(spool)[3:] == gas.splitlines(keepends=True)
    assert refused_count(TYPE_CONFLICT, "t-partial") - before == 2
    assert db.count("rain", "WHERE \"sensor\" = 'RG-A2'") == 2
    sink.close()
    db.close()


def test_an_altered_retention_policy_is_read_again(
    servers: LocalServers, influx_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    db = make_db(servers.influx_url, influx_db)
    sink = Sink(InfluxV1(servers.influx_url, influx_db), Spool(tmp_path, 1 << 20), threading.Event())
    sink.prepare()
    assert sink.retention_ms == H
    db.query(f'ALTER RETENTION POLICY "short" ON "{influx_db}" DURATION 30d', method="POST")
    now = int(time.time() * 1000)
    writing = sink.begin(rain([now]))
    assert sink.finish(rain([now]), 1, writing) == "written"
    assert sink.retention_ms == H  # read every few minutes, not at every batch
    monkeypatch.setattr("ingest.sink.RETENTION_REFRESH_S", 0.0)
    writing = sink.begin(rain([now - 1000]))
    assert sink.finish(rain([now - 1000]), 1, writing) == "written"
    assert wait_for(lambda: sink.retention_ms == 30 * 24 * H)
    sink.close()
    db.close()


@pytest.fixture(scope="module")
def small_influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxServer]:
    """InfluxDB taking requests of at most 64 KB, like a proxy left at a small body limit."""
    srv = influxdb(Path(tmp_path_factory.mktemp("small-influx")), settings={"max-body-size": "65536"})
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def test_requests_too_large_go_again_smaller(small_influx: InfluxServer, tmp_path: Path) -> None:
    writer = InfluxV1(small_influx.url, "small")
    writer.create_database()
    with pytest.raises(WriteError) as info:
        writer.write(rain([1_764_300_000_000 + k for k in range(2000)]))  # about 190 KB
    assert info.value.refusal is not None and info.value.refusal.cause == TOO_LARGE
    spool = Spool(tmp_path, 1 << 24, target="t-large")
    sink = Sink(writer, spool, threading.Event(), concurrency=2)
    first = [1_764_300_000_000 + k for k in range(5000)]
    assert sink.store(rain(first), 5000) == "written"
    assert sink.max_request_bytes is not None and sink.max_request_bytes <= 65536
    # later batches go out in requests under the learned size at once, on both paths
    second = [1_764_400_000_000 + k for k in range(5000)]
    sent: list[int] = []
    real = writer.write

    def write(lines: bytes) -> None:
        sent.append(len(lines))
        real(lines)

    writer.write = write  # type: ignore[method-assign]
    writing = sink.begin(rain(second))
    assert sink.finish(rain(second), 5000, writing) == "written"
    assert sum(sent) == len(rain(second)) and max(sent) <= 65536  # no request was refused
    assert writer.count("rain") == 10_000 and not quarantined(spool) and len(spool) == 0
    gauge = REGISTRY.get_sample_value("ews_influx_request_limit_bytes", {"target": "t-large"})
    assert gauge == sink.max_request_bytes
    sink.close()


def test_a_single_line_over_the_limit_is_quarantined(tmp_path: Path) -> None:
    """Nothing smaller to send: that one line is kept aside, the rest of the batch goes in."""

    class Limited(FakeInflux):
        def write(self, lines: bytes) -> None:
            if len(lines) > 300:
                raise refused("InfluxDB /write", 413, '{"error":"Request Entity Too Large"}')
            super().write(lines)

    db = Limited()
    spool = Spool(tmp_path, 1 << 20, target="t-line")
    sink = Sink(db, spool, threading.Event())
    long = f"rain,sensor=RG-LONG,note={'x' * 400} value=1 1764300000000\n".encode()
    small = rain([1_764_300_000_000 + k for k in range(6)]).splitlines(keepends=True)
    assert sink.store(b"".join([*small[:2], long, *small[2:]]), 7) == "quarantined"
    assert quarantined(spool) == [long]
    assert b"".join(db.got) == b"".join(small)
    assert refused_count(TOO_LARGE, "t-line") == 1


def test_readings_older_than_influxdb_keeps_are_rejected_before_the_write(
    servers: LocalServers, influx_db: str, mini_sensors: SensorRegistry, mini_regions: RegionRegistry,
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """A device with a broken clock: its readings are dead-lettered as beyond_retention at once,
    the readings around them are stored, and InfluxDB is never sent what it would leave out."""
    db = make_db(servers.influx_url, influx_db)
    col = Collector(
        MqttConfig(port=servers.mqtt.port, client_id="test-ingest-retention", drill_root=None),
        InfluxConfig(url=servers.influx_url, database=influx_db, flush_interval_s=0.02),
        MessageProcessor(mini_sensors, mini_regions, allowed_lateness_s=7 * 86400), ingest_cfg=IngestConfig(),
        spool_dir=tmp_path / "spool",
    )
    watcher, dead = dead_letters(servers.mqtt.port, "test-retention-dl")
    before = REGISTRY.get_sample_value("ews_ingest_rejected_total", {"reason": "beyond_retention"}) or 0
    before_refused = refused_count(BEYOND_RETENTION, "main")
    with caplog.at_level(logging.WARNING, logger="ingest.collector"):
        col.start()
    # a week's allowed lateness against an hour's retention: said at start
    assert any("less than the allowed lateness of 168 h" in r.message for r in caplog.records)
    pub = publisher(servers.mqtt.port, "test-retention-pub")
    now = int(time.time() * 1000)
    good = [now - 60_000 * k for k in range(5)]
    try:
        assert col.sinks[False].retention_ms == H
        readings = [{"sensor": "RG-A1", "ts": t, "value": 1.0} for t in good]
        readings.insert(2, {"sensor": "RG-A1", "ts": now - 3 * H, "value": 9.0})  # three hours ago: gone
        pub.publish(f"ews/440106/{STREET_A}/batch/GW-A", orjson.dumps({"readings": readings}), qos=1)
        pub.publish(f"ews/440106/{STREET_A}/{COMM_A1}/rain/RG-A1", orjson.dumps({"ts": now - 5 * H, "value": 2.0}),
                    qos=1)
        assert wait_for(lambda: col.stats["messages"] >= 2 and len(dead) >= 2)
        assert sorted(d["reason"] for d in dead) == ["beyond_retention"] * 2
        assert all("older than InfluxDB keeps readings (1 h" in d["detail"] for d in dead)
        after = REGISTRY.get_sample_value("ews_ingest_rejected_total", {"reason": "beyond_retention"}) or 0
        assert after - before == 2
        assert db.count("rain") == 5
        assert refused_count(BEYOND_RETENTION, "main") == before_refused  # InfluxDB refused nothing
        assert not list((tmp_path / "spool" / "quarantine").glob("*.lp"))
    finally:
        pub.loop_stop()
        watcher.loop_stop()
        col.stop()
        db.close()


# --- the v2 API ---------------------------------------------------------------------------------


@pytest.fixture
def influx2_stub() -> Iterator[str]:
    """Answers as InfluxDB 2.x documents: the bucket's retention rules, and a 422 partial write."""

    class H2(QuietHandler):
        def do_GET(self) -> None:
            assert self.path.startswith("/api/v2/buckets?")
            body = orjson.dumps({"buckets": [{
                "id": "0a1b2c3d4e5f6789", "orgID": "1234567890abcdef", "name": "ews", "type": "user",
                "retentionRules": [{"type": "expire", "everySeconds": 604800, "shardGroupDurationSeconds": 86400}],
                "createdAt": "2026-11-01T00:00:00Z", "updatedAt": "2026-11-01T00:00:00Z", "links": {},
                "labels": [],
            }]})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            body = orjson.dumps({"code": "unprocessable entity", "message": "failure writing points to database: "
                                 "partial write: points beyond retention policy dropped=1"})
            self.send_response(422)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with HttpStub(H2) as stub:
        yield stub.url


def test_v2_reads_the_buckets_retention_and_its_partial_writes(influx2_stub: str) -> None:
    w = InfluxV2(influx2_stub, "ews", org="district-440106", token="tok")
    try:
        assert w.retention_ms() == 7 * 24 * H
        with pytest.raises(WriteError) as info:
            w.write(rain([1_764_300_000_000]))
        r = info.value.refusal
        assert not info.value.retryable and r is not None and (r.cause, r.dropped) == (BEYOND_RETENTION, 1)
    finally:
        w.close()


def test_a_server_without_the_buckets_api_leaves_the_retention_unknown(
    victoria: VictoriaServer, tmp_path: Path,
) -> None:
    w = InfluxV2(victoria.url, "ews", username=VICTORIA_USER, password=VICTORIA_PASSWORD)
    sink = Sink(w, Spool(tmp_path, 1 << 20), threading.Event())
    sink.prepare()  # VictoriaMetrics has no /api/v2/buckets: unknown, not an error
    assert sink.retention_ms is None
    assert sink.store(rain([1_764_300_000_000], "RG-RETENTION"), 1) == "written"  # a series of its own
    sink.close()


def test_the_quarantine_is_sent_again_once_the_cause_is_mended(
    servers: LocalServers, influx_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """`ews quarantine replay` sends with the pipeline's own database and millisecond precision
    (by hand, forgetting `precision=ms` puts every reading in 1970): what InfluxDB takes is
    deleted, what it still refuses stays, and once the cause is gone it goes in too."""
    import yaml

    from ews.cli import main

    now = int(time.time() * 1000) // 1000 * 1000
    db = InfluxV1(servers.influx_url, influx_db)
    db.create_database()
    db.write(f"gas,sensor=GS-X value=1i {now}\n".encode())  # gas first written as an integer
    folder = tmp_path / "state" / "spool" / "quarantine"
    folder.mkdir(parents=True)
    good, clash = rain([now - 60_000, now - 120_000]), f"gas,sensor=GS-X value=2.5 {now - 1000}\n".encode()
    (folder / "000000000001-2.lp").write_bytes(good)
    (folder / "000000000002-1.lp").write_bytes(clash)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({"influxdb": {"url": servers.influx_url, "database": influx_db},
                                   "state_dir": str(tmp_path / "state"),
                                   "registries": {"regions": str(sample_dir() / "regions.yaml"),
                                                  "sensors": str(sample_dir() / "sensors.yaml")}}))
    try:
        assert main(["quarantine", "list", "--config", str(cfg)]) == 0
        assert "2 files, 3 readings" in capsys.readouterr().out
        assert main(["quarantine", "replay", "--config", str(cfg)]) == 1
        out = capsys.readouterr().out
        assert "field type conflict" in out and "2 readings stored; 1 still refused" in out
        assert sorted(p.name for p in folder.iterdir()) == ["000000000002-1.lp"]
        series = db.query(f'SELECT "value" FROM "rain" WHERE time > {now - 3_600_000}ms')
        assert sorted(row[0] for row in series[0]["values"]) == [now - 120_000, now - 60_000]  # their own times
        db.query('DROP MEASUREMENT "gas"', method="POST")  # the cause mended
        assert main(["quarantine", "replay", "--config", str(cfg)]) == 0
        assert not list(folder.iterdir()) and db.count("gas") == 1
        assert main(["quarantine", "list", "--config", str(cfg)]) == 0
        assert "the quarantine is empty" in capsys.readouterr().out
    finally:
        db.close()
