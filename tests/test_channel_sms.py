"""The template-driven SMS gateway channel against a local gateway: one request per phone,
placeholders escaped for where they land, success and retry decided by the reply."""

from __future__ import annotations

from collections import Counter
from typing import Any
from urllib.parse import parse_qs

import pytest

from ews.config import ChannelConfig, HttpRequestTemplate
from ews.regions import RegionRegistry
from notifiers.channels import build_channel
from notifiers.channels.base import DeliveryError
from notifiers.channels.sms import SmsChannel
from tests.channel_receivers import Request, make_note, person, recording_server

TOKEN = "gw-token-abc"
PEOPLE = [person("P1", phone="138-0000-0001"), person("P2", phone="+86 139 0000 0002"), person("P3")]


def _json_template(base: str) -> HttpRequestTemplate:
    return HttpRequestTemplate.model_validate({
        "url": f"{base}/v1/sms",
        "headers": {"Authorization": "Bearer {secret}", "X-Request-Id": "{idempotency_key}"},
        "body": {"to": "{phone}", "text": "{message}", "ref": "{idempotency_key}",
                 "meta": {"warning": "{warning_id}", "level": "{level}", "source": "ews"}},
        "success_field": "result.code", "success_values": ["0"], "retry_values": ["RATE_LIMIT"],
    })


def _gateway(req: Request) -> tuple[int, dict[str, Any]]:
    if req.headers.get("authorization") != f"Bearer {TOKEN}":
        return 401, {"result": {"code": "AUTH"}}
    return 200, {"result": {"code": "0", "id": req.json()["ref"]}}


def test_one_request_per_phone_with_filled_template(
    monkeypatch: pytest.MonkeyPatch, mini_regions: RegionRegistry,
) -> None:
    monkeypatch.setenv("EWS_TEST_SMS_TOKEN", TOKEN)
    message = '车陂社区 "内涝" 预警\n请注意'  # quotes and a line break must survive JSON and headers
    with recording_server(_gateway) as gw:
        ch = build_channel(ChannelConfig(name="sms", type="sms", request=_json_template(gw.url),
                                         secret_env="EWS_TEST_SMS_TOKEN"))
        assert isinstance(ch, SmsChannel)
        ch.send(make_note(mini_regions, recipients=PEOPLE, channel="sms", transition_id=5, message=message))
        ch.close()
    assert [r.json()["to"] for r in gw.requests] == ["13800000001", "+8613900000002"]
    first = gw.requests[0]
    assert first.method == "POST" and first.path == "/v1/sms"
    assert first.json() == {
        "to": "13800000001", "text": message, "ref": "5:sms/13800000001",
        "meta": {"warning": "W-0123456789", "level": "orange", "source": "ews"},
    }
    assert first.headers["x-request-id"] == "5:sms/13800000001"
    assert first.headers["content-type"].startswith("application/json")


def test_get_and_form_requests_escape_placeholders(mini_regions: RegionRegistry) -> None:
    with recording_server(lambda req: (200, "OK")) as gw:
        get = SmsChannel("sms", HttpRequestTemplate(method="GET", url=gw.url + "/send?to={phone}&msg={message}",
                                                    body=None))
        form = SmsChannel("sms", HttpRequestTemplate(url=gw.url + "/form", body_format="form",
                                                     body={"mobile": "{phone}", "content": "{message}"}))
        note = make_note(mini_regions, recipients=[PEOPLE[1]], message="水深 30 cm & 上涨?")
        get.send(note)
        form.send(note)
    g, f = gw.requests
    assert g.method == "GET" and g.query == {"to": ["+8613900000002"], "msg": ["水深 30 cm & 上涨?"]}
    assert f.headers["content-type"] == "application/x-www-form-urlencoded"
    assert parse_qs(f.body.decode()) == {"mobile": ["+8613900000002"], "content": ["水深 30 cm & 上涨?"]}


def test_retry_sends_only_the_phones_not_yet_accepted(mini_regions: RegionRegistry) -> None:
    failures = {"left": 1}

    def flaky(req: Request) -> tuple[int, dict[str, Any]]:
        if req.json()["to"] == "+8613900000002" and failures["left"]:
            failures["left"] -= 1
            return 503, {"result": {"code": "BUSY"}}
        return 200, {"result": {"code": "0"}}

    with recording_server(flaky) as gw:
        ch = SmsChannel("sms", _json_template(gw.url), secret_value=TOKEN)
        note = make_note(mini_regions, recipients=PEOPLE)
        with pytest.raises(DeliveryError) as err:
            ch.send(note)
        assert err.value.retryable is True
        ch.send(note)  # the outbox's retry
        ch.close()
    sent = Counter(r.json()["to"] for r in gw.requests)
    assert sent == {"13800000001": 1, "+8613900000002": 2}  # the second only because of its 503


@pytest.mark.parametrize(("reply", "retryable"), [
    ((200, {"result": {"code": "RATE_LIMIT"}}), True),
    ((200, {"result": {"code": "BLACKLISTED"}}), False),
    ((200, {"other": 1}), False),
    ((401, {"result": {"code": "AUTH"}}), False),
    ((429, {}), True),
    ((500, {}), True),
])
def test_gateway_replies_map_to_retryability(
    mini_regions: RegionRegistry, reply: tuple[int, Any], retryable: bool,
) -> None:
    with recording_server(lambda req: reply) as gw:
        ch = SmsChannel("sms", _json_template(gw.url), secret_value=TOKEN)
        with pytest.raises(DeliveryError) as err:
            ch.send(make_note(mini_regions, recipients=PEOPLE[:1]))
        ch.close()
    assert err.value.retryable is retryable


def test_bad_templates_and_missing_phones(mini_regions: RegionRegistry) -> None:
    with pytest.raises(ValueError, match="unknown placeholder"):
        SmsChannel("sms", HttpRequestTemplate(url="http://127.0.0.1:9/{mobile}"))
    ch = SmsChannel("sms", HttpRequestTemplate(url="http://127.0.0.1:9/x"))
    with pytest.raises(DeliveryError) as err:
        ch.send(make_note(mini_regions, recipients=[PEOPLE[2]]))
    assert err.value.retryable is False
