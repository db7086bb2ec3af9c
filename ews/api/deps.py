"""What every route shares: the application state, the caller, and parameter parsing."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ews.api.auth import BEIJING, Action, Principal, TokenStore, require
from ews.api.context import ApiContext
from ews.api.errors import ApiError
from ews.api.events import EventHub
from ews.api.queries import Queries
from notifiers.publish import warning_json

_CODE_RE = re.compile(r"^\d{6}(\d{3}(\d{3})?)?$")


@dataclass
class AppState:
    ctx: ApiContext
    tokens: TokenStore
    queries: Queries
    hub: EventHub

    def warning_json(self, w: dict[str, Any]) -> dict[str, Any]:
        return warning_json(w, self.ctx.regions, self.ctx.sensors)


def state(request: Request) -> AppState:
    s: AppState = request.app.state.ews
    return s


# declared so the OpenAPI description names the bearer scheme; the header is checked below
_bearer = HTTPBearer(auto_error=False, description="an API token from the tokens file (docs/api.md)")


def principal(
    request: Request, _creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)] = None
) -> Principal:
    p = state(request).tokens.principal(request.headers.get("authorization"))
    request.state.principal = p
    return p


State = Annotated[AppState, Depends(state)]
Caller = Annotated[Principal, Depends(principal)]


def region_code(value: str | None, field: str = "region") -> str | None:
    if value is None:
        return None
    if not _CODE_RE.fullmatch(value):
        raise ApiError(422, "invalid_request", f"{field}: {value!r} is not a 6, 9 or 12 digit region code",
                       problems=[{"field": field, "reason": "not a 6, 9 or 12 digit region code"}])
    return value


def parse_time(value: str | None, field: str) -> int | None:
    """RFC 3339 (a time without zone is Beijing time) or epoch milliseconds, as epoch ms."""
    if value is None or value == "":
        return None
    v = value.strip()
    if re.fullmatch(r"-?\d{1,16}", v):
        return int(v)
    try:
        dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(422, "invalid_request", f"{field}: {value!r} is neither RFC 3339 nor epoch milliseconds",
                       problems=[{"field": field, "reason": "not RFC 3339 or epoch ms"}]) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=BEIJING)
    return int(dt.timestamp() * 1000)


def authorize(st: AppState, p: Principal, action: Action, code: str | None, *, target: Any = None,
              warning_id: str | None = None, acting: bool = True) -> None:
    """403 unless `p` may do `action` on region `code`; a refused write is audited with the
    token's identity, so attempts outside one's remit are on the record too."""
    try:
        require(p, action, code, st.ctx.regions, acting=acting)
    except ApiError as exc:
        if action != "read":
            st.ctx.store.audit(now_ms(), p.name, "api.denied", warning_id, {
                "action": action, "region": code, "target": target, "reason": exc.code,
                "role": p.role, "token_region": p.region})
        raise


def now_ms() -> int:
    return int(time.time() * 1000)
