"""Restart on the real servers: killed inside a 3-hour accumulation, the pipeline comes back to
the level it would have reached without the restart, and notifies nothing twice.

Expected levels come from the CMA definitions with plain loops over the readings sent.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
import yaml

from ews.config import (
    ChannelConfig,
    Config,
    InfluxConfig,
    MqttConfig,
    NotifierConfig,
    RegistryConfig,
    RuleEngineConfig,
    sample_dir,
)
from ews.levels import Level
from ews.models import ReadingBatch
from ews.pipeline import Pipeline
from ews.sensors import SensorRegistry
from ews.servers import LocalServers, VictoriaServer, free_port
from ingest.influx_v1 import InfluxV1
from rules.engine import RuleEngine
from rules.loader import load_rules
from rules.rebuild import rebuild
from rules.runtime import RuleRuntime

from .conftest import VICTORIA_PASSWORD, VICTORIA_USER
from .httpstub import Hook
from .pipelineproc import PipelineRun
from .waiting import wait_for

pytestmark = pytest.mark.integration
STEP = 300_000
LEVELS = ["none", "blue", "yellow", "orange", "red"]


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.http.close()



def stored(db: InfluxV1) -> int:
    try:
        return db.count("rain")
    except RuntimeError:  # the database is made by the pipeline's first write
        return 0


def cma(series: list[tuple[int, float]]) -> list[tuple[str, str]]:
    """Transitions of the national rainstorm levels after each reading, with loops."""
    out, cur = [], 0
    for i, (t, _) in enumerate(series):
        def s(h: int, t: int = t, i: int = i) -> float:
            return round(sum(v for u, v in series[: i + 1] if u > t - h * 3_600_000), 6)

        lv = 4 if s(3) >= 100 else 3 if s(3) >= 50 else 2 if s(6) >= 50 else 1 if s(12) >= 50 else 0
        if lv != cur:
            out.append(("open" if cur == 0 else "resolve" if lv == 0 else "raise" if lv > cur else "lower",
                        LEVELS[lv] if lv else LEVELS[cur]))
            cur = lv
    return out


def config_doc(servers: LocalServers, db: str, state: Path, hook: Hook, client_id: str) -> dict[str, Any]:
    return {
        "mqtt": {"host": "127.0.0.1", "port": servers.mqtt.port, "client_id": client_id,
                 "subscriptions": ["ews/#"]},
        "influxdb": {"url": servers.influx_url, "database": db, "flush_interval_s": 0.02},
        "registries": {"regions": str(sample_dir() / "regions.yaml"), "sensors": str(sample_dir() / "sensors.yaml")},
        "state_dir": str(state),
        "notifiers": {"channels": [{"name": "webhook", "type": "webhook", "url": hook.url}]},
    }


class Run(PipelineRun):
    """`ews run` in a child process, killed with SIGKILL (no draining, no goodbye)."""

    def kill_once_recorded(self, state: Path, deliveries: int) -> None:
        """Kill it once its outbox has recorded `deliveries` as sent. A kill between a webhook's
        answer and that record makes the next run send the notification again, under the same
        idempotency key, as at-least-once delivery must (tests/test_delivery_kill.py); these tests
        are about the rules' state across the kill, and count every delivery."""
        def recorded() -> bool:
            with sqlite3.connect(f"file:{state / 'warnings.sqlite'}?mode=ro", uri=True) as db:
                return db.execute("SELECT count(*) FROM outbox WHERE state = 'sent'").fetchone()[0] >= deliveries

        assert wait_for(recorded, 10), "the outbox did not record the delivery"
        self.kill()


class RainGauge:
    """The sample's first rain gauge, and a QoS 1 publisher of its readings."""

    def __init__(self, port: int, client_id: str):
        self.sensor = next(s for s in yaml.safe_load((sample_dir() / "sensors.yaml").read_text(encoding="utf-8"))
                           ["sensors"] if s["kind"] == "rain")
        c = self.sensor["community"]
        self.topic = f"ews/{c[:6]}/{c[:9]}/{c}/rain/{self.sensor['id']}"
        self.pub = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        self.pub.connect("127.0.0.1", port)
        self.pub.loop_start()

    def send(self, series: list[tuple[int, float]]) -> None:
        for t, v in series:
            self.pub.publish(self.topic, orjson.dumps({"ts": t, "value": v}), qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.pub.loop_stop()


def test_kill_inside_a_3h_accumulation(servers: LocalServers, influx_db: str, hook: Hook, tmp_path: Path) -> None:
    doc = config_doc(servers, influx_db, tmp_path / "state", hook, "restart-pipeline")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(doc), encoding="utf-8")
    pipeline_cfg = Config.model_validate(doc)
    # 4 mm every 5 minutes for 3 hours, ending now: orange at 52 mm (13th reading), red at 100
    start = (int(time.time() * 1000) - 36 * STEP) // STEP * STEP
    series = [(start + k * STEP, 4.0) for k in range(36)]
    want = cma(series)
    assert want == [("open", "orange"), ("raise", "red")]
    # without the rebuild the second half alone would reach 72 mm: orange again, never red
    assert cma(series[18:]) == [("open", "orange")]

    gauge = RainGauge(servers.mqtt.port, "restart-pub")
    db = InfluxV1(servers.influx_url, influx_db)
    log = tmp_path / "pipeline.log"
    run = Run(cfg, log)
    try:
        gauge.send(series[:18])
        assert wait_for(lambda: stored(db) == 18 and hook.seen("rainstorm") == want[:1]), hook.seen("rainstorm")
        run.kill_once_recorded(tmp_path / "state", 1)  # inside the accumulation: 72 mm in the last 90 minutes
        gauge.send(series[18:])  # the broker keeps them for the pipeline's session
        run = Run(cfg, log)
        assert wait_for(lambda: stored(db) == 36 and len(hook.seen("rainstorm")) >= 2), hook.seen("rainstorm")
        time.sleep(1.0)  # anything repeated would arrive by now
        assert hook.seen("rainstorm") == want  # open orange once, raise red once: nothing repeated
        assert "rules state rebuilt from 18 readings" in log.read_text(encoding="utf-8")
    finally:
        run.stop()
        gauge.close()
        db.close()

    # the store agrees: one warning, at red, with its two transitions
    check = Pipeline(pipeline_cfg.model_copy(update={"mqtt": MqttConfig(port=servers.mqtt.port,
                                                                        client_id="restart-check")}))
    try:
        opened = check.warnings.open_warnings()
        assert [(w["rule"], w["subject"], Level(int(w["level"]))) for w in opened
                if w["rule"] == "rainstorm"] == [("rainstorm", gauge.sensor["id"], Level.RED)]
        rain = next(w for w in opened if w["rule"] == "rainstorm")
        assert [t["type"] for t in check.store.transitions(rain["id"])] == ["open", "raise"]
        # rebuilt from the same history, the engine's levels are the open warnings
        changes = check.rules.rebuild(check.cfg.influxdb, opened)
        assert [ch for ch in changes if ch.kind != "device"] == []
        levels = {k: v for k, v in check.engine.all_levels().items() if v > Level.NONE}
        assert levels == {(w["rule"], w["subject"]): Level(int(w["level"])) for w in opened}
    finally:
        check.store.close()


def test_restart_while_readings_wait_in_the_spool(own_servers: LocalServers, hook: Hook, tmp_path: Path) -> None:
    """InfluxDB goes down in the middle of a storm, the pipeline spools, and is restarted before
    the spool is replayed: its rules must still count the spooled rain. Rebuilt from InfluxDB
    alone, the 3-hour sum would be short by the spooled 48 mm: the orange warning would be lifted
    at the restart, and red would never come."""
    doc = config_doc(own_servers, "spooled", tmp_path / "state", hook, "restart-spooled")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(doc), encoding="utf-8")
    spool = tmp_path / "state" / "spool"
    start = (int(time.time() * 1000) - 36 * STEP) // STEP * STEP
    series = [(start + k * STEP, 4.0) for k in range(36)]
    stored_part, spooled_part, after = series[:6], series[6:18], series[18:]
    want = cma(series)
    assert want == [("open", "orange"), ("raise", "red")]
    # what a rebuild that misses the spooled part would come to: never red
    assert max(sum(v for u, v in stored_part + after if t - 3 * 3_600_000 < u <= t) for t, _ in after) < 100

    gauge = RainGauge(own_servers.mqtt.port, "spooled-pub")
    db = InfluxV1(own_servers.influx_url, "spooled")
    log = tmp_path / "pipeline.log"
    run = Run(cfg, log)
    try:
        gauge.send(stored_part)
        assert wait_for(lambda: stored(db) == 6)
        own_servers.influx.stop()
        gauge.send(spooled_part)
        # evaluated live from the spool: orange opens at 52 mm
        assert wait_for(lambda: hook.seen("rainstorm") == want[:1]), hook.seen("rainstorm")
        assert wait_for(lambda: sum(int(p.stem.partition("-")[2]) for p in spool.glob("*.lp")) == 12)
        run.kill_once_recorded(tmp_path / "state", 1)
        own_servers.influx.start()  # back before the pipeline: its spool is replayed after the rebuild
        run = Run(cfg, log)
        gauge.send(after)
        assert wait_for(lambda: stored(db) == 36 and len(hook.seen("rainstorm")) >= 2), hook.seen("rainstorm")
        time.sleep(1.0)  # a resolve or a repeat would arrive by now
        assert hook.seen("rainstorm") == want
        assert "rules state rebuilt from 18 readings" in log.read_text(encoding="utf-8")
        assert not list(spool.glob("*.lp"))
    finally:
        run.stop()
        gauge.close()
        db.close()


def test_history_unreadable_at_start_is_read_once_influxdb_answers(
    own_servers: LocalServers, hook: Hook, tmp_path: Path
) -> None:
    """The pipeline comes back before InfluxDB does (a power cut; InfluxDB takes minutes to load
    its shards): the rules cannot read their history at start. Judged on an empty window, the
    next reading would be 4 mm, not the 100 mm that makes red; once InfluxDB answers, the rain
    history is read after all and red is raised."""
    doc = config_doc(own_servers, "late", tmp_path / "state", hook, "restart-late")
    doc["rule_engine"] = {"late_rebuild_interval_s": 0.5}
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(doc), encoding="utf-8")
    start = (int(time.time() * 1000) - 25 * STEP) // STEP * STEP
    series = [(start + k * STEP, 4.0) for k in range(25)]
    want = cma(series)
    assert want == [("open", "orange"), ("raise", "red")]  # red with the 25th reading

    gauge = RainGauge(own_servers.mqtt.port, "late-pub")
    db = InfluxV1(own_servers.influx_url, "late")
    log = tmp_path / "pipeline.log"
    run = Run(cfg, log)
    try:
        gauge.send(series[:24])
        assert wait_for(lambda: stored(db) == 24 and hook.seen("rainstorm") == want[:1]), hook.seen("rainstorm")
        run.kill_once_recorded(tmp_path / "state", 1)
        own_servers.influx.stop()
        run = Run(cfg, log)
        assert wait_for(lambda: "rules of gas, ponding, rain" in log.read_text(encoding="utf-8"))
        gauge.send(series[24:])
        assert wait_for(lambda: any((tmp_path / "state" / "spool").glob("*.lp")))
        time.sleep(1.0)
        assert hook.seen("rainstorm") == want[:1]  # 4 mm on an empty window: nothing to raise
        own_servers.influx.start()
        assert wait_for(lambda: hook.seen("rainstorm") == want, 30), hook.seen("rainstorm")
        assert wait_for(lambda: stored(db) == 25)
        assert "water_level rebuilt late from 25 readings (1 of them from the spool)" in log.read_text(encoding="utf-8")
    finally:
        run.stop()
        gauge.close()
        db.close()


def test_a_fall_judged_without_history_is_held(tmp_path: Path) -> None:
    """InfluxDB unreadable: a rise on the window the pipeline has is passed on, a fall is not
    (the hole may be all it shows)."""
    cfg = Config(influxdb=InfluxConfig(url=f"http://127.0.0.1:{free_port()}", database="nowhere", timeout_s=2),
                 registries=RegistryConfig.sample(), rule_engine=RuleEngineConfig())
    sensors = SensorRegistry.load(sample_dir() / "sensors.yaml")
    rt = RuleRuntime(cfg, sensors)
    assert rt.rebuild(cfg.influxdb, []) == []
    assert "rain" in rt.without_history
    gauge = sensors.of_kind("rain")[0]
    t0 = (int(time.time() * 1000) - 60 * STEP) // STEP * STEP
    series = [(t0 + k * STEP, 4.0 if k < 13 else 0.0) for k in range(60)]  # 52 mm, then five dry hours
    assert cma(series) == [("open", "orange"), ("lower", "yellow")]
    idx = sensors.index[gauge.id]
    changes = [c for t, v in series for c in rt.process(ReadingBatch.of([idx], [t], [v])) if c.rule_id == "rainstorm"]
    assert [(c.before, c.after) for c in changes] == [(Level.NONE, Level.ORANGE)]
    assert rt.engine.levels("rainstorm")[gauge.id] == Level.YELLOW  # the engine has moved; the fall is held

    # orange was notified before the restart: on its empty window the engine rises to yellow,
    # which is a fall from what the duty officers have, and held as such
    rt = RuleRuntime(cfg, sensors)
    assert rt.rebuild(cfg.influxdb, [{"rule": "rainstorm", "subject": gauge.id, "level": 3, "kind": "rain",
                                      "community": gauge.community}]) == []
    drizzle = [(t0 + k * STEP, 0.9) for k in range(60)]  # 54 mm over 5 hours: yellow, never orange
    assert cma(drizzle) == [("open", "yellow")]
    changes = [c for t, v in drizzle for c in rt.process(ReadingBatch.of([idx], [t], [v])) if c.rule_id == "rainstorm"]
    assert changes == [] and rt.engine.levels("rainstorm")[gauge.id] == Level.YELLOW


def test_a_second_pipeline_on_the_same_state_is_refused(
    servers: LocalServers, influx_db: str, hook: Hook, tmp_path: Path
) -> None:
    """Started twice (a service and a copy by hand), it would send every warning twice and the
    two spools would write over each other's files: the second start is refused, naming the
    first, and so is one that shares only the spool folder."""
    doc = config_doc(servers, influx_db, tmp_path / "state", hook, "twice-1")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(doc), encoding="utf-8")
    run = Run(cfg, tmp_path / "first.log")
    try:
        second = subprocess.run([sys.executable, "-m", "ews.cli", "run", "--config", str(cfg)],
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 1
        assert f"state_dir {tmp_path / 'state'} is in use by another pipeline process (pid {run.proc.pid})" \
            in second.stderr
        doc2 = config_doc(servers, influx_db, tmp_path / "state2", hook, "twice-2")
        doc2["ingest"] = {"spool_dir": str(tmp_path / "state" / "spool")}
        cfg2 = tmp_path / "config2.yaml"
        cfg2.write_text(yaml.safe_dump(doc2), encoding="utf-8")
        third = subprocess.run([sys.executable, "-m", "ews.cli", "run", "--config", str(cfg2)],
                               capture_output=True, text=True, timeout=60)
        assert third.returncode == 1 and "spool folder" in third.stderr and str(run.proc.pid) in third.stderr
        assert run.proc.poll() is None  # the first runs on
    finally:
        run.stop()


def test_history_a_server_cannot_give_holds_nothing_back(victoria: VictoriaServer,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that answers but has no InfluxQL (VictoriaMetrics here) will not give the history
    by waiting: the rules judge on what arrives, falls included, and ask again less often."""
    cfg = Config(influxdb=InfluxConfig(url=victoria.url, database="ews", username=VICTORIA_USER,
                                       password_env="EWS_TEST_VM_PASSWORD", timeout_s=5),
                 registries=RegistryConfig.sample(), rule_engine=RuleEngineConfig())
    monkeypatch.setenv("EWS_TEST_VM_PASSWORD", VICTORIA_PASSWORD)
    sensors = SensorRegistry.load(sample_dir() / "sensors.yaml")
    rt = RuleRuntime(cfg, sensors)
    assert rt.rebuild(cfg.influxdb, []) == []
    assert "rain" in rt.without_history and not rt.holding_falls
    gauge = sensors.of_kind("rain")[0]
    t0 = (int(time.time() * 1000) - 60 * STEP) // STEP * STEP
    series = [(t0 + k * STEP, 4.0 if k < 13 else 0.0) for k in range(60)]
    idx = sensors.index[gauge.id]
    changes = [c for t, v in series for c in rt.process(ReadingBatch.of([idx], [t], [v])) if c.rule_id == "rainstorm"]
    assert [(c.before, c.after) for c in changes] == [(Level.NONE, Level.ORANGE), (Level.ORANGE, Level.YELLOW)]
    every = rt.late_every_s
    assert rt.late_rebuild(list) == [] and rt.late_every_s == 2 * every


def test_a_batch_both_stored_and_still_spooled_counts_once(servers: LocalServers, influx_db: str) -> None:
    """Killed after InfluxDB took a spooled batch and before the file was deleted: the batch is
    in both places at the next start, and its rain must not be counted twice."""
    sensors = SensorRegistry.load(sample_dir() / "sensors.yaml")
    gauge = sensors.of_kind("rain")[0]
    now = int(time.time() * 1000) // STEP * STEP
    series = [(now - (11 - k) * STEP, 8.0) for k in range(12)]  # 96 mm in an hour: orange, not red
    lines = [f"rain,community={gauge.community},district={gauge.district},sensor={gauge.id},"
             f"street={gauge.street} value={v} {t}\n".encode() for t, v in series]
    db = InfluxV1(servers.influx_url, influx_db)
    db.create_database()
    db.write(b"".join(lines[:6]))
    engine = RuleEngine(load_rules(None), sensors)
    try:
        stats = rebuild(engine, db, now + 1, 26 * 3_600_000, spooled=[b"".join(lines[:6]), b"".join(lines[6:])])
    finally:
        db.close()
    assert (stats.readings, stats.spooled) == (12, 12)
    assert engine.all_levels()[("rainstorm", gauge.id)] == Level.ORANGE


def test_history_of_strings_does_not_stop_the_start(
    servers: LocalServers, influx_db: str, caplog: pytest.LogCaptureFixture,
) -> None:
    """Another writer's strings in a measurement of ours (InfluxDB keeps a field's type per
    shard, and a query answers with the strings where no shard in its range holds numbers):
    skipped and said, the other kinds rebuilt, the start goes on."""
    sensors = SensorRegistry.load(sample_dir() / "sensors.yaml")
    gauge, level = sensors.of_kind("rain")[0], sensors.of_kind("water_level")[0]
    now = int(time.time() * 1000) // STEP * STEP
    db = InfluxV1(servers.influx_url, influx_db)
    db.create_database()
    db.write(f'rain,community={gauge.community},district={gauge.district},sensor={gauge.id},'
             f'street={gauge.street} value="calibrating" {now - STEP}\n'.encode())
    db.write(f"water_level,community={level.community},district={level.district},sensor={level.id},"
             f"street={level.street} value=1.5 {now - STEP}\n".encode())
    engine = RuleEngine(load_rules(None), sensors)
    try:
        stats = rebuild(engine, db, now + 1, 26 * 3_600_000)
    finally:
        db.close()
    assert stats.errors == [] and {"rain", "water_level"} <= stats.rebuilt
    assert (stats.kinds["rain"], stats.kinds["water_level"]) == (0, 1)
    assert "rain history: 1 values that are not numbers skipped" in caplog.text


def test_reading_stored_but_never_evaluated_is_caught_on_start(
    servers: LocalServers, influx_db: str, hook: Hook, tmp_path: Path
) -> None:
    """The process died after a reading reached InfluxDB and before the rules saw it."""
    cfg = Config(
        mqtt=MqttConfig(port=servers.mqtt.port, client_id="restart-missed"),
        influxdb=InfluxConfig(url=servers.influx_url, database=influx_db, flush_interval_s=0.02),
        registries=RegistryConfig.sample(),
        state_dir=tmp_path / "state",
        notifiers=NotifierConfig(channels=[ChannelConfig(name="webhook", type="webhook", url=hook.url)]),
    )
    first = Pipeline(cfg)
    gauge = first.sensors.of_kind("rain")[0]
    start = (int(time.time() * 1000) - 25 * STEP) // STEP * STEP
    series = [(start + k * STEP, 4.0) for k in range(25)]  # the 25th reading makes 100 mm: red

    # the first 24 readings went the whole way (orange is open) ...
    db = InfluxV1(servers.influx_url, influx_db)
    db.create_database()
    lines = "".join(f"rain,community={gauge.community},district={gauge.district},sensor={gauge.id},"
                    f"street={gauge.street} value={v} {t}\n" for t, v in series).encode()
    db.write(lines)  # ... and all 25 are in InfluxDB
    idx = first.sensors.index[gauge.id]
    first._apply(first.rules.process(ReadingBatch.of([idx] * 24, [t for t, _ in series[:24]], [4.0] * 24)),
                 first.warnings)
    assert [(w["rule"], Level(int(w["level"]))) for w in first.warnings.open_warnings()] == [
        ("rainstorm", Level.ORANGE)]
    first.store.close()
    db.close()

    again = Pipeline(cfg)
    try:
        changes = again.rules.rebuild(cfg.influxdb, again.warnings.open_warnings())
        assert [(c.rule_id, c.before, c.after, c.value) for c in changes] == [
            ("rainstorm", Level.ORANGE, Level.RED, 100.0)]
        again._apply(changes, again.warnings)
        assert [(w["rule"], Level(int(w["level"]))) for w in again.warnings.open_warnings()] == [
            ("rainstorm", Level.RED)]
    finally:
        again.store.close()
    third = Pipeline(cfg)  # and the next start finds nothing left to do
    try:
        assert third.rules.rebuild(cfg.influxdb, third.warnings.open_warnings()) == []
    finally:
        third.store.close()


def test_unreachable_influxdb_leaves_the_stored_warnings_alone(tmp_path: Path) -> None:
    """No history to read: start anyway, quickly, and judge nothing on empty windows."""
    cfg = Config(influxdb=InfluxConfig(url=f"http://127.0.0.1:{free_port()}", database="nowhere", timeout_s=2),
                 registries=RegistryConfig.sample(),
                 rule_engine=RuleEngineConfig())
    rt = RuleRuntime(cfg, SensorRegistry.load(sample_dir() / "sensors.yaml"))
    stored = [{"rule": "rainstorm", "subject": "RG-0001", "level": 3, "kind": "rain", "community": "440106001004"},
              {"rule": "no_data", "subject": "GS-0001", "level": 1, "kind": "device", "community": "440106001003"}]
    t0 = time.monotonic()
    assert rt.rebuild(cfg.influxdb, stored) == []
    assert time.monotonic() - t0 < 10
    assert rt.engine.all_levels()[("no_data", "GS-0001")] == Level.BLUE  # taken from the store
