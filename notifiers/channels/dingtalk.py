"""DingTalk (钉钉) custom robot, with its signed URL scheme.

Signing ("加签"): with the robot's secret, `sign = urlencode(base64(HMAC-SHA256(key=secret,
msg=f"{timestamp}\\n{secret}")))`, timestamp in milliseconds, appended to the webhook URL as
`&timestamp=…&sign=…`; DingTalk refuses a timestamp more than an hour off. Payloads:
`{"msgtype": "text", "text": {"content"}, "at": {"atMobiles", "isAtAll"}}` or
`{"msgtype": "markdown", "markdown": {"title", "text"}, "at": …}`; the reply is
`{"errcode": 0, "errmsg": "ok"}`. A robot takes 20 messages a minute; over that it answers
130101/410100 ("send too fast"), which is worth retrying. 310000 (bad signature, keyword or IP
not allowed) and the 400xxx codes (token, robot or group gone) are not.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote_plus, urlencode

import httpx

from ews.config import ChannelConfig, secret
from notifiers.channels.base import Channel, Notification, RetryPolicy
from notifiers.channels.httpsend import api_error, json_reply, post_json, truncate_utf8
from notifiers.channels.recipients import mainland, phones
from notifiers.channels.texts import ChannelTexts, packaged

DEFAULT_URL = "https://oapi.dingtalk.com/robot/send"
MAX_BYTES = 20_000
# -1 system busy; 130101 and 410100 sent too fast
TRANSIENT = frozenset({-1, 130101, 410100})
RATE_PER_MINUTE = 20


def sign(secret_value: str, timestamp_ms: int) -> str:
    """The `sign` query value (already URL-encoded) for `timestamp_ms`."""
    to_sign = f"{timestamp_ms}\n{secret_value}".encode()
    digest = hmac.new(secret_value.encode(), to_sign, hashlib.sha256).digest()
    return quote_plus(base64.b64encode(digest).decode())


def _join(url: str, query: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{query}"


class DingTalkChannel(Channel):
    def __init__(
        self, name: str, url: str, *, token: str | None = None, secret_value: str | None = None,
        msgtype: str = "markdown", mention: bool = False, texts: ChannelTexts | None = None,
        timeout_s: float = 5.0, retry: RetryPolicy | None = None, client: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.name = name
        self.url = url if token is None else _join(url, urlencode({"access_token": token}))
        self.secret = secret_value
        self.msgtype = msgtype
        self.mention = mention
        self.texts = texts or packaged("zh-CN")
        self.retry = retry or RetryPolicy()
        self.clock = clock
        self._client = client or httpx.Client(timeout=timeout_s)

    @classmethod
    def from_config(cls, cfg: ChannelConfig) -> DingTalkChannel:
        return cls(cfg.name, cfg.url or DEFAULT_URL, token=secret(cfg.token_env),
                   secret_value=secret(cfg.secret_env), msgtype=cfg.msgtype, mention=cfg.mention,
                   texts=packaged(cfg.language), timeout_s=cfg.timeout_s, retry=RetryPolicy.from_config(cfg))

    def signed_url(self) -> str:
        if self.secret is None:
            return self.url
        ts = int(self.clock() * 1000)
        return _join(self.url, f"timestamp={ts}&sign={sign(self.secret, ts)}")

    def payload(self, note: Notification) -> dict[str, Any]:
        mobiles = [mainland(p) for _, p in phones(note.recipients, self.name)] if self.mention else []
        # DingTalk shows a mention only where "@<phone>" also appears in the content
        tail = "".join(f" @{m}" for m in mobiles)
        at = {"atMobiles": mobiles, "isAtAll": False}
        if self.msgtype == "markdown":
            f = self.texts.fields(note)
            body = truncate_utf8(self.texts.render("markdown", note), MAX_BYTES - len(tail.encode()))
            return {"msgtype": "markdown", "markdown": {"title": f["title"], "text": body + tail}, "at": at}
        text = truncate_utf8(self.texts.render("text", note), MAX_BYTES - len(tail.encode()))
        return {"msgtype": "text", "text": {"content": text + tail}, "at": at}

    def send(self, note: Notification) -> None:
        what = f"dingtalk {self.name}"
        reply = json_reply(post_json(self._client, self.signed_url(), self.payload(note), what=what), what)
        code = reply.get("errcode", 0)
        if code != 0:
            raise api_error(what, code, reply.get("errmsg"), TRANSIENT)

    def close(self) -> None:
        self._client.close()
