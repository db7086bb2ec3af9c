"""SMS through an HTTP gateway, one request per recipient phone, built from a request template.

Every gateway has its own API, so the request is configuration: method, URL, headers and body
with the placeholders {phone}, {message}, {idempotency_key} (per phone), {warning_id}, {level}
and {secret}. Values are escaped for where they land: URL-encoded in the URL, JSON-encoded in
a JSON body (each string of the body mapping is filled in, then the mapping is serialised),
form-encoded in a form body, and stripped of line breaks in headers. Success is a listed HTTP
status and, optionally, a listed value of one field of the JSON reply.
"""

from __future__ import annotations

import string
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import orjson

from ews.config import ChannelConfig, HttpRequestTemplate, secret
from notifiers.channels.base import Channel, DeliveryError, Notification, RetryPolicy
from notifiers.channels.httpsend import RETRYABLE_STATUS, client, request
from notifiers.channels.memo import AcceptedParts
from notifiers.channels.recipients import phones
from notifiers.channels.texts import ChannelTexts, packaged

PLACEHOLDERS = frozenset({"phone", "message", "idempotency_key", "warning_id", "level", "secret"})
MAX_CHARS = 500  # long-SMS concatenation tops out around here on Chinese gateways


def _strings(obj: Any) -> list[str]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for k, v in obj.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(obj, list):
        return [s for v in obj for s in _strings(v)]
    return []


def check_template(t: HttpRequestTemplate) -> None:
    """Refuse unknown placeholders at start-up rather than at the first warning."""
    for text in [t.url, *t.headers.keys(), *t.headers.values(), *_strings(t.body)]:
        try:
            used = {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
        except ValueError as exc:
            raise ValueError(f"sms request template {text!r}: {exc}") from exc
        unknown = used - PLACEHOLDERS
        if unknown:
            raise ValueError(f"sms request template {text!r}: unknown placeholder(s) {sorted(unknown)}; "
                             f"known: {sorted(PLACEHOLDERS)}")


def _fill(obj: Any, values: dict[str, str]) -> Any:
    if isinstance(obj, str):
        return obj.format_map(values)
    if isinstance(obj, dict):
        return {_fill(k, values): _fill(v, values) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_fill(v, values) for v in obj]
    return obj


def _field(data: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return None
    return data


class SmsChannel(Channel):
    def __init__(
        self, name: str, template: HttpRequestTemplate, *, secret_value: str | None = None,
        texts: ChannelTexts | None = None, timeout_s: float = 5.0, retry: RetryPolicy | None = None,
        http: httpx.Client | None = None,
    ):
        check_template(template)
        self.name = name
        self.template = template
        self.secret = secret_value
        self.texts = texts or packaged("zh-CN")
        self.retry = retry or RetryPolicy()
        self._client = http or httpx.Client(timeout=timeout_s)
        self._accepted = AcceptedParts()

    @classmethod
    def from_config(cls, cfg: ChannelConfig) -> SmsChannel:
        if cfg.request is None:
            raise ValueError(f"sms channel {cfg.name} needs a request template")
        return cls(cfg.name, cfg.request, secret_value=secret(cfg.secret_env), texts=packaged(cfg.language),
                   retry=RetryPolicy.from_config(cfg), http=client(cfg.timeout_s, cfg.ca_file))

    def build(self, note: Notification, phone: str) -> tuple[str, str, dict[str, str], bytes | None]:
        """Method, URL, headers and body of the request for one phone."""
        t = self.template
        text = self.texts.render("sms", note)
        values = {
            "phone": phone, "message": text[:MAX_CHARS],
            "idempotency_key": f"{note.idempotency_key}/{phone}",
            "warning_id": str(note.warning.get("id", "")), "level": str(note.warning.get("level", "")),
            "secret": self.secret or "",
        }
        url = t.url.format_map({k: quote(v, safe="") for k, v in values.items()})
        flat = {k: v.replace("\r", " ").replace("\n", " ") for k, v in values.items()}
        headers = {k.format_map(flat): v.format_map(flat) for k, v in t.headers.items()}
        body: bytes | None = None
        if t.body is not None:
            if t.body_format == "json":
                body = orjson.dumps(_fill(t.body, values))
                headers.setdefault("Content-Type", "application/json; charset=utf-8")
            elif t.body_format == "form":
                if not isinstance(t.body, dict):
                    raise DeliveryError(f"sms {self.name}: a form body must be a mapping", retryable=False)
                body = urlencode(_fill(t.body, values)).encode()
                headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
            else:
                body = _fill(str(t.body), values).encode()
                headers.setdefault("Content-Type", "text/plain; charset=utf-8")
        return t.method, url, headers, body

    def _check(self, resp: httpx.Response, what: str) -> None:
        t = self.template
        if resp.status_code not in t.success_status:
            retryable = resp.status_code >= 500 or resp.status_code in RETRYABLE_STATUS
            raise DeliveryError(f"{what}: HTTP {resp.status_code}: {resp.text[:200]}", retryable=retryable)
        if t.success_field is None:
            return
        try:
            value = _field(resp.json(), t.success_field)
        except ValueError as exc:
            raise DeliveryError(f"{what}: reply is not JSON: {resp.text[:200]!r}", retryable=True) from exc
        if value is not None and str(value) in t.success_values:
            return
        raise DeliveryError(f"{what}: gateway says {t.success_field}={value!r}: {resp.text[:200]}",
                            retryable=value is not None and str(value) in t.retry_values)

    def send(self, note: Notification) -> None:
        targets = phones(note.recipients, self.name)
        if not targets:
            raise DeliveryError(f"sms {self.name}: no recipient has a phone number", retryable=False)
        for r, phone in targets:
            part = f"{note.idempotency_key}/{phone}"
            if part in self._accepted:
                continue
            what = f"sms {self.name} to {r.get('id')}"
            method, url, headers, body = self.build(note, phone)
            self._check(request(self._client, method, url, content=body, headers=headers, what=what), what)
            self._accepted.add(part)

    def close(self) -> None:
        self._client.close()
