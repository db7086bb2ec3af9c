"""WeCom (企业微信) group robot: POST JSON to the webhook with the robot's key.

Documented format: `{"msgtype": "text", "text": {"content", "mentioned_list",
"mentioned_mobile_list"}}` or `{"msgtype": "markdown", "markdown": {"content"}}`; the reply is
`{"errcode": 0, "errmsg": "ok"}`. Content is limited to 2048 (text) and 4096 (markdown) bytes
of UTF-8, and a robot to 20 messages a minute (errcode 45009 when exceeded, worth retrying).
The key in the URL is the robot's only credential, so it comes from the environment.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import httpx

from ews.config import ChannelConfig, secret
from notifiers.channels.base import Channel, Notification, RetryPolicy
from notifiers.channels.httpsend import api_error, json_reply, post_json, truncate_utf8
from notifiers.channels.recipients import mainland, phones
from notifiers.channels.texts import ChannelTexts, packaged

DEFAULT_URL = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send"
MAX_BYTES = {"text": 2048, "markdown": 4096}
# -1 system busy, 45009 rate limit (20/min per robot), 45033 too many concurrent calls
TRANSIENT = frozenset({-1, 45009, 45033})
RATE_PER_MINUTE = 20


def endpoint(url: str, key: str | None) -> str:
    if key is None:
        return url
    return f"{url}{'&' if '?' in url else '?'}{urlencode({'key': key})}"


class WeComChannel(Channel):
    def __init__(
        self, name: str, url: str, *, msgtype: str = "markdown", mention: bool = False,
        texts: ChannelTexts | None = None, timeout_s: float = 5.0, retry: RetryPolicy | None = None,
        client: httpx.Client | None = None,
    ):
        self.name = name
        self.url = url
        self.msgtype = msgtype
        self.mention = mention
        self.texts = texts or packaged("zh-CN")
        self.retry = retry or RetryPolicy()
        self._client = client or httpx.Client(timeout=timeout_s)

    @classmethod
    def from_config(cls, cfg: ChannelConfig) -> WeComChannel:
        return cls(cfg.name, endpoint(cfg.url or DEFAULT_URL, secret(cfg.token_env)), msgtype=cfg.msgtype,
                   mention=cfg.mention, texts=packaged(cfg.language), timeout_s=cfg.timeout_s,
                   retry=RetryPolicy.from_config(cfg))

    def payload(self, note: Notification) -> dict[str, Any]:
        if self.msgtype == "markdown":
            content = self.texts.render("markdown", note)
            if self.mention:
                # markdown messages mention by WeCom user id only
                ids = [str(r["wecom"]) for r in note.recipients if r.get("wecom")]
                content += "".join(f"\n<@{i}>" for i in ids)
            return {"msgtype": "markdown",
                    "markdown": {"content": truncate_utf8(content, MAX_BYTES["markdown"])}}
        text: dict[str, Any] = {"content": truncate_utf8(self.texts.render("text", note), MAX_BYTES["text"])}
        if self.mention:
            text["mentioned_list"] = [str(r["wecom"]) for r in note.recipients if r.get("wecom")]
            text["mentioned_mobile_list"] = [mainland(p) for _, p in phones(note.recipients, self.name)]
        return {"msgtype": "text", "text": text}

    def send(self, note: Notification) -> None:
        what = f"wecom {self.name}"
        reply = json_reply(post_json(self._client, self.url, self.payload(note), what=what), what)
        code = reply.get("errcode", 0)
        if code != 0:
            raise api_error(what, code, reply.get("errmsg"), TRANSIENT)

    def close(self) -> None:
        self._client.close()
