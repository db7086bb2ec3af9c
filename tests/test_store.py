"""SQLite store: one transaction per transition, append-only logs, state kept across reopen,
held items, silences, and files from the first release upgraded in place."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from ews.store import AuditEntry, Delivery, Held, Store


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


# the schema of the first release, as files written by it look
_FIRST_RELEASE = """
CREATE TABLE warnings (id TEXT PRIMARY KEY, rule TEXT NOT NULL, rule_name TEXT NOT NULL DEFAULT '',
    subject TEXT NOT NULL, kind TEXT NOT NULL, community TEXT NOT NULL, street TEXT NOT NULL,
    district TEXT NOT NULL, level INTEGER NOT NULL, peak_level INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('open', 'resolved')), measure TEXT NOT NULL, value REAL,
    unit TEXT NOT NULL, threshold REAL, opened_event_ts_ms INTEGER NOT NULL, opened_ts_ms INTEGER NOT NULL,
    updated_event_ts_ms INTEGER NOT NULL, updated_ts_ms INTEGER NOT NULL, resolved_event_ts_ms INTEGER,
    resolved_ts_ms INTEGER, rule_version TEXT NOT NULL, drill INTEGER NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '', acknowledged INTEGER NOT NULL DEFAULT 0, acknowledged_by TEXT,
    acknowledged_ts_ms INTEGER);
CREATE TABLE transitions (id INTEGER PRIMARY KEY AUTOINCREMENT, warning_id TEXT NOT NULL REFERENCES warnings (id),
    type TEXT NOT NULL CHECK (type IN ('open', 'raise', 'lower', 'resolve')), level_before INTEGER NOT NULL,
    level_after INTEGER NOT NULL, value REAL, measure TEXT NOT NULL, event_ts_ms INTEGER NOT NULL,
    processed_ts_ms INTEGER NOT NULL, rule_version TEXT NOT NULL, readings TEXT NOT NULL DEFAULT '[]');
CREATE TABLE audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, ts_ms INTEGER NOT NULL, actor TEXT NOT NULL,
    action TEXT NOT NULL, warning_id TEXT, detail TEXT NOT NULL DEFAULT '{}');
CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, idempotency_key TEXT NOT NULL UNIQUE,
    transition_id INTEGER NOT NULL REFERENCES transitions (id), warning_id TEXT NOT NULL, channel TEXT NOT NULL,
    recipients TEXT NOT NULL, payload TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'failed')), attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ts_ms INTEGER NOT NULL, last_error TEXT, created_ts_ms INTEGER NOT NULL, sent_ts_ms INTEGER);
INSERT INTO warnings VALUES ('W-old', 'rain-3h', '', 'RG-A1', 'rain', '440106001001', '440106001', '440106',
    2, 2, 'open', 'rain_3h', 55.0, 'mm', 50.0, 1000, 2000, 1000, 2000, NULL, NULL, 'v1', 0, 'msg', 0, NULL, NULL);
INSERT INTO transitions VALUES (1, 'W-old', 'open', 0, 2, 55.0, 'rain_3h', 1000, 2000, 'v1', '[]');
INSERT INTO audit VALUES (1, 2000, 'rules', 'warning.open', 'W-old', '{}');
INSERT INTO outbox VALUES (1, '1:console', 1, 'W-old', 'console', '[]',
    '{"transition":"open","warning":{},"message":"m"}', 'pending', 0, 2000, NULL, 2000, NULL);
"""


def test_a_file_from_the_first_release_is_upgraded_in_place(tmp_path: Path) -> None:
    db = tmp_path / "old.sqlite"
    raw = sqlite3.connect(db)
    raw.executescript(_FIRST_RELEASE)
    raw.close()
    with Store(db) as store:
        (w,) = store.open_warnings()
        assert (w["id"], w["notified_level"], w["escalated_tier"], w["pending_resolve"]) == ("W-old", 0, -1, None)
        (row,) = store.due_outbox(2_000, ["console"])
        assert (row["notice"], row["deadline_ts_ms"]) == ("transition", None)
        assert store.audit_log()[0]["event_ts_ms"] is None
        # and it takes the new kinds of rows
        store.commit(3_000, warning={**w, "acknowledged": True, "acknowledged_by": "张三"},
                     audits=[AuditEntry("张三", "warning.acknowledge", "W-old", {"comment": "ok"})])
    with Store(db) as again:
        assert again.warning("W-old")["acknowledged_by"] == "张三"  # type: ignore[index]
        assert [a["action"] for a in again.audit_log()] == ["warning.open", "warning.acknowledge"]


def test_held_items_leave_in_the_transaction_that_sends_them(tmp_path: Path) -> None:
    store = Store(tmp_path / "ews.sqlite")
    held = [Held("console|a|real", "console", {"id": "a"}, {"message": "m1"}),
            Held("console|b|real", "console", {"id": "b"}, {"message": "m1"})]
    tid = store.commit(2_000, warning=_warning("W-1"), transition=_transition(), held=held)
    later = Held("console|a|real", "console", {"id": "a"}, {"message": "m2"}, transition_id=tid, warning_id="W-1")
    store.commit(2_500, held=[later])
    assert store.next_held_ms() == 2_000
    assert store.held_due(1_999) == []
    due = store.held_due(2_000)  # both groups' oldest items are from 2 000: all three items
    assert [(h["group_key"], h["item"]["message"]) for h in due] == [
        ("console|a|real", "m1"), ("console|b|real", "m1"), ("console|a|real", "m2")]
    assert store.pending_count() == 3  # held items count as messages still to deliver
    bad = Delivery("console", [{"id": "a"}], {"transition": "group"}, key="G1:console", transition_id=tid,
                   warning_id="W-1")
    with pytest.raises(sqlite3.IntegrityError):  # a failed send-out keeps the items held
        store.commit(3_000, deliveries=[bad, bad], drop_held=[h["id"] for h in due])
    assert len(store.held()) == 3
    store.commit(3_000, deliveries=[bad], drop_held=[h["id"] for h in due])
    assert store.held() == [] and store.pending_count() == 1


def test_silences_are_stored_with_author_and_reason(tmp_path: Path) -> None:
    store = Store(tmp_path / "ews.sqlite")
    s = {"id": "S-1", "kind": "maintenance", "region": "440106001", "sensor": None, "rule": None,
         "starts_ts_ms": 5_000, "ends_ts_ms": 9_000, "author": "李强", "reason": "泵站检修", "created_ts_ms": 1_000}
    store.add_silence(s, "李强")
    assert store.silences(active_at_ms=4_999) == []
    assert [x["id"] for x in store.silences(active_at_ms=5_000)] == ["S-1"]
    assert store.silences(active_at_ms=9_000) == []
    assert store.cancel_silence("S-1", "王五", 6_000) is True
    assert store.silences(active_at_ms=6_000) == []
    (row,) = store.silences()
    assert (row["author"], row["reason"], row["cancelled_by"], row["cancelled_ts_ms"]) == (
        "李强", "泵站检修", "王五", 6_000)
    assert [(a["actor"], a["action"]) for a in store.audit_log()] == [
        ("李强", "maintenance.create"), ("王五", "silence.cancel")]
