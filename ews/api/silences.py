"""Silences: hold back notifications by region subtree, sensor or rule, with expiry and reason.

A silence is written through `notifiers.silence.Silences`, which stores it with its audit row
(actor = the token's name); the region check happens here: the silence must lie inside the
token's region, and a token of one region that names neither region nor sensor silences its
own region, never the whole district.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import ValidationError

from ews.api.deps import AppState, Caller, State, authorize, now_ms
from ews.api.errors import ApiError, not_found, responses
from ews.api.schemas import SilenceIn, SilenceList, SilenceOut
from notifiers.publish import rfc3339
from notifiers.silence import SilenceError

router = APIRouter(prefix="/api/v1/silences", tags=["silences"])


def _region_of(st: AppState, s: dict[str, Any]) -> str | None:
    """The region a silence acts on (None: every region)."""
    if s.get("region"):
        return str(s["region"])
    if s.get("sensor") and s["sensor"] in st.ctx.sensors:
        return st.ctx.sensors.get(str(s["sensor"])).community
    return None


def silence_json(s: dict[str, Any], st: AppState) -> dict[str, Any]:
    now = now_ms()
    out = {k: s.get(k) for k in ("id", "kind", "region", "sensor", "rule", "starts_ts_ms", "ends_ts_ms",
                                 "author", "reason", "created_ts_ms", "cancelled_ts_ms", "cancelled_by")}
    out["starts_ts"] = rfc3339(int(s["starts_ts_ms"]))
    out["ends_ts"] = rfc3339(int(s["ends_ts_ms"]))
    out["active"] = (s.get("cancelled_ts_ms") is None and int(s["starts_ts_ms"]) <= now < int(s["ends_ts_ms"]))
    return out


def create_silence(
    st: AppState, p: Any, *, region: str | None, sensor: str | None, rule: str | None,
    starts_ts_ms: int | None, ends_ts_ms: int | None, duration_s: float | None, reason: str,
    warning_id: str | None = None,
) -> dict[str, Any]:
    if sensor is not None and sensor not in st.ctx.sensors:
        raise ApiError(422, "unknown_sensor", f"sensor: {sensor!r} is not in the sensor registry",
                       problems=[{"field": "sensor", "reason": "not in the sensor registry"}])
    if region is not None and region not in st.ctx.regions:
        raise ApiError(422, "unknown_region", f"region: {region} is not in the region registry",
                       problems=[{"field": "region", "reason": "not in the region registry"}])
    if rule is not None and rule not in st.ctx.engine().rule_ids() and not _known_rule(st, rule):
        raise ApiError(422, "unknown_rule", f"rule: {rule!r} is not a rule in force",
                       problems=[{"field": "rule", "reason": "not a rule in force"}])
    if region is None and sensor is None and not p.covers(None, st.ctx.regions):
        region = p.region  # a regional token silences its own region, not everyone's
    target = {"region": region, "sensor": sensor, "rule": rule}
    where = region if region is not None else (st.ctx.sensors.get(sensor).community if sensor else None)
    authorize(st, p, "silence", where, target=target, warning_id=warning_id)
    if sensor is not None and region is not None:
        authorize(st, p, "silence", st.ctx.sensors.get(sensor).community, target=target,
                  warning_id=warning_id)
    now = now_ms()
    start = starts_ts_ms if starts_ts_ms is not None else now
    end = ends_ts_ms if ends_ts_ms is not None else max(start, now) + round((duration_s or 0) * 1000)
    try:
        return st.ctx.silences.add({"region": region, "sensor": sensor, "rule": rule, "starts_ts_ms": starts_ts_ms,
                                    "ends_ts_ms": end, "author": p.name, "reason": reason}, actor=p.name)
    except SilenceError as exc:
        raise ApiError(422, "invalid_silence", str(exc),
                       problems=[{"field": exc.field, "reason": exc.reason}]) from None
    except ValidationError as exc:
        msg = "; ".join(str(e.get("msg")) for e in exc.errors())
        raise ApiError(422, "invalid_silence", msg) from None


def _known_rule(st: AppState, rule: str) -> bool:
    rs = st.ctx.ruleset()
    return any(r.id == rule for r in rs.rules) or any(f.id == rule for f in rs.faults)


@router.get("", response_model=SilenceList, responses=responses(401))
def list_silences(
    st: State, p: Caller,
    active: Annotated[bool, Query(description="only silences in force or planned (not ended, not cancelled)")] = True,
) -> dict[str, Any]:
    now = now_ms()
    out = []
    for s in st.ctx.store.silences():
        if active and (s.get("cancelled_ts_ms") is not None or int(s["ends_ts_ms"]) <= now):
            continue
        if p.sees(_region_of(st, s), st.ctx.regions):
            out.append(silence_json(s, st))
    return {"silences": out}


@router.post("", response_model=SilenceOut, status_code=201, responses=responses(400, 401, 403, 422))
def add_silence(st: State, p: Caller, body: SilenceIn) -> dict[str, Any]:
    s = create_silence(st, p, region=body.region, sensor=body.sensor, rule=body.rule,
                       starts_ts_ms=body.starts_ts_ms, ends_ts_ms=body.ends_ts_ms, duration_s=body.duration_s,
                       reason=body.reason)
    return silence_json(s, st)


@router.delete("/{silence_id}", status_code=204, responses=responses(401, 403, 404, 409))
def cancel_silence(st: State, p: Caller, silence_id: str) -> Response:
    found = [s for s in st.ctx.store.silences() if s["id"] == silence_id]
    if not found:
        raise not_found("silence", silence_id)
    authorize(st, p, "silence", _region_of(st, found[0]), target=silence_id)
    if not st.ctx.silences.cancel(silence_id, p.name):
        raise ApiError(409, "silence_ended", f"silence {silence_id} has already ended or been cancelled")
    return Response(status_code=204)
