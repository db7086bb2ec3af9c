"""The audit log: JSON for screens, CSV for the on-time report and for auditors.

Rows are filtered to the token's region: a row belongs to the region of its warning, or of
the silence it records; rows of no region (rule reloads, rule-wide silences) are shown to
tokens that cover every region.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from ews.api.deps import AppState, Caller, State, authorize, parse_time
from ews.api.errors import responses
from ews.api.warnings import audit_json
from notifiers.publish import rfc3339

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])
CSV_COLUMNS = ("seq", "ts", "ts_ms", "actor", "action", "warning_id", "region", "event_ts", "detail")


def _rows(st: AppState, p: Any, since: str | None, until: str | None, action: str | None, actor: str | None,
          warning: str | None, limit: int | None) -> Iterator[dict[str, Any]]:
    silences = {s["id"]: s for s in st.ctx.store.silences()}
    sensors = st.ctx.sensors
    for a in st.queries.audit(parse_time(since, "since"), parse_time(until, "until"), action, actor, warning,
                              None):
        region = a.get("region")
        d = a["detail"]
        if region is None and isinstance(d, dict):
            s = silences.get(str(d.get("id", ""))) or d
            region = d.get("region") or s.get("region")
            sensor = s.get("sensor")
            if region is None and sensor in sensors:
                region = sensors.get(str(sensor)).community
        if not p.sees(region, st.ctx.regions):
            continue
        a["region"] = region
        yield a
        if limit is not None:
            limit -= 1
            if limit <= 0:
                return


_FILTERS = {
    "since": "RFC 3339 or epoch ms (processing time of the row)",
    "until": "RFC 3339 or epoch ms",
    "action": "an action (warning.acknowledge) or a prefix of one (warning, silence, delivery)",
}


@router.get("", responses=responses(401, 403, 422))
def audit_rows(
    st: State, p: Caller,
    since: Annotated[str | None, Query(description=_FILTERS["since"])] = None,
    until: Annotated[str | None, Query(description=_FILTERS["until"])] = None,
    action: Annotated[str | None, Query(max_length=64, description=_FILTERS["action"])] = None,
    actor: Annotated[str | None, Query(max_length=120)] = None,
    warning: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> dict[str, Any]:
    authorize(st, p, "audit_export", p.region if p.region != "*" else None, target="audit")
    rows = [{**audit_json(a), "region": a["region"]} for a in _rows(st, p, since, until, action, actor, warning, limit)]
    return {"rows": rows}


@router.get(".csv", response_class=StreamingResponse, responses={
    200: {"content": {"text/csv": {}}, "description": "the audit rows as CSV (UTF-8 with BOM)"},
    **responses(401, 403, 422)})
def audit_csv(
    st: State, p: Caller,
    since: Annotated[str | None, Query(description=_FILTERS["since"])] = None,
    until: Annotated[str | None, Query(description=_FILTERS["until"])] = None,
    action: Annotated[str | None, Query(max_length=64, description=_FILTERS["action"])] = None,
    actor: Annotated[str | None, Query(max_length=120)] = None,
    warning: Annotated[str | None, Query(max_length=64)] = None,
) -> StreamingResponse:
    authorize(st, p, "audit_export", p.region if p.region != "*" else None, target="audit.csv")
    rows = _rows(st, p, since, until, action, actor, warning, None)  # parse errors surface here, as 422
    first = next(rows, None)

    def lines() -> Iterator[str]:
        # the BOM makes spreadsheet programs read the Chinese text as UTF-8
        buf = io.StringIO()
        w = csv.writer(buf)
        buf.write("\ufeff")
        w.writerow(CSV_COLUMNS)
        for a in ([first] if first is not None else []):
            w.writerow(_csv_row(a))
        yield buf.getvalue()
        for a in rows:
            buf.seek(0)
            buf.truncate()
            w.writerow(_csv_row(a))
            yield buf.getvalue()

    return StreamingResponse(lines(), media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": 'attachment; filename="ews-audit.csv"'})


def _csv_row(a: dict[str, Any]) -> list[Any]:
    ev = a.get("event_ts_ms")
    return [a["seq"], rfc3339(int(a["ts_ms"])), a["ts_ms"], a["actor"], a["action"], a.get("warning_id") or "",
            a.get("region") or "", rfc3339(int(ev)) if ev is not None else "",
            json.dumps(a.get("detail") or {}, ensure_ascii=False, separators=(",", ":"))]
