"""E-mail through a real SMTP server (aiosmtpd on loopback): plain, STARTTLS with login, and
implicit TLS; headers, UTF-8 subject and body, recipients, Message-ID and reply-code mapping."""

from __future__ import annotations

import email
import email.policy
import ssl
import subprocess
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from ews.config import ChannelConfig
from ews.regions import RegionRegistry
from ews.sensors import SensorRegistry
from ews.servers import free_port
from notifiers.channels import build_channel
from notifiers.channels.base import DeliveryError
from notifiers.channels.smtp import SmtpChannel
from tests.channel_receivers import make_note, person

SENDER = "ews@yjj.example.cn"
STAFF = [
    person("P1", email="duty@example.cn", name="车陂社区值班"),
    person("P2", email="grid@example.cn", name="王艳"),
    person("P3"),  # no address: skipped
]


class Inbox:
    def __init__(self, refuse: dict[str, str] | None = None):
        self.refuse = refuse or {}
        self.envelopes: list[tuple[str, list[str], bytes]] = []

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 Message accepted"

    def messages(self) -> list[EmailMessage]:
        return [email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[misc]
                for _, _, raw in self.envelopes]


def _check_login(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == b"ews" and auth_data.password == b"pw-123"
    return AuthResult(success=ok, handled=False)  # handled=False: the server answers 535 itself


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("tls")
    crt, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(crt),
         "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )
    return crt, key


def _server_tls(cert: tuple[Path, Path]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    return ctx


@pytest.fixture
def plain_smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox(refuse={"gone@example.cn": "550 5.1.1 no such user", "busy@example.cn": "451 4.3.0 try later"})
    ctl = Controller(inbox, hostname="127.0.0.1", port=free_port())
    ctl.start()
    try:
        yield inbox, ctl.port
    finally:
        ctl.stop()


def test_plain_smtp_delivers_utf8_message_to_every_address(
    plain_smtp: tuple[Inbox, int], mini_regions: RegionRegistry, mini_sensors: SensorRegistry,
) -> None:
    inbox, port = plain_smtp
    cfg = ChannelConfig(name="mail", type="smtp", host="127.0.0.1", port=port, security="none",
                        sender=SENDER, sender_name="天河区应急管理局")
    ch = build_channel(cfg)
    assert isinstance(ch, SmtpChannel)
    ch.send(make_note(mini_regions, mini_sensors, recipients=STAFF, channel="mail", transition_id=41))

    ((mail_from, rcpts, _),) = inbox.envelopes
    assert mail_from == SENDER
    assert rcpts == ["duty@example.cn", "grid@example.cn"]
    (msg,) = inbox.messages()
    assert msg["Subject"] == "【橙色预警】天河区 车陂街道 车陂社区 暴雨预警发布"
    assert msg["From"].addresses[0].display_name == "天河区应急管理局"
    assert [(a.display_name, a.addr_spec) for a in msg["To"].addresses] == [
        ("车陂社区值班", "duty@example.cn"), ("王艳", "grid@example.cn")]
    # "41:mail" with ':' (not allowed in a Message-ID) written as =3A
    assert msg["Message-ID"] == "<ews.41=3Amail@yjj.example.cn>"
    assert msg["X-EWS-Idempotency-Key"] == "41:mail"
    assert msg["X-EWS-Level"] == "orange"
    assert msg.get_content_charset() == "utf-8"
    body = msg.get_content()
    assert "3小时累计雨量 62.5 毫米" in body
    assert "预警编号：W-0123456789" in body
    assert "监测对象：RG-A1" in body


def test_same_notification_keeps_its_message_id(plain_smtp: tuple[Inbox, int], mini_regions: RegionRegistry) -> None:
    inbox, port = plain_smtp
    ch = SmtpChannel("mail", "127.0.0.1", SENDER, port=port, security="none")
    note = make_note(mini_regions, recipients=STAFF[:1], channel="mail")
    ch.send(note)
    ch.send(note)  # a repeat after a crash between sending and recording
    ids = [m["Message-ID"] for m in inbox.messages()]
    assert len(ids) == 2 and ids[0] == ids[1]


@pytest.mark.parametrize(("to", "retryable"), [("gone@example.cn", False), ("busy@example.cn", True)])
def test_refused_recipients_map_to_reply_class(
    plain_smtp: tuple[Inbox, int], mini_regions: RegionRegistry, to: str, retryable: bool,
) -> None:
    _, port = plain_smtp
    ch = SmtpChannel("mail", "127.0.0.1", SENDER, port=port, security="none")
    with pytest.raises(DeliveryError) as err:
        ch.send(make_note(mini_regions, recipients=[person("X", email=to)]))
    assert err.value.retryable is retryable


def test_partly_refused_is_delivered_to_the_rest(plain_smtp: tuple[Inbox, int], mini_regions: RegionRegistry) -> None:
    inbox, port = plain_smtp
    ch = SmtpChannel("mail", "127.0.0.1", SENDER, port=port, security="none")
    ch.send(make_note(mini_regions, recipients=[person("A", email="gone@example.cn"), STAFF[0]]))
    assert [rcpts for _, rcpts, _ in inbox.envelopes] == [["duty@example.cn"]]


def test_no_address_and_no_server(mini_regions: RegionRegistry) -> None:
    ch = SmtpChannel("mail", "127.0.0.1", SENDER, port=free_port(), security="none", timeout_s=2)
    with pytest.raises(DeliveryError) as err:
        ch.send(make_note(mini_regions, recipients=[person("P3")]))
    assert err.value.retryable is False
    with pytest.raises(DeliveryError) as err:
        ch.send(make_note(mini_regions, recipients=STAFF))  # nobody listens on that port
    assert err.value.retryable is True


def test_starttls_with_login(
    cert: tuple[Path, Path], mini_regions: RegionRegistry, monkeypatch: pytest.MonkeyPatch,
) -> None:
    inbox = Inbox()
    ctl = Controller(inbox, hostname="127.0.0.1", port=free_port(), tls_context=_server_tls(cert),
                     require_starttls=True, authenticator=_check_login, auth_required=True)
    ctl.start()
    monkeypatch.setenv("EWS_TEST_SMTP_PASSWORD", "pw-123")
    try:
        good = build_channel(ChannelConfig(name="mail", type="smtp", host="127.0.0.1", port=ctl.port,
                                           security="starttls", username="ews", password_env="EWS_TEST_SMTP_PASSWORD",
                                           sender=SENDER, ca_file=cert[0]))
        good.send(make_note(mini_regions, recipients=STAFF))
        wrong = SmtpChannel("mail", "127.0.0.1", SENDER, port=ctl.port, security="starttls", username="ews",
                            password="nope", ca_file=cert[0])
        with pytest.raises(DeliveryError) as err:
            wrong.send(make_note(mini_regions, recipients=STAFF))
        untrusted = SmtpChannel("mail", "127.0.0.1", SENDER, port=ctl.port, security="starttls")
        with pytest.raises(DeliveryError) as err2:
            untrusted.send(make_note(mini_regions, recipients=STAFF))
    finally:
        ctl.stop()
    assert len(inbox.envelopes) == 1
    assert err.value.retryable is False and "authentication" in str(err.value)
    assert err2.value.retryable is False and "certificate" in str(err2.value)


def test_implicit_tls(cert: tuple[Path, Path], mini_regions: RegionRegistry) -> None:
    inbox = Inbox()
    ctl = Controller(inbox, hostname="127.0.0.1", port=free_port(), ssl_context=_server_tls(cert))
    ctl.start()
    try:
        ch = SmtpChannel("mail", "127.0.0.1", SENDER, port=ctl.port, security="ssl", ca_file=cert[0])
        ch.send(make_note(mini_regions, recipients=STAFF, drill=True))
    finally:
        ctl.stop()
    (msg,) = inbox.messages()
    assert msg["Subject"].startswith("【演练】【橙色预警】")
    assert msg["X-EWS-Drill"] == "true"
