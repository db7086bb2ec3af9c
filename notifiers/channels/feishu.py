"""Feishu / Lark (飞书) custom group robot.

POST `{"timestamp", "sign", "msg_type", "content"}` to the hook URL. Signature check
("签名校验"): `sign = base64(HMAC-SHA256(key=f"{timestamp}\\n{secret}", msg=b""))`, timestamp in
seconds, refused when more than an hour off. Text goes as `msg_type: text`; "markdown" is sent
as an interactive card (`msg_type: interactive`, `card` with a header coloured by warning level
and a markdown element), Feishu's documented way to format a robot message. The reply carries
`code` (`StatusCode` in older deployments): 0 is success, 11232 "frequency limited" is worth
retrying; 19021 (signature), 19022 (IP), 19024 (keyword) and 9499 (bad request) are not.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from typing import Any

import httpx

from ews.config import ChannelConfig, secret
from notifiers.channels.base import Channel, Notification, RetryPolicy
from notifiers.channels.httpsend import api_error, json_reply, post_json, truncate_utf8
from notifiers.channels.texts import ChannelTexts, packaged

DEFAULT_URL = "https://open.feishu.cn/open-apis/bot/v2/hook/"
MAX_BYTES = 18_000  # the whole request may not exceed 20 KB
TRANSIENT = frozenset({-1, 11232})
RATE_PER_MINUTE = 100
# card header templates named after the warning colours
HEADER_COLOUR = {"blue": "blue", "yellow": "yellow", "orange": "orange", "red": "red"}


def sign(secret_value: str, timestamp_s: int) -> str:
    key = f"{timestamp_s}\n{secret_value}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()


class FeishuChannel(Channel):
    def __init__(
        self, name: str, url: str, *, secret_value: str | None = None, msgtype: str = "markdown",
        texts: ChannelTexts | None = None, timeout_s: float = 5.0, retry: RetryPolicy | None = None,
        client: httpx.Client | None = None, clock: Callable[[], float] = time.time,
    ):
        self.name = name
        self.url = url
        self.secret = secret_value
        self.msgtype = msgtype
        self.texts = texts or packaged("zh-CN")
        self.retry = retry or RetryPolicy()
        self.clock = clock
        self._client = client or httpx.Client(timeout=timeout_s)

    @classmethod
    def from_config(cls, cfg: ChannelConfig) -> FeishuChannel:
        token = secret(cfg.token_env)
        base = cfg.url or DEFAULT_URL
        url = base if token is None else base.rstrip("/") + "/" + token
        return cls(cfg.name, url, secret_value=secret(cfg.secret_env), msgtype=cfg.msgtype,
                   texts=packaged(cfg.language), timeout_s=cfg.timeout_s, retry=RetryPolicy.from_config(cfg))

    def payload(self, note: Notification) -> dict[str, Any]:
        body: dict[str, Any]
        if self.msgtype == "markdown":
            f = self.texts.fields(note)
            colour = HEADER_COLOUR.get(str(note.warning.get("level")), "grey")
            if note.transition == "resolve":
                colour = "green"
            body = {"msg_type": "interactive", "card": {
                "config": {"wide_screen_mode": True},
                "header": {"title": {"tag": "plain_text", "content": f["title"]}, "template": colour},
                "elements": [{"tag": "markdown",
                              "content": truncate_utf8(self.texts.render("card", note), MAX_BYTES)}],
            }}
        else:
            body = {"msg_type": "text",
                    "content": {"text": truncate_utf8(self.texts.render("text", note), MAX_BYTES)}}
        if self.secret is not None:
            ts = int(self.clock())
            body = {"timestamp": str(ts), "sign": sign(self.secret, ts), **body}
        return body

    def send(self, note: Notification) -> None:
        what = f"feishu {self.name}"
        reply = json_reply(post_json(self._client, self.url, self.payload(note), what=what), what)
        code = reply.get("code", reply.get("StatusCode", 0))
        if code != 0:
            raise api_error(what, code, reply.get("msg", reply.get("StatusMessage")), TRANSIENT)

    def close(self) -> None:
        self._client.close()
