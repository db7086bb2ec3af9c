"""A duty system's endpoint that is down for 60 s, then back: every message arrives exactly once.

Real time, bounded: the receiver answers 503 for its first 60 wall seconds while warnings keep
changing; retries back off up to 2 s, so everything is through a few seconds after it
recovers. This is the suite's one long test.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from ews.config import ChannelConfig, NotifierConfig
from ews.levels import Level
from ews.regions import RegionRegistry
from ews.sensors import SensorRegistry
from ews.store import Store
from notifiers.channels import build_channel
from notifiers.lifecycle import Settings
from notifiers.outbox import OutboxPool
from tests.httpstub import HttpStub, QuietHandler, signed
from tests.test_lifecycle import T0, change, make_service

SECRET = "outage-secret"
OUTAGE_S = 60.0


class FlakyReceiver:
    """503 until `down_s` after start, then 200; counts accepted deliveries per key."""

    def __init__(self, down_s: float) -> None:
        self.down_until = time.monotonic() + down_s
        self.lock = threading.Lock()
        self.refused = 0
        self.bad_signatures = 0
        self.accepted: Counter[str] = Counter()
        self.bodies: dict[str, dict[str, Any]] = {}
        outer = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                key = self.headers.get("Idempotency-Key", "")
                with outer.lock:
                    if not signed(SECRET, self.headers, body):
                        outer.bad_signatures += 1
                        code = 401
                    elif time.monotonic() < outer.down_until:
                        outer.refused += 1
                        code = 503
                    else:
                        outer.accepted[key] += 1
                        outer.bodies[key] = orjson.loads(body)
                        code = 200
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.http = HttpStub(Handler)
        self.url = f"{self.http.url}/ews"


@pytest.fixture
def receiver() -> Iterator[FlakyReceiver]:
    rx = FlakyReceiver(OUTAGE_S)
    yield rx
    rx.http.close()


@pytest.mark.slow
def test_receiver_down_for_a_minute_gets_everything_once(
    tmp_path: Path, receiver: FlakyReceiver, monkeypatch: pytest.MonkeyPatch,
    mini_regions: RegionRegistry, mini_sensors: SensorRegistry,
) -> None:
    monkeypatch.setenv("EWS_OUTAGE_SECRET", SECRET)
    channel = build_channel(ChannelConfig(
        name="webhook", type="webhook", url=receiver.url, secret_env="EWS_OUTAGE_SECRET", timeout_s=10.0,
        max_attempts=1000, backoff_s=0.2, max_backoff_s=2.0))
    store = Store(tmp_path / "ews.sqlite")
    # a grouping window too, so held items ride through the outage as well
    settings = Settings.from_config(NotifierConfig(group_window_s=1.0, give_up_s=600))
    svc = make_service(store, mini_regions, mini_sensors, time.time, settings, channels=("webhook",))  # type: ignore[arg-type]
    pool = OutboxPool(store, {"webhook": channel}, on_failure=svc.failure_notices, idle_poll_s=0.2)
    svc.start(interval_s=0.1)
    pool.start()
    started = time.monotonic()
    try:
        # warnings keep changing through most of the outage: gauges open, rise, fall, lift
        steps = [Level.BLUE, Level.YELLOW, Level.ORANGE, Level.YELLOW, Level.NONE]
        gauges = [("RG-A1", "440106001001"), ("RG-A2", "440106001002"), ("RG-B1", "440106002001")]
        for i in range(15):
            subject, community = gauges[i % 3]
            level = steps[(i // 3) % len(steps)]
            svc.apply([change(Level.NONE, level, 10.0 * (i + 1), T0 + i * 300_000, subject=subject,
                              community=community)])
            time.sleep(3.0)
        assert time.monotonic() - started < OUTAGE_S  # all of it happened while the receiver was down

        def settled() -> bool:
            return store.pending_count() == 0
        deadline = time.monotonic() + OUTAGE_S + 60
        while not settled() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert settled(), store.outbox("pending")
    finally:
        pool.stop()
        svc.stop()
        channel.close()

    rows = store.outbox()
    keys = [r["idempotency_key"] for r in rows]
    assert rows and all(r["state"] == "sent" for r in rows)
    assert receiver.bad_signatures == 0
    assert receiver.refused > len(rows)  # it really was down, and retried more than once per row
    # every message, exactly once: a repeat could only follow a request that timed out after the
    # receiver had accepted it (then the idempotency key lets it drop the repeat)
    timeouts = sum(1 for a in store.audit_log() if a["action"] == "delivery.attempt"
                   and "timeout" in str(a["detail"].get("error")))
    assert set(receiver.accepted) == set(keys)
    assert sum(receiver.accepted.values()) - len(keys) <= timeouts
    if timeouts == 0:
        assert dict(receiver.accepted) == {k: 1 for k in keys}
    # every transition reached the receiver (alone or in a group)
    carried = {it["transition_id"] for b in receiver.bodies.values() for it in (b.get("items") or [b])}
    assert {t["id"] for t in store.transitions()} == carried
    # nothing was given up, every failed attempt is in the audit log
    assert not [r for r in rows if r["notice"] == "delivery_failed"]
    results = Counter(a["detail"]["result"] for a in store.audit_log() if a["action"] == "delivery.attempt")
    assert results["sent"] == len(rows)
    assert receiver.refused <= results["pending"] <= receiver.refused + timeouts
