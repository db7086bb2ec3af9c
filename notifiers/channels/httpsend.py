"""HTTP sending shared by the HTTP channels, with failures mapped to DeliveryError.

Transport failures and timeouts may succeed later; so may 5xx, 408 and 429. Any other 4xx
means the request itself is wrong (bad key, bad URL) and repeating it only repeats the error.
The robot APIs answer HTTP 200 with an error code in the body; `api_error` maps those codes
with the per-service table of transient ones.
"""

from __future__ import annotations

import ssl
from collections.abc import Collection
from pathlib import Path
from typing import Any

import httpx
import orjson

from notifiers.channels.base import DeliveryError

RETRYABLE_STATUS = frozenset({408, 425, 429})


def client(timeout_s: float, ca_file: Path | None = None) -> httpx.Client:
    verify: ssl.SSLContext | bool = True
    if ca_file is not None:
        verify = ssl.create_default_context(cafile=str(ca_file))
    return httpx.Client(timeout=timeout_s, verify=verify)


def request(
    c: httpx.Client, method: str, url: str, *, content: bytes | None = None,
    headers: dict[str, str] | None = None, what: str = "request",
) -> httpx.Response:
    """Send; transport errors become retryable DeliveryErrors, the response is returned as is."""
    try:
        return c.request(method, url, content=content, headers=headers)
    except httpx.TimeoutException as exc:
        raise DeliveryError(f"{what}: timeout: {exc!r}", retryable=True) from exc
    except httpx.HTTPError as exc:
        raise DeliveryError(f"{what}: connection error: {exc!r}", retryable=True) from exc


def check_status(resp: httpx.Response, what: str = "request") -> None:
    code = resp.status_code
    if 200 <= code < 300:
        return
    retryable = code >= 500 or code in RETRYABLE_STATUS
    raise DeliveryError(f"{what}: HTTP {code}: {resp.text[:200]}", retryable=retryable)


def post_json(c: httpx.Client, url: str, body: Any, *, what: str,
              headers: dict[str, str] | None = None) -> httpx.Response:
    resp = request(c, "POST", url, content=orjson.dumps(body),
                   headers={"Content-Type": "application/json; charset=utf-8", **(headers or {})}, what=what)
    check_status(resp, what)
    return resp


def json_reply(resp: httpx.Response, what: str) -> dict[str, Any]:
    try:
        data = resp.json()
    except ValueError as exc:
        # a proxy's error page or a truncated reply: the message may not have been taken
        raise DeliveryError(f"{what}: reply is not JSON: {resp.text[:200]!r}", retryable=True) from exc
    if not isinstance(data, dict):
        raise DeliveryError(f"{what}: unexpected reply {resp.text[:200]!r}", retryable=True)
    return data


def api_error(what: str, code: object, message: object, transient: Collection[int]) -> DeliveryError:
    try:
        n = int(code)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        n = None
    return DeliveryError(f"{what}: error {code}: {message}", retryable=n in transient)


def truncate_utf8(text: str, max_bytes: int, marker: str = "…") -> str:
    """`text` cut to at most `max_bytes` of UTF-8 (the robots count bytes), never mid-character."""
    raw = text.encode()
    if len(raw) <= max_bytes:
        return text
    room = max_bytes - len(marker.encode())
    return raw[:max(room, 0)].decode(errors="ignore") + marker
