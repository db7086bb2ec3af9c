"""WeCom, DingTalk and Feishu group robots against local servers that check the documented
payloads and signatures (computed here independently of the channels)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

import pytest

from ews.config import ChannelConfig
from ews.levels import Level
from ews.regions import RegionRegistry
from ews.sensors import SensorRegistry
from notifiers.channels import build_channel
from notifiers.channels.base import DeliveryError
from notifiers.channels.dingtalk import DingTalkChannel
from notifiers.channels.feishu import FeishuChannel
from notifiers.channels.wecom import WeComChannel
from tests.channel_receivers import Request, make_note, person, recording_server

KEY = "693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa"
DING_TOKEN = "dt-access-token-123"
DING_SECRET = "SEC0123456789abcdef"
FEISHU_HOOK = "hook-0000-1111"
FEISHU_SECRET = "feishu-secret-xyz"
STAFF = [person("P1", phone="138-0000-0001", wecom="zhangsan"), person("P2", phone="+86 139 0000 0002"),
         person("P3")]


# -- WeCom -------------------------------------------------------------------------------------

def _wecom_server(req: Request) -> tuple[int, dict[str, Any]]:
    if req.query.get("key") != [KEY]:
        return 200, {"errcode": 93000, "errmsg": "invalid webhook url"}
    body = req.json()
    if body.get("msgtype") not in ("text", "markdown") or "content" not in body[body["msgtype"]]:
        return 200, {"errcode": 40008, "errmsg": "invalid message type"}
    return 200, {"errcode": 0, "errmsg": "ok"}


def test_wecom_markdown_payload(
    monkeypatch: pytest.MonkeyPatch, mini_regions: RegionRegistry, mini_sensors: SensorRegistry,
) -> None:
    monkeypatch.setenv("EWS_TEST_WECOM_KEY", KEY)
    with recording_server(_wecom_server) as rx:
        ch = build_channel(ChannelConfig(name="wx", type="wecom", url=f"{rx.url}/cgi-bin/webhook/send",
                                         token_env="EWS_TEST_WECOM_KEY"))
        assert isinstance(ch, WeComChannel)
        ch.send(make_note(mini_regions, mini_sensors, recipients=STAFF))
        ch.close()
    (req,) = rx.requests
    assert req.path == "/cgi-bin/webhook/send" and req.query["key"] == [KEY]
    assert req.headers["content-type"].startswith("application/json")
    body = req.json()
    assert body["msgtype"] == "markdown"
    content = body["markdown"]["content"]
    assert content.startswith("### 暴雨橙色预警发布")
    assert "3小时累计雨量 62.5 毫米" in content
    assert "天河区 车陂街道 车陂社区" in content and "W-0123456789" in content


def test_wecom_text_mentions_by_phone_and_user_id(mini_regions: RegionRegistry) -> None:
    with recording_server(_wecom_server) as rx:
        ch = WeComChannel("wx", f"{rx.url}/send?key={KEY}", msgtype="text", mention=True)
        ch.send(make_note(mini_regions, recipients=STAFF, drill=True))
        ch.close()
    text = rx.requests[0].json()["text"]
    assert text["mentioned_mobile_list"] == ["13800000001", "13900000002"]  # +86 dropped
    assert text["mentioned_list"] == ["zhangsan"]
    assert text["content"].startswith("【演练】暴雨橙色预警发布\n")


def test_wecom_long_content_is_cut_to_the_documented_byte_limit(mini_regions: RegionRegistry) -> None:
    with recording_server(_wecom_server) as rx:
        ch = WeComChannel("wx", f"{rx.url}/send?key={KEY}", msgtype="markdown")
        ch.send(make_note(mini_regions, message="暴雨" * 2000))  # 12,000 bytes of UTF-8
        ch.close()
    content = rx.requests[0].json()["markdown"]["content"]
    assert len(content.encode()) <= 4096
    assert content.endswith("…")


@pytest.mark.parametrize(("reply", "retryable"), [
    ((200, {"errcode": 45009, "errmsg": "api freq out of limit"}), True),
    ((200, {"errcode": -1, "errmsg": "system busy"}), True),
    ((200, {"errcode": 93000, "errmsg": "invalid webhook url"}), False),
    ((200, {"errcode": 40058, "errmsg": "invalid parameter"}), False),
    ((502, "bad gateway"), True),
    ((404, "not found"), False),
    ((200, "<html>proxy error</html>"), True),
])
def test_wecom_errors_map_to_retryability(
    mini_regions: RegionRegistry, reply: tuple[int, Any], retryable: bool,
) -> None:
    with recording_server(lambda req: reply) as rx:
        ch = WeComChannel("wx", f"{rx.url}/send?key={KEY}")
        with pytest.raises(DeliveryError) as err:
            ch.send(make_note(mini_regions))
        ch.close()
    assert err.value.retryable is retryable


# -- DingTalk ----------------------------------------------------------------------------------

def _ding_expected_sign(timestamp: str, secret: str) -> str:
    # DingTalk's documented 加签: HmacSHA256 with the secret as key over "timestamp\nsecret"
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}\n{secret}".encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode("ascii")


def _ding_server(req: Request) -> tuple[int, dict[str, Any]]:
    if req.query.get("access_token") != [DING_TOKEN]:
        return 200, {"errcode": 300001, "errmsg": "token is not exist"}
    ts, sign = req.query.get("timestamp", [""])[0], req.query.get("sign", [""])[0]
    if not ts or abs(int(ts) - time.time() * 1000) > 3_600_000:
        return 200, {"errcode": 310000, "errmsg": "invalid timestamp"}
    if sign != _ding_expected_sign(ts, DING_SECRET):  # parse_qs already url-decoded it
        return 200, {"errcode": 310000, "errmsg": "sign not match"}
    return 200, {"errcode": 0, "errmsg": "ok"}


def test_dingtalk_signed_markdown_with_mentions(
    monkeypatch: pytest.MonkeyPatch, mini_regions: RegionRegistry,
) -> None:
    monkeypatch.setenv("EWS_TEST_DING_TOKEN", DING_TOKEN)
    monkeypatch.setenv("EWS_TEST_DING_SECRET", DING_SECRET)
    with recording_server(_ding_server) as rx:
        ch = build_channel(ChannelConfig(name="dd", type="dingtalk", url=f"{rx.url}/robot/send",
                                         token_env="EWS_TEST_DING_TOKEN", secret_env="EWS_TEST_DING_SECRET",
                                         mention=True))
        assert isinstance(ch, DingTalkChannel)
        ch.send(make_note(mini_regions, recipients=STAFF, level=Level.RED))
        ch.close()
    (req,) = rx.requests
    assert req.path == "/robot/send"
    body = req.json()
    assert body["msgtype"] == "markdown"
    assert body["markdown"]["title"] == "暴雨红色预警发布"
    assert body["at"] == {"atMobiles": ["13800000001", "13900000002"], "isAtAll": False}
    assert body["markdown"]["text"].endswith(" @13800000001 @13900000002")


def test_dingtalk_sign_is_url_encoded() -> None:
    from notifiers.channels.dingtalk import sign

    # find a timestamp whose base64 signature holds a character that needs escaping
    for ts in range(1_700_000_000_000, 1_700_000_000_200):
        expected = _ding_expected_sign(str(ts), DING_SECRET)
        if "+" in expected or "/" in expected:
            got = sign(DING_SECRET, ts)
            assert "+" not in got and "/" not in got
            assert got.replace("%2B", "+").replace("%2F", "/").replace("%3D", "=") == expected
            return
    pytest.fail("no timestamp gave a signature with '+' or '/'")


def test_dingtalk_wrong_secret_is_not_retryable(mini_regions: RegionRegistry) -> None:
    with recording_server(_ding_server) as rx:
        ch = DingTalkChannel("dd", f"{rx.url}/robot/send", token=DING_TOKEN, secret_value="SEC-wrong",
                             msgtype="text")
        with pytest.raises(DeliveryError) as err:
            ch.send(make_note(mini_regions))
        ch.close()
    assert err.value.retryable is False
    assert "310000" in str(err.value)


@pytest.mark.parametrize(("code", "retryable"), [(130101, True), (410100, True), (-1, True),
                                                 (310000, False), (400101, False)])
def test_dingtalk_errcodes(mini_regions: RegionRegistry, code: int, retryable: bool) -> None:
    with recording_server(lambda req: (200, {"errcode": code, "errmsg": "x"})) as rx:
        ch = DingTalkChannel("dd", f"{rx.url}/robot/send", token=DING_TOKEN)
        with pytest.raises(DeliveryError) as err:
            ch.send(make_note(mini_regions))
        ch.close()
    assert err.value.retryable is retryable


# -- Feishu ------------------------------------------------------------------------------------

def _feishu_expected_sign(timestamp: str, secret: str) -> str:
    # Feishu's documented 签名校验: HmacSHA256 keyed with "timestamp\nsecret" over an empty message
    key = f"{timestamp}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, b"", digestmod=hashlib.sha256).digest()).decode("ascii")


def _feishu_server(req: Request) -> tuple[int, dict[str, Any]]:
    if req.path != f"/open-apis/bot/v2/hook/{FEISHU_HOOK}":
        return 404, {"code": 19001, "msg": "param invalid: incoming webhook access token invalid"}
    body = req.json()
    ts = body.get("timestamp", "")
    if not ts or abs(int(ts) - time.time()) > 3600 or body.get("sign") != _feishu_expected_sign(ts, FEISHU_SECRET):
        return 200, {"code": 19021, "msg": "sign match fail or timestamp is not within one hour from current time"}
    if body.get("msg_type") not in ("text", "interactive"):
        return 200, {"code": 9499, "msg": "Bad Request"}
    return 200, {"code": 0, "msg": "success", "data": {}}


def test_feishu_signed_card_coloured_by_level(
    monkeypatch: pytest.MonkeyPatch, mini_regions: RegionRegistry,
) -> None:
    monkeypatch.setenv("EWS_TEST_FEISHU_HOOK", FEISHU_HOOK)
    monkeypatch.setenv("EWS_TEST_FEISHU_SECRET", FEISHU_SECRET)
    with recording_server(_feishu_server) as rx:
        ch = build_channel(ChannelConfig(name="fs", type="feishu", url=f"{rx.url}/open-apis/bot/v2/hook/",
                                         token_env="EWS_TEST_FEISHU_HOOK", secret_env="EWS_TEST_FEISHU_SECRET"))
        assert isinstance(ch, FeishuChannel)
        ch.send(make_note(mini_regions, level=Level.ORANGE))
        ch.send(make_note(mini_regions, level=Level.ORANGE, transition="resolve", state="resolved"))
        ch.close()
    opened, lifted = (r.json() for r in rx.requests)
    assert opened["msg_type"] == "interactive"
    assert opened["card"]["header"]["template"] == "orange"
    assert opened["card"]["header"]["title"]["content"] == "暴雨橙色预警发布"
    assert "3小时累计雨量 62.5 毫米" in opened["card"]["elements"][0]["content"]
    assert lifted["card"]["header"]["template"] == "green"
    assert lifted["card"]["header"]["title"]["content"] == "暴雨橙色预警解除"


def test_feishu_text_and_older_status_code_reply(mini_regions: RegionRegistry) -> None:
    with recording_server(lambda req: (200, {"StatusCode": 0, "StatusMessage": "success"})) as rx:
        ch = FeishuChannel("fs", f"{rx.url}/hook/x", msgtype="text")
        ch.send(make_note(mini_regions))
        ch.close()
    body = rx.requests[0].json()
    assert body["msg_type"] == "text" and "sign" not in body  # unsigned without a secret
    assert body["content"]["text"].startswith("暴雨橙色预警发布\n")


@pytest.mark.parametrize(("reply", "retryable"), [
    ({"code": 11232, "msg": "frequency limited"}, True),
    ({"code": 19021, "msg": "sign match fail"}, False),
    ({"code": 19024, "msg": "Key Words Not Found"}, False),
    ({"StatusCode": 9499, "StatusMessage": "Bad Request"}, False),
])
def test_feishu_error_codes(mini_regions: RegionRegistry, reply: dict[str, Any], retryable: bool) -> None:
    with recording_server(lambda req: (200, reply)) as rx:
        ch = FeishuChannel("fs", f"{rx.url}/hook/x", secret_value=FEISHU_SECRET)
        with pytest.raises(DeliveryError) as err:
            ch.send(make_note(mini_regions))
        ch.close()
    assert err.value.retryable is retryable


def test_robot_fields_are_checked_per_type() -> None:
    with pytest.raises(ValueError, match="secret_env"):
        ChannelConfig(name="wx", type="wecom", secret_env="X")  # WeCom robots are not signed
    with pytest.raises(ValueError, match="mention"):
        ChannelConfig(name="fs", type="feishu", mention=True)
    with pytest.raises(ValueError, match="host"):
        ChannelConfig(name="dd", type="dingtalk", host="smtp.example.cn")


def test_group_notice_has_its_own_title_and_layout(mini_regions: RegionRegistry) -> None:
    from dataclasses import replace

    base = make_note(mini_regions, level=Level.RED)
    items = ({"transition": "open", "warning": base.warning, "message": "甲"},
             {"transition": "open", "warning": base.warning, "message": "乙"})
    group = replace(base, notice="group", transition="group", items=items, message="预警汇总\n1. 甲\n2. 乙")
    with recording_server(_wecom_server) as rx:
        ch = WeComChannel("wx", f"{rx.url}/send?key={KEY}")
        ch.send(group)
        ch.send(replace(base, notice="remind", transition="remind"))
        ch.close()
    grouped, reminder = (r.json()["markdown"]["content"] for r in rx.requests)
    assert grouped == "### 预警汇总：2条，最高红色\n预警汇总\n1. 甲\n2. 乙"
    assert reminder.startswith("### 暴雨红色预警未确认提醒\n")
