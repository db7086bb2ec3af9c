"""The FastAPI application: routes, error shape, request metrics, live events, dashboard."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import RedirectResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ews import metrics
from ews.api import audit, errors, health, regions, rules, sensors, silences, warnings
from ews.api.auth import ALL_REGIONS, ALLOWED, TokenStore
from ews.api.context import ApiContext
from ews.api.deps import AppState, Caller, State
from ews.api.events import EventHub
from ews.api.queries import Queries
from ews.api.schemas import Me
from notifiers.publish import warning_json

STATIC = Path(__file__).resolve().parent / "static"

me_router = APIRouter(prefix="/api/v1", tags=["session"])


@me_router.get("/me", response_model=Me, responses=errors.responses(401))
def me(st: State, p: Caller) -> dict[str, Any]:
    """Who the token is, and what it may do (the dashboard shows or hides its buttons by this)."""
    name = "全部区域" if p.region == ALL_REGIONS else (
        st.ctx.regions.path_names(p.region) if p.region in st.ctx.regions else p.region)
    return {**p.json(), "region_name": name, "may": {a: p.may(a) for a in ALLOWED}}


@me_router.get("/events", response_class=StreamingResponse, responses={
    200: {"content": {"text/event-stream": {}}, "description": "server-sent events: hello, transition, "
          "acknowledged, resync; a comment line every 15 s keeps the stream alive"},
    **errors.responses(401)})
async def events(request: Request, st: State, p: Caller) -> StreamingResponse:
    """Live warning transitions and acknowledgements in the token's region, as they happen."""
    return StreamingResponse(st.hub.stream(p, request.is_disconnected), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


class RequestMetrics:
    """Count and time every request by its route template (never by raw path: ids would
    make a series per warning)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or ("/dashboard" if scope["path"].startswith("/dashboard")
                                                    else "unmatched")
            metrics.API_REQUESTS.labels(scope["method"], path, str(status)).inc()
            if path != "/api/v1/events":
                metrics.API_SECONDS.labels(path).observe(time.perf_counter() - t0)


def create_app(ctx: ApiContext, tokens: TokenStore, queries: Queries | None = None) -> FastAPI:
    app = FastAPI(
        title="ews — early-warning API",
        version="1",
        description="Warnings, sensors, regions, rules, silences and the audit log of the early-warning "
                    "pipeline. Every /api/v1 route needs `Authorization: Bearer <token>` (docs/api.md).",
    )
    hub = EventHub(lambda w: warning_json(w, ctx.regions, ctx.sensors))
    state = AppState(ctx, tokens, queries or Queries(ctx.store.path), hub)
    app.state.ews = state
    ctx.listeners.append(hub.on_transition)
    errors.install(app)
    for r in (warnings.router, silences.router, sensors.router, regions.router, rules.router, audit.router,
              me_router, health.router):
        app.include_router(r)
    app.mount("/dashboard", StaticFiles(directory=STATIC, html=True), name="dashboard")

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/dashboard/")

    app.add_middleware(RequestMetrics)
    return app


def detach(app: FastAPI) -> None:
    """Stop the app's live streams and unhook it from the pipeline."""
    st: AppState = app.state.ews
    st.hub.close()
    if st.hub.on_transition in st.ctx.listeners:
        st.ctx.listeners.remove(st.hub.on_transition)
    st.queries.close()
