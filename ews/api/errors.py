"""One JSON error shape for every refusal: `{"error": {"code", "message", ...}}`.

Codes are stable (clients and tests branch on them); messages say in plain words what was
wrong and what to do about it.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from ews.yamlfile import format_loc


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None,
                 **extra: Any):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
        self.extra = extra

    def response(self) -> JSONResponse:
        return JSONResponse({"error": {"code": self.code, "message": self.message, **self.extra}},
                            status_code=self.status, headers=self.headers)


def not_found(what: str, ident: str) -> ApiError:
    return ApiError(404, "not_found", f"no {what} {ident!r}")


# documented on every route that can give them, so the OpenAPI description is complete
def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    text = {
        400: "bad request", 401: "missing, unknown or expired token",
        403: "the token's role or region does not allow this", 404: "no such item",
        409: "conflicts with the item's state", 422: "a parameter or the body is invalid",
        503: "a dependency is not available",
    }
    return {s: {"model": ErrorBody, "description": text[s]} for s in statuses}


async def _api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return exc.response()


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for err in exc.errors():
        loc = [p for p in err.get("loc", ()) if isinstance(p, str | int)]
        problems.append({"field": format_loc(loc), "reason": str(err.get("msg", "invalid"))})
    first = problems[0] if problems else {"field": "", "reason": "invalid request"}
    return ApiError(422, "invalid_request", f"{first['field']}: {first['reason']}", problems=problems).response()


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return ApiError(exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None)).response()


def install(app: Any) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
