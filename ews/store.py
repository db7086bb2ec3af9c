"""SQLite storage of warnings, their transitions, the audit log and the notification outbox.

One connection in WAL mode, guarded by a lock, so the rules thread and the outbox worker can
share it. A transition, its audit row and its outbox rows are committed together: after a
crash either all of them exist or none does, so a restart neither loses nor repeats a
message. Transitions and audit rows are append-only (triggers refuse updates and deletes).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS warnings (
    id TEXT PRIMARY KEY,
    rule TEXT NOT NULL,
    rule_name TEXT NOT NULL DEFAULT '',
    subject TEXT NOT NULL,
    kind TEXT NOT NULL,
    community TEXT NOT NULL,
    street TEXT NOT NULL,
    district TEXT NOT NULL,
    level INTEGER NOT NULL,
    peak_level INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('open', 'resolved')),
    measure TEXT NOT NULL,
    value REAL,
    unit TEXT NOT NULL,
    threshold REAL,
    opened_event_ts_ms INTEGER NOT NULL,
    opened_ts_ms INTEGER NOT NULL,
    updated_event_ts_ms INTEGER NOT NULL,
    updated_ts_ms INTEGER NOT NULL,
    resolved_event_ts_ms INTEGER,
    resolved_ts_ms INTEGER,
    rule_version TEXT NOT NULL,
    drill INTEGER NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    acknowledged INTEGER NOT NULL DEFAULT 0,
    acknowledged_by TEXT,
    acknowledged_ts_ms INTEGER
);
-- at most one open warning per identity (rule, subject)
CREATE UNIQUE INDEX IF NOT EXISTS warnings_open_identity
    ON warnings (rule, subject) WHERE state = 'open';
CREATE INDEX IF NOT EXISTS warnings_community ON warnings (community, state);

CREATE TABLE IF NOT EXISTS transitions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    warning_id TEXT NOT NULL REFERENCES warnings (id),
    type TEXT NOT NULL CHECK (type IN ('open', 'raise', 'lower', 'resolve')),
    level_before INTEGER NOT NULL,
    level_after INTEGER NOT NULL,
    value REAL,
    measure TEXT NOT NULL,
    event_ts_ms INTEGER NOT NULL,
    processed_ts_ms INTEGER NOT NULL,
    rule_version TEXT NOT NULL,
    readings TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS transitions_warning ON transitions (warning_id);

CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ts_ms INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    warning_id TEXT,
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS audit_warning ON audit (warning_id);

CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key TEXT NOT NULL UNIQUE,
    transition_id INTEGER NOT NULL REFERENCES transitions (id),
    warning_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    recipients TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ts_ms INTEGER NOT NULL,
    last_error TEXT,
    created_ts_ms INTEGER NOT NULL,
    sent_ts_ms INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (state, next_attempt_ts_ms);

CREATE TRIGGER IF NOT EXISTS transitions_append_only_u BEFORE UPDATE ON transitions
    BEGIN SELECT RAISE(ABORT, 'transitions are append-only'); END;
CREATE TRIGGER IF NOT EXISTS transitions_append_only_d BEFORE DELETE ON transitions
    BEGIN SELECT RAISE(ABORT, 'transitions are append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_append_only_u BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_append_only_d BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""

_WARNING_COLUMNS = (
    "id", "rule", "rule_name", "subject", "kind", "community", "street", "district", "level",
    "peak_level", "state", "measure", "value", "unit", "threshold", "opened_event_ts_ms",
    "opened_ts_ms", "updated_event_ts_ms", "updated_ts_ms", "resolved_event_ts_ms",
    "resolved_ts_ms", "rule_version", "drill", "message", "acknowledged", "acknowledged_by",
    "acknowledged_ts_ms",
)


_UPSERT_WARNING = (
    f"INSERT INTO warnings ({', '.join(_WARNING_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(_WARNING_COLUMNS))}) ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _WARNING_COLUMNS[1:])
)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One outbox row to write with a transition: a channel and who it reaches."""

    channel: str
    recipients: list[dict[str, Any]]
    payload: dict[str, Any]


def idempotency_key(transition_id: int, channel: str) -> str:
    return f"{transition_id}:{channel}"


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _warning_dict(row: sqlite3.Row) -> dict[str, Any]:
    d = dict(row)
    d["drill"] = bool(d["drill"])
    d["acknowledged"] = bool(d["acknowledged"])
    return d


def _outbox_dict(row: sqlite3.Row) -> dict[str, Any]:
    d = dict(row)
    d["recipients"] = json.loads(d["recipients"])
    d["payload"] = json.loads(d["payload"])
    return d


class Store:
    """Warnings, transitions, audit and outbox in one SQLite file."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        # autocommit mode: transactions are opened explicitly with BEGIN IMMEDIATE
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable across process kills in WAL mode; only power loss may drop
            # the last commits
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return list(self._db.execute(sql, args))

    # -- warnings ------------------------------------------------------------------------

    def new_warning_id(self, rule: str, subject: str, event_ts_ms: int) -> str:
        """A readable id that is the same when the same event is replayed into a fresh file."""
        base = "W-" + hashlib.sha1(f"{rule}|{subject}|{event_ts_ms}".encode()).hexdigest()[:10]
        candidate, n = base, 1
        while self.warning(candidate) is not None:
            n += 1
            candidate = f"{base}-{n}"
        return candidate

    def warning(self, warning_id: str) -> dict[str, Any] | None:
        rows = self._query("SELECT * FROM warnings WHERE id = ?", (warning_id,))
        return _warning_dict(rows[0]) if rows else None

    def find_open(self, rule: str, subject: str) -> dict[str, Any] | None:
        rows = self._query(
            "SELECT * FROM warnings WHERE rule = ? AND subject = ? AND state = 'open'",
            (rule, subject),
        )
        return _warning_dict(rows[0]) if rows else None

    def open_warnings(self, community: str | None = None) -> list[dict[str, Any]]:
        if community is None:
            rows = self._query("SELECT * FROM warnings WHERE state = 'open' ORDER BY opened_ts_ms")
        else:
            rows = self._query(
                "SELECT * FROM warnings WHERE state = 'open' AND community = ? ORDER BY opened_ts_ms",
                (community,),
            )
        return [_warning_dict(r) for r in rows]

    def warnings(self) -> list[dict[str, Any]]:
        return [_warning_dict(r) for r in self._query("SELECT * FROM warnings ORDER BY opened_ts_ms")]

    # -- transitions ---------------------------------------------------------------------

    def commit_transition(
        self,
        warning: dict[str, Any],
        transition: dict[str, Any],
        deliveries: list[Delivery],
        actor: str = "rules",
    ) -> int:
        """Write the warning's new state, the transition, its audit row and its outbox rows
        in one transaction; returns the transition id."""
        values = tuple(int(warning[c]) if c in ("drill", "acknowledged") else warning.get(c)
                       for c in _WARNING_COLUMNS)
        ts_ms = int(transition["processed_ts_ms"])
        with self._tx() as db:
            db.execute(_UPSERT_WARNING, values)
            cur = db.execute(
                "INSERT INTO transitions (warning_id, type, level_before, level_after, value, "
                "measure, event_ts_ms, processed_ts_ms, rule_version, readings) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    warning["id"], transition["type"], int(transition["level_before"]),
                    int(transition["level_after"]), transition.get("value"),
                    transition["measure"], int(transition["event_ts_ms"]), ts_ms,
                    transition["rule_version"], _dumps(transition.get("readings", [])),
                ),
            )
            tid = cur.lastrowid
            assert tid is not None
            detail = {
                "transition_id": tid,
                "level_before": int(transition["level_before"]),
                "level_after": int(transition["level_after"]),
                "value": transition.get("value"),
                "event_ts_ms": int(transition["event_ts_ms"]),
                "channels": [d.channel for d in deliveries],
            }
            db.execute(
                "INSERT INTO audit (ts_ms, actor, action, warning_id, detail) VALUES (?, ?, ?, ?, ?)",
                (ts_ms, actor, f"warning.{transition['type']}", warning["id"], _dumps(detail)),
            )
            db.executemany(
                "INSERT INTO outbox (idempotency_key, transition_id, warning_id, channel, "
                "recipients, payload, state, attempts, next_attempt_ts_ms, created_ts_ms) "
                "VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?)",
                [
                    (
                        idempotency_key(tid, d.channel), tid, warning["id"], d.channel,
                        _dumps(d.recipients), _dumps(d.payload), ts_ms, ts_ms,
                    )
                    for d in deliveries
                ],
            )
        return tid

    def transitions(self, warning_id: str | None = None) -> list[dict[str, Any]]:
        if warning_id is None:
            rows = self._query("SELECT * FROM transitions ORDER BY id")
        else:
            rows = self._query(
                "SELECT * FROM transitions WHERE warning_id = ? ORDER BY id", (warning_id,)
            )
        out = []
        for r in rows:
            d = dict(r)
            d["readings"] = json.loads(d["readings"])
            out.append(d)
        return out

    # -- audit ---------------------------------------------------------------------------

    def audit(
        self, ts_ms: int, actor: str, action: str, warning_id: str | None, detail: dict[str, Any]
    ) -> int:
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO audit (ts_ms, actor, action, warning_id, detail) VALUES (?, ?, ?, ?, ?)",
                (ts_ms, actor, action, warning_id, _dumps(detail)),
            )
            assert cur.lastrowid is not None
            return cur.lastrowid

    def audit_log(self, warning_id: str | None = None) -> list[dict[str, Any]]:
        if warning_id is None:
            rows = self._query("SELECT * FROM audit ORDER BY seq")
        else:
            rows = self._query("SELECT * FROM audit WHERE warning_id = ? ORDER BY seq", (warning_id,))
        out = []
        for r in rows:
            d = dict(r)
            d["detail"] = json.loads(d["detail"])
            out.append(d)
        return out

    # -- outbox --------------------------------------------------------------------------

    def due_outbox(
        self, now_ms: int, channels: Collection[str], limit: int = 100
    ) -> list[dict[str, Any]]:
        if not channels:
            return []
        marks = ", ".join("?" * len(channels))
        rows = self._query(
            f"SELECT * FROM outbox WHERE state = 'pending' AND next_attempt_ts_ms <= ? "
            f"AND channel IN ({marks}) ORDER BY next_attempt_ts_ms, id LIMIT ?",
            (now_ms, *channels, limit),
        )
        return [_outbox_dict(r) for r in rows]

    def next_due_ms(self, channels: Collection[str]) -> int | None:
        if not channels:
            return None
        marks = ", ".join("?" * len(channels))
        rows = self._query(
            f"SELECT MIN(next_attempt_ts_ms) FROM outbox WHERE state = 'pending' "
            f"AND channel IN ({marks})",
            tuple(channels),
        )
        value = rows[0][0] if rows else None
        return None if value is None else int(value)

    def pending_count(self, due_by_ms: int | None = None) -> int:
        """Outbox rows still to deliver (only those due by `due_by_ms` when given)."""
        if due_by_ms is None:
            rows = self._query("SELECT COUNT(*) FROM outbox WHERE state = 'pending'")
        else:
            rows = self._query(
                "SELECT COUNT(*) FROM outbox WHERE state = 'pending' AND next_attempt_ts_ms <= ?",
                (due_by_ms,),
            )
        return int(rows[0][0])

    def outbox(self, state: str | None = None) -> list[dict[str, Any]]:
        if state is None:
            rows = self._query("SELECT * FROM outbox ORDER BY id")
        else:
            rows = self._query("SELECT * FROM outbox WHERE state = ? ORDER BY id", (state,))
        return [_outbox_dict(r) for r in rows]

    def record_attempt(
        self,
        row: dict[str, Any],
        *,
        now_ms: int,
        state: str,
        next_attempt_ts_ms: int | None,
        error: str | None,
        detail: dict[str, Any],
        actor: str = "outbox",
    ) -> None:
        """Store the outcome of one delivery attempt and its audit row together."""
        if state not in ("pending", "sent", "failed"):
            raise ValueError(f"unknown outbox state {state!r}")
        attempts = int(row["attempts"]) + 1
        with self._tx() as db:
            db.execute(
                "UPDATE outbox SET state = ?, attempts = ?, next_attempt_ts_ms = ?, "
                "last_error = ?, sent_ts_ms = ? WHERE id = ?",
                (
                    state, attempts,
                    next_attempt_ts_ms if next_attempt_ts_ms is not None else row["next_attempt_ts_ms"],
                    error, now_ms if state == "sent" else None, row["id"],
                ),
            )
            full = {
                "outbox_id": row["id"], "idempotency_key": row["idempotency_key"],
                "channel": row["channel"], "attempt": attempts, "result": state,
                "error": error, **detail,
            }
            db.execute(
                "INSERT INTO audit (ts_ms, actor, action, warning_id, detail) VALUES (?, ?, ?, ?, ?)",
                (now_ms, actor, "delivery.attempt", row["warning_id"], _dumps(full)),
            )
