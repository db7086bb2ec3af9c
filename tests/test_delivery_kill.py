"""`ews run` killed with -9 between a transition and its delivery: after a restart the message
is delivered, exactly once (the receiver checks the idempotency key).

Two kills on the real servers: first while the transition's notification is held for its
grouping window (committed, not yet in the outbox), then while its delivery is in flight
(the receiver holds the request open). The receiver acts on a key once and only answers
requests it acted on.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
import yaml

from ews.config import sample_dir
from ews.servers import LocalServers
from tests.httpstub import HttpStub, QuietHandler, signed

from .pipelineproc import PipelineRun
from .waiting import wait_for

SECRET = "kill-test-secret"
GAS = ("GS-0001", "440106001003")  # a gas detector of the sample district


class HoldingReceiver:
    """Holds the first request open until released (and never acts on it); acts on every
    other key once; counts requests per key."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: Counter[str] = Counter()
        self.acted: Counter[str] = Counter()
        self.bodies: list[dict[str, Any]] = []
        self.held = threading.Event()
        self.release = threading.Event()
        self.bad = 0
        outer = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                key = self.headers.get("Idempotency-Key", "")
                with outer.lock:
                    outer.seen[key] += 1
                    first = not outer.held.is_set()
                    outer.held.set()
                    ok = signed(SECRET, self.headers, body)
                    outer.bad += int(not ok)
                if first:
                    outer.release.wait(60)  # the sender dies while we wait
                    return
                with outer.lock:
                    if ok and outer.acted[key] == 0:
                        outer.bodies.append(orjson.loads(body))
                    if ok:
                        outer.acted[key] += 1
                self.send_response(200 if ok else 401)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.http = HttpStub(Handler)
        self.url = f"{self.http.url}/ews"


@pytest.fixture
def receiver() -> Iterator[HoldingReceiver]:
    rx = HoldingReceiver()
    yield rx
    rx.release.set()
    rx.http.close()



def _count(db: Path, sql: str) -> int:
    if not db.exists():
        return 0
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return int(con.execute(sql).fetchone()[0])
    except sqlite3.OperationalError:  # tables not created yet
        return 0
    finally:
        con.close()


@pytest.mark.integration
def test_kill_minus_nine_between_transition_and_delivery(
    servers: LocalServers, influx_db: str, receiver: HoldingReceiver, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    db = state / "warnings.sqlite"
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({
        "mqtt": {"port": servers.mqtt.port, "client_id": "kill-test-pipeline", "subscriptions": ["ews/440106/#"]},
        "influxdb": {"url": servers.influx_url, "database": influx_db, "flush_interval_s": 0.02},
        "registries": {"regions": str(sample_dir() / "regions.yaml"), "sensors": str(sample_dir() / "sensors.yaml")},
        "state_dir": str(state),
        "notifiers": {
            "group_window_s": 5,
            "channels": [{"name": "webhook", "type": "webhook", "url": receiver.url, "secret_env": "EWS_KILL_SECRET",
                          "max_attempts": 100, "backoff_s": 0.2, "max_backoff_s": 1.0, "timeout_s": 30}],
        },
    }), encoding="utf-8")
    log = tmp_path / "pipeline.log"
    pub = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="kill-test-pub")
    pub.connect("127.0.0.1", servers.mqtt.port)
    pub.loop_start()
    topic = f"ews/{GAS[1][:6]}/{GAS[1][:9]}/{GAS[1]}/gas/{GAS[0]}"
    run: PipelineRun | None = None
    try:
        # 1. a gas alarm: the transition is committed, its messages held for the window; kill
        run = PipelineRun(cfg, log, EWS_KILL_SECRET=SECRET)
        now = int(time.time() * 1000)
        pub.publish(topic, orjson.dumps({"ts": now - 2000, "value": 31.0}), qos=1).wait_for_publish(5)
        assert wait_for(lambda: _count(db, "SELECT COUNT(*) FROM transitions") >= 1, 30), "the transition"
        run.kill()
        assert _count(db, "SELECT COUNT(*) FROM held") > 0
        assert _count(db, "SELECT COUNT(*) FROM outbox") == 0  # killed before any message was written

        # 2. restart: the held group goes out after its window; kill while it is in flight
        run = PipelineRun(cfg, log, EWS_KILL_SECRET=SECRET)
        assert receiver.held.wait(30), log.read_text(errors="replace")[-3000:]
        run.kill()
        receiver.release.set()  # its sender is gone; nothing was acted on
        assert _count(db, "SELECT COUNT(*) FROM outbox WHERE state = 'pending'") >= 1

        # 3. restart: delivered again, acted on once; then the gas clears and that is delivered
        run = PipelineRun(cfg, log, EWS_KILL_SECRET=SECRET)
        assert wait_for(lambda: sum(receiver.acted.values()) >= 1, 30), "the redelivery"
        pub.publish(topic, orjson.dumps({"ts": int(time.time() * 1000) - 1000, "value": 0.0}),
                    qos=1).wait_for_publish(5)
        assert wait_for(lambda: _count(db, "SELECT COUNT(*) FROM transitions") >= 2
                        and _count(db, "SELECT COUNT(*) FROM held") == 0
                        and _count(db, "SELECT COUNT(*) FROM outbox WHERE state = 'pending'") == 0, 30), "the resolve"
        assert run.stop() == 0
        run = None
    finally:
        if run is not None:
            run.kill()
        pub.loop_stop()
        pub.disconnect()

    con = sqlite3.connect(db)
    transitions = [r[0] for r in con.execute("SELECT type FROM transitions WHERE warning_id IN "
                                             "(SELECT id FROM warnings WHERE subject = ?) ORDER BY id", (GAS[0],))]
    keys = [r[0] for r in con.execute("SELECT idempotency_key FROM outbox WHERE state = 'sent'")]
    pending = con.execute("SELECT COUNT(*) FROM outbox WHERE state != 'sent'").fetchone()[0]
    con.close()
    # one warning, opened once though the pipeline restarted twice, then resolved
    assert transitions == ["open", "resolve"]
    assert pending == 0 and receiver.bad == 0
    # every message acted on exactly once; the one in flight at the kill was sent twice
    assert dict(receiver.acted) == {k: 1 for k in keys}
    first = next(k for k, n in receiver.seen.items() if n == 2)
    assert receiver.seen[first] == 2 and sum(receiver.seen.values()) == len(keys) + 1
    subjects = [(b["transition"], b["warning"]["subject"]) for b in receiver.bodies]
    assert ("open", GAS[0]) in subjects and ("resolve", GAS[0]) in subjects
