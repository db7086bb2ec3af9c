"""SQLite store: one transaction per transition, append-only logs, state kept across reopen."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from ews.store import Delivery, Store


def _warning(wid: str, *, state: str = "open", level: int = 2) -> dict[str, Any]:
    return {
        "id": wid, "rule": "rain-3h", "rule_name": "3h rain", "subject": "RG-A1", "kind": "rain",
        "community": "440106001001", "street": "440106001", "district": "440106",
        "level": level, "peak_level": level, "state": state, "measure": "rain_3h", "value": 55.0,
        "unit": "mm", "threshold": 50.0, "opened_event_ts_ms": 1_000, "opened_ts_ms": 2_000,
        "updated_event_ts_ms": 1_000, "updated_ts_ms": 2_000, "resolved_event_ts_ms": None,
        "resolved_ts_ms": None, "rule_version": "v1", "drill": False, "message": "msg",
        "acknowledged": False, "acknowledged_by": None, "acknowledged_ts_ms": None,
    }


def _transition(kind: str = "open", before: int = 0, after: int = 2) -> dict[str, Any]:
    return {
        "type": kind, "level_before": before, "level_after": after, "value": 55.0,
        "measure": "rain_3h", "event_ts_ms": 1_000, "processed_ts_ms": 2_000,
        "rule_version": "v1", "readings": [[900, 20.0], [1_000, 35.0]],
    }


def _deliveries() -> list[Delivery]:
    return [
        Delivery("console", [{"id": "a"}], {"transition": "open", "warning": {}, "message": "m"}),
        Delivery("webhook", [{"id": "b"}], {"transition": "open", "warning": {}, "message": "m"}),
    ]


def test_transition_audit_and_outbox_survive_reopen(tmp_path: Path) -> None:
    db = tmp_path / "ews.sqlite"
    with Store(db) as store:
        tid = store.commit_transition(_warning("W-1"), _transition(), _deliveries())

    with Store(db) as again:
        assert [w["id"] for w in again.open_warnings()] == ["W-1"]
        assert again.find_open("rain-3h", "RG-A1") is not None
        ts = again.transitions("W-1")
        assert [(t["id"], t["type"], t["level_before"], t["level_after"]) for t in ts] == [
            (tid, "open", 0, 2)
        ]
        assert ts[0]["readings"] == [[900, 20.0], [1000, 35.0]]
        audit = again.audit_log("W-1")
        assert [a["action"] for a in audit] == ["warning.open"]
        assert audit[0]["detail"]["channels"] == ["console", "webhook"]
        rows = again.outbox()
        assert [(r["channel"], r["idempotency_key"], r["state"]) for r in rows] == [
            ("console", f"{tid}:console", "pending"),
            ("webhook", f"{tid}:webhook", "pending"),
        ]
        assert rows[1]["recipients"] == [{"id": "b"}]


def test_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    store = Store(tmp_path / "ews.sqlite")
    same_channel_twice = [_deliveries()[0], _deliveries()[0]]  # duplicate idempotency key
    with pytest.raises(sqlite3.IntegrityError):
        store.commit_transition(_warning("W-1"), _transition(), same_channel_twice)
    assert store.warnings() == []
    assert store.transitions() == []
    assert store.audit_log() == []
    assert store.outbox() == []


def test_one_open_warning_per_identity(tmp_path: Path) -> None:
    store = Store(tmp_path / "ews.sqlite")
    store.commit_transition(_warning("W-1"), _transition(), [])
    with pytest.raises(sqlite3.IntegrityError):
        store.commit_transition(_warning("W-2"), _transition(), [])
    # resolving the first frees the identity for a new warning
    store.commit_transition(_warning("W-1", state="resolved"), _transition("resolve", 2, 0), [])
    store.commit_transition(_warning("W-2"), _transition(), [])
    assert [w["id"] for w in store.open_warnings()] == ["W-2"]
    assert {w["id"]: w["state"] for w in store.warnings()} == {"W-1": "resolved", "W-2": "open"}


def test_transitions_and_audit_are_append_only(tmp_path: Path) -> None:
    store = Store(tmp_path / "ews.sqlite")
    store.commit_transition(_warning("W-1"), _transition(), [])
    raw = sqlite3.connect(tmp_path / "ews.sqlite")
    for sql in ("UPDATE transitions SET level_after = 4", "DELETE FROM transitions",
                "UPDATE audit SET actor = 'x'", "DELETE FROM audit"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            raw.execute(sql)
    raw.close()


def test_attempts_are_recorded_with_audit_rows(tmp_path: Path) -> None:
    store = Store(tmp_path / "ews.sqlite")
    store.commit_transition(_warning("W-1"), _transition(), _deliveries())
    due = store.due_outbox(2_000, ["webhook"])
    assert [r["channel"] for r in due] == ["webhook"]
    store.record_attempt(due[0], now_ms=2_100, state="pending", next_attempt_ts_ms=3_000,
                         error="HTTP 503", detail={})
    assert store.due_outbox(2_999, ["webhook"]) == []
    assert (store.pending_count(), store.pending_count(2_999), store.pending_count(3_000)) == (2, 1, 2)
    assert store.next_due_ms(["webhook"]) == 3_000
    row = store.due_outbox(3_000, ["webhook"])[0]
    assert row["attempts"] == 1 and row["last_error"] == "HTTP 503"
    store.record_attempt(row, now_ms=3_010, state="sent", next_attempt_ts_ms=None, error=None,
                         detail={})
    sent = store.outbox("sent")
    assert [(r["channel"], r["attempts"], r["sent_ts_ms"]) for r in sent] == [("webhook", 2, 3_010)]
    attempts = [a for a in store.audit_log("W-1") if a["action"] == "delivery.attempt"]
    assert [(a["detail"]["attempt"], a["detail"]["result"]) for a in attempts] == [
        (1, "pending"), (2, "sent")
    ]


def test_usable_from_two_threads(tmp_path: Path) -> None:
    store = Store(tmp_path / "ews.sqlite")
    errors: list[BaseException] = []

    def write(prefix: str) -> None:
        try:
            for i in range(50):
                store.audit(i, prefix, "test", None, {"i": i})
        except BaseException as exc:  # collected and asserted on below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(p,)) for p in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    log = store.audit_log()
    assert sorted((a["actor"], a["detail"]["i"]) for a in log) == sorted(
        (p, i) for p in ("a", "b") for i in range(50)
    )


def test_new_warning_id_is_stable_and_unique(tmp_path: Path) -> None:
    store = Store(tmp_path / "ews.sqlite")
    first = store.new_warning_id("rain-3h", "RG-A1", 1_000)
    assert first == store.new_warning_id("rain-3h", "RG-A1", 1_000)
    assert first.startswith("W-") and len(first) == 12
    store.commit_transition(_warning(first), _transition(), [])
    assert store.new_warning_id("rain-3h", "RG-A1", 1_000) == f"{first}-2"
