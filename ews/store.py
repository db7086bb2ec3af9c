"""SQLite storage of warnings, their transitions, the audit log and the notification outbox.

One connection in WAL mode, guarded by a lock, so the rules thread and the outbox worker can
share it. A transition, its audit row and its outbox rows are committed together: after a
crash either all of them exist or none does, so a restart neither loses nor repeats a
message. Transitions and audit rows are append-only (triggers refuse updates and deletes).

Besides level transitions the file holds what the lifecycle needs across a restart: timers
and acknowledgements on the warning rows, notifications held for grouping (`held`), and
silences. Older files are upgraded in place by adding the columns they lack.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Collection, Iterator, Sequence
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
    acknowledged_ts_ms INTEGER,
    ack_comment TEXT,
    notified_level INTEGER NOT NULL DEFAULT 0,
    escalations INTEGER NOT NULL DEFAULT 0,
    escalated_tier INTEGER NOT NULL DEFAULT -1,
    reminders INTEGER NOT NULL DEFAULT 0,
    next_remind_ts_ms INTEGER,
    escalate_at_ts_ms INTEGER,
    pending_resolve TEXT
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
    detail TEXT NOT NULL DEFAULT '{}',
    event_ts_ms INTEGER
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
    sent_ts_ms INTEGER,
    notice TEXT NOT NULL DEFAULT 'transition',
    origin_ts_ms INTEGER,
    deadline_ts_ms INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (state, next_attempt_ts_ms);

-- notifications waiting for their grouping window, one row per channel and recipient
CREATE TABLE IF NOT EXISTS held (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    group_key TEXT NOT NULL,
    channel TEXT NOT NULL,
    recipient TEXT NOT NULL,
    transition_id INTEGER NOT NULL REFERENCES transitions (id),
    warning_id TEXT NOT NULL,
    item TEXT NOT NULL,
    created_ts_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS held_group ON held (group_key, created_ts_ms);

CREATE TABLE IF NOT EXISTS silences (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('silence', 'maintenance')),
    region TEXT,
    sensor TEXT,
    rule TEXT,
    starts_ts_ms INTEGER NOT NULL,
    ends_ts_ms INTEGER NOT NULL,
    author TEXT NOT NULL,
    reason TEXT NOT NULL,
    created_ts_ms INTEGER NOT NULL,
    cancelled_ts_ms INTEGER,
    cancelled_by TEXT
);

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
    "acknowledged_ts_ms", "ack_comment", "notified_level", "escalations", "escalated_tier", "reminders",
    "next_remind_ts_ms", "escalate_at_ts_ms", "pending_resolve",
)
# columns added since the first release, with their definitions, for upgrading older files
_ADDED_COLUMNS: dict[str, list[tuple[str, str]]] = {
    "warnings": [
        ("ack_comment", "TEXT"), ("notified_level", "INTEGER NOT NULL DEFAULT 0"),
        ("escalations", "INTEGER NOT NULL DEFAULT 0"), ("escalated_tier", "INTEGER NOT NULL DEFAULT -1"),
        ("reminders", "INTEGER NOT NULL DEFAULT 0"),
        ("next_remind_ts_ms", "INTEGER"), ("escalate_at_ts_ms", "INTEGER"), ("pending_resolve", "TEXT"),
    ],
    "audit": [("event_ts_ms", "INTEGER")],
    "outbox": [
        ("notice", "TEXT NOT NULL DEFAULT 'transition'"), ("origin_ts_ms", "INTEGER"),
        ("deadline_ts_ms", "INTEGER"),
    ],
}
_DEFAULTS: dict[str, Any] = {
    "ack_comment": None, "notified_level": 0, "escalations": 0, "escalated_tier": -1, "reminders": 0,
    "next_remind_ts_ms": None, "escalate_at_ts_ms": None, "pending_resolve": None,
}


_UPSERT_WARNING = (
    f"INSERT INTO warnings ({', '.join(_WARNING_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(_WARNING_COLUMNS))}) ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _WARNING_COLUMNS[1:])
)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One outbox row: a channel, who it reaches and what it says.

    Written with a transition, the defaults point it at that transition; reminders, groups and
    failure notices name their own key, transition and warning.
    """

    channel: str
    recipients: list[dict[str, Any]]
    payload: dict[str, Any]
    key: str | None = None  # idempotency key; None: "{transition id}:{channel}"
    notice: str = "transition"  # transition | group | remind | escalate | delivery_failed
    transition_id: int | None = None
    warning_id: str | None = None
    origin_ts_ms: int | None = None  # processing time of the oldest thing it reports
    deadline_ts_ms: int | None = None  # give up after this (wall time)


@dataclass(frozen=True, slots=True)
class Held:
    """A notification item waiting for its grouping window (one channel, one recipient)."""

    group_key: str
    channel: str
    recipient: dict[str, Any]
    item: dict[str, Any]
    transition_id: int | None = None  # None: the transition written with it
    warning_id: str | None = None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    actor: str
    action: str
    warning_id: str | None
    detail: dict[str, Any]
    event_ts_ms: int | None = None


def idempotency_key(transition_id: int, channel: str) -> str:
    return f"{transition_id}:{channel}"


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _warning_dict(row: sqlite3.Row) -> dict[str, Any]:
    d = dict(row)
    d["drill"] = bool(d["drill"])
    d["acknowledged"] = bool(d["acknowledged"])
    d["pending_resolve"] = json.loads(d["pending_resolve"]) if d["pending_resolve"] else None
    return d


def _warning_values(w: dict[str, Any]) -> tuple[Any, ...]:
    out: list[Any] = []
    for c in _WARNING_COLUMNS:
        v = w.get(c, _DEFAULTS.get(c))
        if c in ("drill", "acknowledged"):
            v = int(bool(v))
        elif c == "pending_resolve" and v is not None:
            v = _dumps(v)
        out.append(v)
    return tuple(out)


def _outbox_dict(row: sqlite3.Row) -> dict[str, Any]:
    d = dict(row)
    d["recipients"] = json.loads(d["recipients"])
    d["payload"] = json.loads(d["payload"])
    return d


def _held_dict(row: sqlite3.Row) -> dict[str, Any]:
    d = dict(row)
    d["recipient"] = json.loads(d["recipient"])
    d["item"] = json.loads(d["item"])
    return d


def open_sqlite(path: str) -> sqlite3.Connection:
    """A connection shared by threads under the caller's lock, in WAL mode.

    Autocommit (isolation_level None): callers open transactions explicitly with BEGIN
    IMMEDIATE. NORMAL synchronous is durable across process kills in WAL mode; only power
    loss may drop the last commits.
    """
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA busy_timeout=5000")
    return db


class Store:
    """Warnings, transitions, audit, outbox, held notifications and silences in one SQLite file."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        self._lock = threading.RLock()
        self._db = open_sqlite(self.path)
        with self._lock:
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
            self._upgrade()

    def _upgrade(self) -> None:
        """Add the columns a file written by an older version lacks (nothing is rewritten)."""
        for table, columns in _ADDED_COLUMNS.items():
            have = {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}
            for name, definition in columns:
                if name not in have:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {definition}")

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

    def read(self, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """Rows of a read-only query, as dicts (for reports; JSON columns stay text)."""
        if not sql.lstrip().upper().startswith(("SELECT", "WITH")):
            raise ValueError("Store.read runs queries only")
        return [dict(r) for r in self._query(sql, args)]

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

    def last_transition_id(self, warning_id: str) -> int | None:
        rows = self._query("SELECT MAX(id) FROM transitions WHERE warning_id = ?", (warning_id,))
        return None if not rows or rows[0][0] is None else int(rows[0][0])

    # -- one transaction for everything a lifecycle step writes ----------------------------

    def commit(
        self,
        now_ms: int,
        *,
        warning: dict[str, Any] | None = None,
        transition: dict[str, Any] | None = None,
        audits: Sequence[AuditEntry] = (),
        deliveries: Sequence[Delivery] = (),
        held: Sequence[Held] = (),
        drop_held: Sequence[int] = (),
    ) -> int | None:
        """Write a warning's new state, its transition (with its audit row), further audit
        rows, outbox rows and held items, and drop released held items, all or nothing.
        Returns the transition id when a transition was written."""
        with self._tx() as db:
            if warning is not None:
                db.execute(_UPSERT_WARNING, _warning_values(warning))
            tid: int | None = None
            if transition is not None:
                assert warning is not None, "a transition belongs to a warning"
                tid = self._insert_transition(db, warning, transition, deliveries, held)
            for a in audits:
                db.execute(
                    "INSERT INTO audit (ts_ms, actor, action, warning_id, detail, event_ts_ms) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (now_ms, a.actor, a.action, a.warning_id, _dumps(a.detail), a.event_ts_ms),
                )
            default_wid = warning["id"] if warning is not None else None
            self._insert_outbox(db, now_ms, deliveries, tid, default_wid)
            for h in held:
                t = h.transition_id if h.transition_id is not None else tid
                if t is None:
                    raise ValueError("a held item needs a transition")
                db.execute(
                    "INSERT INTO held (group_key, channel, recipient, transition_id, warning_id, "
                    "item, created_ts_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (h.group_key, h.channel, _dumps(h.recipient), t, h.warning_id or default_wid,
                     _dumps(h.item), now_ms),
                )
            for hid in drop_held:
                db.execute("DELETE FROM held WHERE id = ?", (hid,))
        return tid

    def _insert_transition(
        self, db: sqlite3.Connection, warning: dict[str, Any], transition: dict[str, Any],
        deliveries: Sequence[Delivery], held: Sequence[Held],
    ) -> int:
        ts_ms = int(transition["processed_ts_ms"])
        event_ts = int(transition["event_ts_ms"])
        cur = db.execute(
            "INSERT INTO transitions (warning_id, type, level_before, level_after, value, "
            "measure, event_ts_ms, processed_ts_ms, rule_version, readings) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                warning["id"], transition["type"], int(transition["level_before"]),
                int(transition["level_after"]), transition.get("value"),
                transition["measure"], event_ts, ts_ms,
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
            "event_ts_ms": event_ts,
            "channels": [d.channel for d in deliveries if d.transition_id is None],
            **({"held": sorted({h.channel for h in held})} if held else {}),
            **transition.get("audit", {}),
        }
        db.execute(
            "INSERT INTO audit (ts_ms, actor, action, warning_id, detail, event_ts_ms) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (ts_ms, transition.get("actor", "rules"), f"warning.{transition['type']}",
             warning["id"], _dumps(detail), event_ts),
        )
        return tid

    def _insert_outbox(
        self, db: sqlite3.Connection, now_ms: int, deliveries: Sequence[Delivery],
        tid: int | None, default_wid: str | None,
    ) -> None:
        rows = []
        for d in deliveries:
            t = d.transition_id if d.transition_id is not None else tid
            wid = d.warning_id or default_wid
            if t is None or wid is None:
                raise ValueError(f"outbox row on {d.channel} names no transition or warning")
            key = d.key if d.key is not None else idempotency_key(t, d.channel)
            rows.append((
                key, t, wid, d.channel, _dumps(d.recipients), _dumps(d.payload), now_ms, now_ms,
                d.notice, d.origin_ts_ms if d.origin_ts_ms is not None else now_ms,
                d.deadline_ts_ms,
            ))
        db.executemany(
            "INSERT INTO outbox (idempotency_key, transition_id, warning_id, channel, "
            "recipients, payload, state, attempts, next_attempt_ts_ms, created_ts_ms, notice, "
            "origin_ts_ms, deadline_ts_ms) VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?, ?, ?)",
            rows,
        )

    def commit_transition(
        self,
        warning: dict[str, Any],
        transition: dict[str, Any],
        deliveries: list[Delivery],
        actor: str = "rules",
    ) -> int:
        """Write the warning's new state, the transition, its audit row and its outbox rows
        in one transaction; returns the transition id."""
        tid = self.commit(int(transition["processed_ts_ms"]), warning=warning,
                          transition={**transition, "actor": actor}, deliveries=deliveries)
        assert tid is not None
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
        self, ts_ms: int, actor: str, action: str, warning_id: str | None, detail: dict[str, Any],
        event_ts_ms: int | None = None,
    ) -> int:
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO audit (ts_ms, actor, action, warning_id, detail, event_ts_ms) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (ts_ms, actor, action, warning_id, _dumps(detail), event_ts_ms),
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

    # -- held notifications (grouping) ---------------------------------------------------

    def held(self) -> list[dict[str, Any]]:
        return [_held_dict(r) for r in self._query("SELECT * FROM held ORDER BY id")]

    def held_due(self, cutoff_ms: int) -> list[dict[str, Any]]:
        """Every held item of the groups whose oldest item was held at or before `cutoff_ms`."""
        rows = self._query(
            "SELECT * FROM held WHERE group_key IN (SELECT group_key FROM held "
            "GROUP BY group_key HAVING MIN(created_ts_ms) <= ?) ORDER BY id",
            (cutoff_ms,),
        )
        return [_held_dict(r) for r in rows]

    def next_held_ms(self) -> int | None:
        """Creation time of the oldest held item (its group is due a window later)."""
        rows = self._query("SELECT MIN(created_ts_ms) FROM held")
        return None if not rows or rows[0][0] is None else int(rows[0][0])

    # -- silences ------------------------------------------------------------------------

    def add_silence(self, silence: dict[str, Any], actor: str) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO silences (id, kind, region, sensor, rule, starts_ts_ms, ends_ts_ms, "
                "author, reason, created_ts_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (silence["id"], silence["kind"], silence.get("region"), silence.get("sensor"),
                 silence.get("rule"), int(silence["starts_ts_ms"]), int(silence["ends_ts_ms"]),
                 silence["author"], silence["reason"], int(silence["created_ts_ms"])),
            )
            db.execute(
                "INSERT INTO audit (ts_ms, actor, action, warning_id, detail) VALUES (?, ?, ?, NULL, ?)",
                (int(silence["created_ts_ms"]), actor, f"{silence['kind']}.create", _dumps(silence)),
            )

    def cancel_silence(self, silence_id: str, actor: str, now_ms: int) -> bool:
        """End a silence early; False when there is no such silence or it already ended."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE silences SET cancelled_ts_ms = ?, cancelled_by = ? "
                "WHERE id = ? AND cancelled_ts_ms IS NULL AND ends_ts_ms > ?",
                (now_ms, actor, silence_id, now_ms),
            )
            if cur.rowcount == 0:
                return False
            db.execute(
                "INSERT INTO audit (ts_ms, actor, action, warning_id, detail) VALUES (?, ?, ?, NULL, ?)",
                (now_ms, actor, "silence.cancel", _dumps({"id": silence_id})),
            )
            return True

    def silences(self, active_at_ms: int | None = None) -> list[dict[str, Any]]:
        """All silences, or those in force at `active_at_ms` (started, not ended or cancelled)."""
        if active_at_ms is None:
            rows = self._query("SELECT * FROM silences ORDER BY starts_ts_ms, id")
        else:
            rows = self._query(
                "SELECT * FROM silences WHERE starts_ts_ms <= ? AND ends_ts_ms > ? "
                "AND cancelled_ts_ms IS NULL ORDER BY starts_ts_ms, id",
                (active_at_ms, active_at_ms),
            )
        return [dict(r) for r in rows]

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
        """Messages still to deliver: outbox rows (only those due by `due_by_ms` when given)
        and, without a bound, items held for grouping."""
        if due_by_ms is None:
            rows = self._query(
                "SELECT (SELECT COUNT(*) FROM outbox WHERE state = 'pending') "
                "+ (SELECT COUNT(*) FROM held)"
            )
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
        notices: Sequence[Delivery] = (),
        event_ts_ms: int | None = None,
    ) -> None:
        """Store the outcome of one delivery attempt, its audit row and any notices it
        causes (the failure notice to the duty officer) together."""
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
                "channel": row["channel"], "notice": row.get("notice", "transition"),
                "attempt": attempts, "result": state, "error": error, **detail,
            }
            db.execute(
                "INSERT INTO audit (ts_ms, actor, action, warning_id, detail, event_ts_ms) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (now_ms, actor, "delivery.attempt", row["warning_id"], _dumps(full), event_ts_ms),
            )
            self._insert_outbox(db, now_ms, notices, None, None)
