"""Sensors: last reading, last seen, health, current level, rules, and recent readings.

Health: `fault` while a device-fault warning of the sensor is open; `stale` when nothing has
arrived for three reporting intervals of its kind (the no-data rule's default, checked here
on the wall clock); `unknown` when nothing was heard since start-up and storage has nothing
recent either; `ok` otherwise.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query

from ews.api.deps import AppState, Caller, State, authorize, now_ms, parse_time, region_code
from ews.api.errors import ApiError, not_found, responses
from ews.api.schemas import Readings, SensorDetail, SensorList
from ews.api.series import increments, rolling_sum
from ews.latest import NEVER
from ews.levels import Level
from ews.sensors import Sensor
from notifiers.publish import region_json, rfc3339

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1/sensors", tags=["sensors"])

STALE_INTERVALS = 3
_MEASUREMENT_RE = re.compile(r"^[A-Za-z0-9_]+$")
_seed_lock = threading.Lock()


def seed_from_influx(st: AppState, retry_s: float = 60.0) -> None:
    """Fill the last-reading table from InfluxDB for sensors not heard since start-up (once;
    again at most every `retry_s` while InfluxDB cannot be reached)."""
    influx = st.ctx.influx
    if influx is None:
        return
    with _seed_lock:
        seeded = getattr(st, "_seeded_at", None)
        if seeded is not None and (seeded is True or time.monotonic() - seeded < retry_s):
            return
        try:
            for kind in st.ctx.sensors.kinds:
                if not _MEASUREMENT_RE.fullmatch(kind):
                    continue
                for series in influx.query(
                        f'SELECT last("value") FROM "{kind}" WHERE time > now() - 30d GROUP BY "sensor"'):
                    sid = str((series.get("tags") or {}).get("sensor"))
                    if sid in st.ctx.sensors and series.get("values"):
                        t, v = series["values"][0][:2]
                        if v is not None:
                            st.ctx.latest.seed(st.ctx.sensors.index[sid], int(t), float(v))
            st._seeded_at = True  # type: ignore[attr-defined]
        except Exception as exc:  # storage down: serve what the pipeline has seen
            if "database not found" in str(exc):
                st._seeded_at = True  # type: ignore[attr-defined]  # nothing stored yet
                return
            st._seeded_at = time.monotonic()  # type: ignore[attr-defined]
            log.warning("could not read last readings from InfluxDB: %r", exc)


def _states(st: AppState) -> dict[str, tuple[Level, list[str], bool]]:
    """Per sensor id: highest open hazard level, open warning ids, a device fault open."""
    rs = st.ctx.ruleset()
    fault_ids = {f.id for f in rs.faults}
    out: dict[str, tuple[Level, list[str], bool]] = {}
    for w in st.ctx.warnings.open_warnings():
        subject = str(w["subject"])
        if subject not in st.ctx.sensors:
            continue
        level, ids, fault = out.get(subject, (Level.NONE, [], False))
        if w["rule"] in fault_ids:
            fault = True
        else:
            level = max(level, Level(int(w["level"])))
        out[subject] = (level, [*ids, str(w["id"])], fault)
    return out


def sensor_json(st: AppState, s: Sensor, state: tuple[Level, list[str], bool] | None, now: int,
                snap: tuple[Any, Any, Any]) -> dict[str, Any]:
    i = st.ctx.sensors.index[s.id]
    ts, val, seen = int(snap[0][i]), float(snap[1][i]), int(snap[2][i])
    spec = st.ctx.sensors.kinds.get(s.kind)
    interval_ms = int((spec.interval_s if spec else 300) * 1000)
    level, ids, fault = state or (Level.NONE, [], False)
    heard = seen if seen != NEVER else ts
    if fault:
        health = "fault"
    elif ts == NEVER:
        health = "unknown"
    elif now - heard > STALE_INTERVALS * interval_ms:
        health = "stale"
    else:
        health = "ok"
    return {
        "id": s.id, "name": s.name, "kind": s.kind, "unit": spec.unit if spec else "",
        "region": region_json(st.ctx.regions, s.community), "lat": s.lat, "lon": s.lon,
        "last": None if ts == NEVER else {"ts": rfc3339(ts), "ts_ms": ts, "value": None if np.isnan(val) else val},
        "last_seen_ts": rfc3339(seen) if seen != NEVER else None,
        "health": health, "level": level.key, "warnings": ids, "tags": s.tags, "params": s.params,
    }


@router.get("", response_model=SensorList, responses=responses(401, 403, 422))
def list_sensors(
    st: State, p: Caller,
    region: Annotated[str | None, Query(description="region code: sensors in that subtree")] = None,
    kind: Annotated[str | None, Query(max_length=64)] = None,
    health: Annotated[str | None, Query(pattern="^(ok|stale|fault|unknown)$")] = None,
) -> dict[str, Any]:
    code = region_code(region)
    if code is not None:
        authorize(st, p, "read", code, acting=False)
    seed_from_influx(st)
    states, now, snap = _states(st), now_ms(), st.ctx.latest.snapshot()
    out = []
    for s in st.ctx.sensors.sensors:
        if code is not None and not s.community.startswith(code):
            continue
        if kind is not None and s.kind != kind:
            continue
        if not p.sees(s.community):
            continue
        j = sensor_json(st, s, states.get(s.id), now, snap)
        if health is None or j["health"] == health:
            out.append(j)
    return {"sensors": out}


def _sensor(st: AppState, p: Any, sensor_id: str) -> Sensor:
    if sensor_id not in st.ctx.sensors:
        raise not_found("sensor", sensor_id)
    s = st.ctx.sensors.get(sensor_id)
    authorize(st, p, "read", s.community, acting=False)
    return s


@router.get("/{sensor_id}", response_model=SensorDetail, responses=responses(401, 403, 404))
def get_sensor(st: State, p: Caller, sensor_id: str) -> dict[str, Any]:
    s = _sensor(st, p, sensor_id)
    seed_from_influx(st)
    out = sensor_json(st, s, _states(st).get(s.id), now_ms(), st.ctx.latest.snapshot())
    out["rules"] = st.ctx.engine().explain(s.id)
    return out


@router.get("/{sensor_id}/readings", response_model=Readings, responses=responses(401, 403, 404, 422, 503))
def readings(
    st: State, p: Caller, sensor_id: str,
    hours: Annotated[float, Query(gt=0, le=168, description="how far back from `until`")] = 6.0,
    until: Annotated[str | None, Query(description="RFC 3339 or epoch ms; default: the last reading")] = None,
) -> dict[str, Any]:
    """Stored readings of the sensor, the measures its rules compare (rolling sums for
    accumulation rules) and its thresholds, for a chart."""
    s = _sensor(st, p, sensor_id)
    if st.ctx.influx is None or not _MEASUREMENT_RE.fullmatch(s.kind):
        raise ApiError(503, "influxdb_unavailable", "no InfluxDB is configured for reading history")
    last = st.ctx.latest.get(st.ctx.sensors.index[s.id])
    end = parse_time(until, "until")
    if end is None:
        end = last[0] if last is not None else now_ms()
    start = end - int(hours * 3_600_000)
    rules = [r for r in st.ctx.engine().explain(s.id) if isinstance(r.get("thresholds"), dict)]
    windows: dict[str, int] = {}
    counter = False
    for r in rules:
        try:
            spec = st.ctx.ruleset().get(str(r["rule"]))
        except KeyError:
            continue
        windows.update(spec.windows_ms)
        counter = counter or "input" in r
    back = max(windows.values(), default=0)
    try:
        series = st.ctx.influx.query(
            f'SELECT "value" FROM "{s.kind}" WHERE "sensor" = \'{s.id}\' '
            f"AND time > {start - back}ms AND time <= {end}ms")
    except Exception as exc:
        raise ApiError(503, "influxdb_unavailable", f"InfluxDB could not be read: {exc}") from None
    values = series[0]["values"] if series else []
    ts = np.asarray([int(v[0]) for v in values], np.int64)
    val = np.asarray([float(v[1]) if v[1] is not None else np.nan for v in values], np.float64)
    shown = ts > start
    spec_k = st.ctx.sensors.kinds.get(s.kind)
    unit = spec_k.unit if spec_k else ""
    out_series: list[dict[str, Any]] = [{"measure": "value", "label": s.kind, "unit": unit, "window_ms": None,
                   "points": _points(ts[shown], val[shown])}]
    thresholds: list[dict[str, Any]] = []
    drawn = {"value"}
    base = increments(val) if counter else val
    for r in rules:
        by_measure: dict[str, dict[str, float]] = r["thresholds"]
        for measure, by_level in by_measure.items():
            m = str(measure)
            if m in windows and m not in drawn:
                sums = rolling_sum(ts, np.nan_to_num(base), windows[m])
                out_series.append({"measure": m, "label": m, "unit": unit, "window_ms": windows[m],
                                   "points": _points(ts[shown], sums[shown])})
                drawn.add(m)
            if m in drawn:
                thresholds += [{"rule": r["rule"], "measure": m, "level": lv, "value": float(v)}
                               for lv, v in by_level.items()]
    return {"sensor": s.id, "kind": s.kind, "unit": unit, "from_ms": start, "until_ms": end,
            "series": out_series, "thresholds": thresholds}


def _points(ts: Any, val: Any) -> list[tuple[int, float]]:
    return [(int(t), round(float(v), 6)) for t, v in zip(ts, val, strict=True) if np.isfinite(v)]
