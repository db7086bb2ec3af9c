"""Filtered reads of warnings and the audit log, on a read-only connection of their own.

The store's connection is shared by the rules thread and the outbox workers under one lock;
the API's list and export queries (which may scan a season of rows) run on a separate
read-only SQLite connection instead, which WAL mode lets read while the pipeline writes.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class WarningFilter:
    region: str | None = None  # the warning's region lies in this subtree
    visible_to: str | None = None  # token region: the warning's region overlaps it (None: all)
    levels: tuple[int, ...] = ()
    state: str | None = None  # open | resolved
    kind: str | None = None
    rule: str | None = None
    subject: str | None = None
    acknowledged: bool | None = None
    since_ms: int | None = None  # event time: the warning stood at some moment in [since, until]
    until_ms: int | None = None
    limit: int = 200
    offset: int = 0


def _warning_dict(row: sqlite3.Row) -> dict[str, Any]:
    d = dict(row)
    d["drill"] = bool(d.get("drill"))
    d["acknowledged"] = bool(d.get("acknowledged"))
    pr = d.get("pending_resolve")
    d["pending_resolve"] = json.loads(pr) if pr else None
    return d


class Queries:
    def __init__(self, db_path: str | Path):
        uri = Path(db_path).resolve().as_uri() + "?mode=ro"
        self._db = sqlite3.connect(uri, uri=True, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA busy_timeout=5000")
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _rows(self, sql: str, args: list[Any]) -> list[sqlite3.Row]:
        with self._lock:
            return list(self._db.execute(sql, args))

    def warnings(self, f: WarningFilter) -> tuple[int, list[dict[str, Any]]]:
        """(how many match, the page asked for), open first, then newest update first."""
        where: list[str] = []
        args: list[Any] = []
        if f.region is not None:
            where.append("community LIKE ? || '%'")
            args.append(f.region)
        if f.visible_to is not None:
            where.append("(community LIKE ? || '%' OR ? LIKE community || '%')")
            args += [f.visible_to, f.visible_to]
        if f.levels:
            where.append(f"level IN ({', '.join('?' * len(f.levels))})")
            args += list(f.levels)
        for col, val in (("state", f.state), ("kind", f.kind), ("rule", f.rule), ("subject", f.subject)):
            if val is not None:
                where.append(f"{col} = ?")
                args.append(val)
        if f.acknowledged is not None:
            where.append("acknowledged = ?")
            args.append(int(f.acknowledged))
        if f.until_ms is not None:
            where.append("opened_event_ts_ms <= ?")
            args.append(f.until_ms)
        if f.since_ms is not None:
            where.append("(resolved_event_ts_ms IS NULL OR resolved_event_ts_ms >= ?)")
            args.append(f.since_ms)
        cond = (" WHERE " + " AND ".join(where)) if where else ""
        total = int(self._rows(f"SELECT COUNT(*) FROM warnings{cond}", args)[0][0])
        rows = self._rows(
            f"SELECT * FROM warnings{cond} ORDER BY state = 'open' DESC, updated_ts_ms DESC, id "
            f"LIMIT ? OFFSET ?", [*args, f.limit, f.offset])
        return total, [_warning_dict(r) for r in rows]

    def open_levels(self) -> list[tuple[str, int, bool]]:
        """(region code, level, acknowledged) of every open warning."""
        rows = self._rows("SELECT community, level, acknowledged FROM warnings WHERE state = 'open'", [])
        return [(str(r[0]), int(r[1]), bool(r[2])) for r in rows]

    def audit(self, since_ms: int | None, until_ms: int | None, action: str | None, actor: str | None,
              warning_id: str | None, limit: int | None = None) -> Iterator[dict[str, Any]]:
        """Audit rows in order, each with `region`: its warning's region where it has one."""
        where: list[str] = []
        args: list[Any] = []
        if since_ms is not None:
            where.append("a.ts_ms >= ?")
            args.append(since_ms)
        if until_ms is not None:
            where.append("a.ts_ms <= ?")
            args.append(until_ms)
        if action is not None:
            where.append("(a.action = ? OR a.action LIKE ? || '.%')")
            args += [action, action]
        if actor is not None:
            where.append("a.actor = ?")
            args.append(actor)
        if warning_id is not None:
            where.append("a.warning_id = ?")
            args.append(warning_id)
        cond = (" WHERE " + " AND ".join(where)) if where else ""
        lim = " LIMIT ?" if limit is not None else ""
        if limit is not None:
            args.append(limit)
        sql = (f"SELECT a.seq, a.ts_ms, a.actor, a.action, a.warning_id, a.detail, a.event_ts_ms, "
               f"w.community AS region FROM audit a LEFT JOIN warnings w ON w.id = a.warning_id"
               f"{cond} ORDER BY a.seq{lim}")
        for r in self._rows(sql, args):
            d = dict(r)
            d["detail"] = json.loads(d["detail"]) if d["detail"] else {}
            yield d
