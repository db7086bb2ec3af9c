"""Liveness, readiness and metrics: open to the orchestrator and to Prometheus, no token.

Readiness means the pipeline can do its work: connected to the MQTT broker, which has
answered its subscription, InfluxDB answering its ping, the warning store readable. A
probe that fails takes the instance out of a load balancer; it never restarts it (that is
liveness, which only says the process answers).
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from ews.api.deps import State
from ews.api.schemas import Health, Ready

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz() -> dict[str, Any]:
    return {"status": "ok"}


def _check(fn: Any) -> dict[str, Any]:
    t0 = time.perf_counter()
    try:
        ok = bool(fn())
        err = None
    except Exception as exc:
        ok, err = False, repr(exc)
    out: dict[str, Any] = {"ok": ok, "seconds": round(time.perf_counter() - t0, 4)}
    if err:
        out["error"] = err
    return out


@router.get("/readyz", response_model=Ready, responses={503: {"model": Ready, "description": "not ready"}})
def readyz(st: State) -> JSONResponse:
    checks = {
        "mqtt": _check(st.ctx.mqtt_ready),
        "influxdb": _check(lambda: st.ctx.influx is not None and st.ctx.influx.ping()),
        "store": _check(lambda: st.queries.open_levels() is not None),
    }
    ready = all(c["ok"] for c in checks.values())
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)


@router.get("/metrics", response_class=Response, responses={
    200: {"content": {"text/plain": {}}, "description": "Prometheus text exposition format"}})
def prometheus() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
