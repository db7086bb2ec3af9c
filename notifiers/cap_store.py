"""The CAP messages issued so far, in SQLite: the feed's content and each warning's chain.

A message is recorded under the notification's idempotency key, so a send repeated after a
crash finds its message already there and issues no second one. Messages are never changed
or deleted: a published CAP document is immutable (triggers refuse updates and deletes).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ews.store import open_sqlite
from notifiers.cap import CapMessage, Reference

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cap_messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    identifier TEXT NOT NULL UNIQUE,
    idempotency_key TEXT NOT NULL UNIQUE,
    warning_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    sent TEXT NOT NULL,
    sent_ts_ms INTEGER NOT NULL,
    expires_ts_ms INTEGER NOT NULL,
    msg_type TEXT NOT NULL CHECK (msg_type IN ('Alert', 'Update', 'Cancel')),
    status TEXT NOT NULL,
    headline TEXT NOT NULL,
    xml BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS cap_messages_warning ON cap_messages (warning_id, seq);
CREATE TRIGGER IF NOT EXISTS cap_messages_immutable_u BEFORE UPDATE ON cap_messages
    BEGIN SELECT RAISE(ABORT, 'CAP messages are immutable'); END;
CREATE TRIGGER IF NOT EXISTS cap_messages_immutable_d BEFORE DELETE ON cap_messages
    BEGIN SELECT RAISE(ABORT, 'CAP messages are immutable'); END;
"""

_COLUMNS = ("seq", "identifier", "idempotency_key", "warning_id", "sender", "sent", "sent_ts_ms",
            "expires_ts_ms", "msg_type", "status", "headline")


class CapStore:
    def __init__(self, path: str | Path):
        self.path = str(path)
        self._lock = threading.RLock()
        self._db = open_sqlite(self.path)
        with self._lock:
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._db.execute(sql, args)]

    def issue(
        self, idempotency_key: str, warning_id: str,
        make: Callable[[list[Reference]], CapMessage | None],
    ) -> CapMessage | dict[str, Any] | None:
        """Record the message `make` builds from the warning's earlier messages, once per key.

        Returns the new message, the row already recorded under this key, or None when `make`
        decides there is nothing to publish."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                done = self._db.execute(
                    f"SELECT {', '.join(_COLUMNS)} FROM cap_messages WHERE idempotency_key = ?",
                    (idempotency_key,)).fetchone()
                if done is not None:
                    self._db.execute("ROLLBACK")
                    return dict(done)
                earlier = [Reference(r["sender"], r["identifier"], r["sent"]) for r in self._db.execute(
                    "SELECT sender, identifier, sent FROM cap_messages WHERE warning_id = ? ORDER BY seq",
                    (warning_id,))]
                msg = make(earlier)
                if msg is None:
                    self._db.execute("ROLLBACK")
                    return None
                self._db.execute(
                    "INSERT INTO cap_messages (identifier, idempotency_key, warning_id, sender, sent, "
                    "sent_ts_ms, expires_ts_ms, msg_type, status, headline, xml) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (msg.identifier, idempotency_key, msg.warning_id, msg.sender, msg.sent, msg.sent_ms,
                     msg.expires_ms, msg.msg_type, msg.status, msg.headline, msg.xml),
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return msg

    def chain(self, warning_id: str) -> list[dict[str, Any]]:
        return self._rows(f"SELECT {', '.join(_COLUMNS)} FROM cap_messages WHERE warning_id = ? ORDER BY seq",
                          (warning_id,))

    def document(self, ident: str) -> bytes | None:
        with self._lock:
            row = self._db.execute("SELECT xml FROM cap_messages WHERE identifier = ?", (ident,)).fetchone()
        return None if row is None else bytes(row["xml"])

    def current(self, now_ms: int) -> list[dict[str, Any]]:
        """The latest message of every warning that has not expired, newest first."""
        return self._rows(
            f"SELECT {', '.join('m.' + c for c in _COLUMNS)} FROM cap_messages m "
            "JOIN (SELECT warning_id, MAX(seq) AS seq FROM cap_messages GROUP BY warning_id) last "
            "ON m.seq = last.seq WHERE m.expires_ts_ms > ? ORDER BY m.sent_ts_ms DESC, m.seq DESC",
            (now_ms,),
        )

    def all(self) -> list[dict[str, Any]]:
        return self._rows(f"SELECT {', '.join(_COLUMNS)} FROM cap_messages ORDER BY seq")
