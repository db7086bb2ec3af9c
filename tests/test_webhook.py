"""Signed webhook delivery through the outbox against a local HTTP server that fails at first."""

from __future__ import annotations

import copy
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from ews.config import ChannelConfig
from ews.levels import Level
from ews.models import LevelChange
from ews.regions import RegionRegistry
from ews.sensors import SensorRegistry
from ews.store import Store
from notifiers.channels import build_channel
from notifiers.channels.base import DeliveryError, Notification
from notifiers.channels.webhook import WebhookChannel, verify_signature
from notifiers.lifecycle import WarningService
from notifiers.outbox import OutboxWorker
from notifiers.routing import Router
from notifiers.templates import Renderer

from .httpstub import HttpStub, QuietHandler, expected_signature

SECRET = "s3cret-for-tests"


class Receiver:
    """State of the test server: fails the first `fail_first` requests with 503."""

    def __init__(self, fail_first: int) -> None:
        self.fail_first = fail_first
        self.lock = threading.Lock()
        self.requests = 0
        self.bad_signatures = 0
        self.accepted: Counter[str] = Counter()
        self.bodies: dict[str, dict[str, Any]] = {}


def _handler(rx: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(QuietHandler):
        def _reply(self, code: int) -> None:
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.path.startswith("/status/"):
                self._reply(int(self.path.rsplit("/", 1)[1]))
                return
            if self.path == "/slow":
                time.sleep(0.5)
                self._reply(200)
                return
            ts = self.headers["X-EWS-Timestamp"]
            key = self.headers["Idempotency-Key"]
            with rx.lock:
                rx.requests += 1
                if self.headers["X-EWS-Signature"] != expected_signature(SECRET, ts, body):
                    rx.bad_signatures += 1
                    self._reply(401)
                    return
                if rx.requests <= rx.fail_first:
                    self._reply(503)
                    return
                rx.accepted[key] += 1
                rx.bodies[key] = json.loads(body)
            self._reply(200)

    return Handler


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    rx = Receiver(fail_first=3)
    with HttpStub(_handler(rx)) as stub:
        yield rx, stub.url


def _change(subject: str, community: str, before: Level, after: Level, ts_ms: int) -> LevelChange:
    return LevelChange(
        rule_id="rain-3h", rule_version="v1", kind="rain", subject=subject, community=community,
        measure="rain_3h", unit="mm", before=before, after=after, value=60.0, threshold=50.0,
        event_ts_ms=ts_ms,
    )


def test_outbox_delivers_each_key_once_with_valid_signatures(
    tmp_path: Path, receiver: tuple[Receiver, str], monkeypatch: pytest.MonkeyPatch,
    mini_regions: RegionRegistry, mini_sensors: SensorRegistry,
) -> None:
    rx, base = receiver
    monkeypatch.setenv("EWS_TEST_WEBHOOK_SECRET", SECRET)
    cfg = ChannelConfig(name="hook", type="webhook", url=f"{base}/ews", secret_env="EWS_TEST_WEBHOOK_SECRET",
                        backoff_s=0.05, max_backoff_s=0.2, max_attempts=10)
    channel = build_channel(cfg)
    assert isinstance(channel, WebhookChannel)

    regions = copy.deepcopy(mini_regions)  # the fixture is shared by the whole session
    for node in regions.nodes.values():  # the fixture's contacts list "webhook"; use our name
        node.contacts = [c.model_copy(update={"channels": ["hook"]}) for c in node.contacts]
    store = Store(tmp_path / "ews.sqlite")
    svc = WarningService(store, regions, mini_sensors, Router(regions), Renderer.load(), None, ["hook"])
    svc.apply([
        _change("RG-A1", "440106001001", Level.NONE, Level.YELLOW, 1_000),
        _change("RG-B1", "440106002001", Level.NONE, Level.ORANGE, 1_000),
    ])
    svc.apply([_change("RG-A1", "440106001001", Level.YELLOW, Level.RED, 2_000)])
    svc.apply([_change("RG-B1", "440106002001", Level.ORANGE, Level.NONE, 3_000)])
    keys = [r["idempotency_key"] for r in store.outbox()]
    assert len(keys) == 4

    now = {"ms": int(time.time() * 1000)}
    worker = OutboxWorker(store, {"hook": channel}, clock=lambda: now["ms"] / 1000)
    for _ in range(100):
        worker.run_once()
        if not store.outbox("pending"):
            break
        now["ms"] += 250  # past the longest backoff
    channel.close()

    assert [r["state"] for r in store.outbox()] == ["sent"] * 4
    assert rx.bad_signatures == 0
    assert rx.requests == 4 + 3  # every key once, plus the three refused at first
    assert dict(rx.accepted) == {k: 1 for k in keys}
    for row in store.outbox():
        got = rx.bodies[row["idempotency_key"]]
        assert got["idempotency_key"] == row["idempotency_key"]
        assert got["warning"] == row["payload"]["warning"]
        assert got["transition"] == row["payload"]["transition"]
        assert got["message"] == row["payload"]["message"]
        assert [r["id"] for r in got["recipients"]] == [r["id"] for r in row["recipients"]]
    # one audit row per attempt: 4 deliveries and 3 refusals
    attempts = [a for a in store.audit_log() if a["action"] == "delivery.attempt"]
    assert Counter(a["detail"]["result"] for a in attempts) == {"sent": 4, "pending": 3}


def _note() -> Notification:
    return Notification(outbox_id=1, idempotency_key="7:hook", channel="hook", transition="open",
                        transition_id=7, warning={"id": "W-1"}, recipients=[], message="m")


@pytest.mark.parametrize(("status", "retryable"), [
    (400, False), (401, False), (404, False), (408, True), (429, True), (500, True), (503, True),
])
def test_status_codes_map_to_retryability(
    receiver: tuple[Receiver, str], status: int, retryable: bool
) -> None:
    _, base = receiver
    ch = WebhookChannel("hook", f"{base}/status/{status}", SECRET)
    with pytest.raises(DeliveryError) as err:
        ch.send(_note())
    assert err.value.retryable is retryable
    assert str(status) in str(err.value)
    ch.close()


def test_connection_errors_and_timeouts_are_retryable(receiver: tuple[Receiver, str]) -> None:
    _, base = receiver
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for ch in (WebhookChannel("hook", f"http://127.0.0.1:{port}/", SECRET),
               WebhookChannel("hook", f"{base}/slow", SECRET, timeout_s=0.1)):
        with pytest.raises(DeliveryError) as err:
            ch.send(_note())
        assert err.value.retryable is True
        ch.close()


def test_verify_signature() -> None:
    body = b'{"a":1}'
    good = expected_signature(SECRET, "1700000000", body)
    assert verify_signature(SECRET, "1700000000", body, good)
    assert not verify_signature(SECRET, "1700000000", body + b" ", good)
    assert not verify_signature("other", "1700000000", body, good)
    assert not verify_signature(SECRET, "1700000001", body, good)
    assert not verify_signature(SECRET, "1700000000", body, None)
    assert verify_signature(SECRET, "1700000000", body, good, now_s=1700000100, tolerance_s=300)
    assert not verify_signature(SECRET, "1700000000", body, good, now_s=1700000400, tolerance_s=300)


def test_group_body_lists_its_items(receiver: tuple[Receiver, str]) -> None:
    rx, base = receiver
    rx.fail_first = 0
    items = (
        {"transition": "open", "transition_id": 7, "warning": {"id": "W-1", "level": "yellow"}, "message": "一"},
        {"transition": "raise", "transition_id": 9, "warning": {"id": "W-2", "level": "orange"}, "message": "二"},
    )
    note = Notification(outbox_id=3, idempotency_key="G5:hook", channel="hook", transition="group",
                        transition_id=9, warning=items[1]["warning"], recipients=[{"id": "C-duty"}],
                        message="2条预警动态：\n1. 一\n2. 二", notice="group", items=items, drill=False)
    ch = WebhookChannel("hook", f"{base}/ews", SECRET)
    ch.send(note)
    ch.close()
    body = rx.bodies["G5:hook"]
    assert (body["version"], body["notice"], body["transition"], body["drill"]) == (1, "group", "group", False)
    assert [(i["transition_id"], i["warning"]["id"]) for i in body["items"]] == [(7, "W-1"), (9, "W-2")]
    assert body["warning"]["id"] == "W-2"


def test_notification_from_a_row_written_before_notices_existed() -> None:
    row = {"id": 1, "idempotency_key": "4:hook", "channel": "hook", "transition_id": 4, "attempts": 0,
           "recipients": [], "payload": {"transition": "open", "warning": {"id": "W-1", "drill": True}, "message": "m"}}
    note = Notification.from_row(row)
    assert (note.notice, note.items, note.drill, note.attempt) == ("transition", (), True, 1)
