"""Warnings: list with filters, one with its history, acknowledge, silence."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from ews.api.deps import Caller, State, authorize, parse_time, region_code
from ews.api.errors import ApiError, not_found, responses
from ews.api.queries import WarningFilter
from ews.api.schemas import (
    AckIn,
    AuditRow,
    LevelKey,
    SilenceOut,
    WarningDetail,
    WarningList,
    WarningOut,
    WarningSilenceIn,
)
from ews.api.silences import create_silence, silence_json
from ews.levels import Level
from notifiers.ack import AckError, UnknownWarning
from notifiers.publish import rfc3339

router = APIRouter(prefix="/api/v1/warnings", tags=["warnings"])

_ACK_STATUS = {"not_found": 404, "resolved": 409, "already_acknowledged": 409}


@router.get("", response_model=WarningList, responses=responses(401, 403, 422))
def list_warnings(
    st: State, p: Caller,
    region: Annotated[str | None, Query(description="region code: warnings in that subtree")] = None,
    level: Annotated[list[LevelKey] | None, Query(description="one or more levels")] = None,
    state: Annotated[str | None, Query(pattern="^(open|resolved)$")] = None,
    kind: Annotated[str | None, Query(max_length=64)] = None,
    rule: Annotated[str | None, Query(max_length=120)] = None,
    subject: Annotated[str | None, Query(max_length=64)] = None,
    acknowledged: bool | None = None,
    since: Annotated[str | None, Query(description="RFC 3339 or epoch ms; event time")] = None,
    until: Annotated[str | None, Query(description="RFC 3339 or epoch ms; event time")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> dict[str, Any]:
    code = region_code(region)
    if code is not None:
        authorize(st, p, "read", code, acting=False)
    f = WarningFilter(
        region=code, visible_to=None if p.region == "*" else p.region,
        levels=tuple(int(Level.parse(lv)) for lv in level or ()), state=state, kind=kind, rule=rule,
        subject=subject, acknowledged=acknowledged, since_ms=parse_time(since, "since"),
        until_ms=parse_time(until, "until"), limit=limit, offset=offset,
    )
    total, rows = st.queries.warnings(f)
    return {"total": total, "limit": limit, "offset": offset, "warnings": [st.warning_json(w) for w in rows]}


def _row(st: State, warning_id: str) -> dict[str, Any]:
    w = st.ctx.store.warning(warning_id)
    if w is None:
        raise not_found("warning", warning_id)
    return w


def audit_json(a: dict[str, Any]) -> dict[str, Any]:
    return {"seq": a["seq"], "ts_ms": a["ts_ms"], "ts": rfc3339(int(a["ts_ms"])), "actor": a["actor"],
            "action": a["action"], "warning_id": a.get("warning_id"), "detail": a.get("detail") or {},
            "event_ts_ms": a.get("event_ts_ms")}


@router.get("/{warning_id}", response_model=WarningDetail, responses=responses(401, 403, 404))
def get_warning(st: State, p: Caller, warning_id: str) -> dict[str, Any]:
    w = _row(st, warning_id)
    authorize(st, p, "read", str(w["community"]), acting=False)
    out = st.ctx.warnings.warning(warning_id) or st.warning_json(w)
    out["transitions"] = st.ctx.store.transitions(warning_id)
    out["audit"] = [AuditRow.model_validate(audit_json(a)).model_dump()
                    for a in st.ctx.store.audit_log(warning_id)]
    return out


@router.post("/{warning_id}/acknowledge", response_model=WarningOut,
             responses=responses(400, 401, 403, 404, 409, 422))
def acknowledge(st: State, p: Caller, warning_id: str, body: AckIn | None = None) -> dict[str, Any]:
    """Take the warning in hand: reminders and escalation stop; written to the audit log with
    the token's name. Only inside the token's region (duty_officer or admin)."""
    w = _row(st, warning_id)
    community = str(w["community"])
    authorize(st, p, "acknowledge", community, target=warning_id, warning_id=warning_id)
    try:
        out = st.ctx.warnings.acknowledge(warning_id, p.name, (body.comment if body else "").strip())
    except AckError as exc:
        status = 404 if isinstance(exc, UnknownWarning) else _ACK_STATUS.get(exc.code, 409)
        raise ApiError(status, exc.code, str(exc)) from None
    st.hub.publish("acknowledged", {"warning": out, "by": p.name}, community)
    return out


@router.post("/{warning_id}/silence", response_model=SilenceOut, status_code=201,
             responses=responses(400, 401, 403, 404, 422))
def silence_warning(st: State, p: Caller, warning_id: str, body: WarningSilenceIn) -> dict[str, Any]:
    """Hold back further notifications of this warning's rule for its subject (a sensor, or a
    region for area rules) for `duration_s`; the warning itself stays open and on screen."""
    w = _row(st, warning_id)
    subject = str(w["subject"])
    by_sensor = subject in st.ctx.sensors
    s = create_silence(
        st, p, region=None if by_sensor else subject, sensor=subject if by_sensor else None,
        rule=str(w["rule"]), starts_ts_ms=None, ends_ts_ms=None, duration_s=body.duration_s,
        reason=body.reason, warning_id=warning_id,
    )
    return silence_json(s, st)
