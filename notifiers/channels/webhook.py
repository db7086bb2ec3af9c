"""Signed JSON webhook: one POST per notification, HMAC-SHA256 over timestamp and body.

The signature covers `f"{timestamp}.{body}"` so a receiver can reject replays older than
its tolerance; the Idempotency-Key header lets it drop the duplicates that at-least-once
delivery produces after a crash between sending and recording.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Callable

import httpx
import orjson

from ews.config import ChannelConfig, secret
from notifiers.channels.base import Channel, DeliveryError, Notification, RetryPolicy

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-EWS-Signature"
TIMESTAMP_HEADER = "X-EWS-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
_RETRYABLE_4XX = frozenset({408, 429})


def sign(secret_value: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret_value.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(
    secret_value: str, timestamp: str, body: bytes, header: str | None,
    *, now_s: float | None = None, tolerance_s: float | None = None,
) -> bool:
    """True when `header` is our signature of `body` at `timestamp` (and, given a tolerance,
    the timestamp is recent enough)."""
    if not header:
        return False
    if tolerance_s is not None:
        try:
            age = (time.time() if now_s is None else now_s) - int(timestamp)
        except ValueError:
            return False
        if abs(age) > tolerance_s:
            return False
    return hmac.compare_digest(sign(secret_value, timestamp, body), header)


def body_of(note: Notification) -> bytes:
    return orjson.dumps({
        "version": 1,
        "idempotency_key": note.idempotency_key,
        "transition": note.transition,
        "transition_id": note.transition_id,
        "warning": note.warning,
        "recipients": note.recipients,
        "message": note.message,
        "notice": note.notice,
        "drill": note.drill,
        **({"items": list(note.items)} if note.items else {}),
    })


class WebhookChannel(Channel):
    def __init__(
        self,
        name: str,
        url: str,
        secret_value: str | None,
        *,
        timeout_s: float = 5.0,
        retry: RetryPolicy | None = None,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.name = name
        self.url = url
        self.secret = secret_value
        self.retry = retry or RetryPolicy()
        self.clock = clock
        self._client = client or httpx.Client(timeout=timeout_s)
        if secret_value is None:
            log.warning("webhook channel %s has no secret: its requests are not signed", name)

    @classmethod
    def from_config(cls, cfg: ChannelConfig) -> WebhookChannel:
        if not cfg.url:
            raise ValueError(f"webhook channel {cfg.name} needs a url")
        return cls(cfg.name, cfg.url, secret(cfg.secret_env), timeout_s=cfg.timeout_s,
                   retry=RetryPolicy.from_config(cfg))

    def send(self, note: Notification) -> None:
        body = body_of(note)
        ts = str(int(self.clock()))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: ts,
            IDEMPOTENCY_HEADER: note.idempotency_key,
        }
        if self.secret is not None:
            headers[SIGNATURE_HEADER] = sign(self.secret, ts, body)
        try:
            resp = self._client.post(self.url, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise DeliveryError(f"timeout: {exc!r}", retryable=True) from exc
        except httpx.HTTPError as exc:
            raise DeliveryError(f"connection error: {exc!r}", retryable=True) from exc
        code = resp.status_code
        if 200 <= code < 300:
            return
        reason = f"HTTP {code}: {resp.text[:200]}"
        retryable = code >= 500 or code in _RETRYABLE_4XX or code < 200
        raise DeliveryError(reason, retryable=retryable)

    def close(self) -> None:
        self._client.close()
