"""E-mail over SMTP: one UTF-8 message per notification to every recipient with an address.

The Message-ID is derived from the idempotency key, so a message repeated after a crash
carries the same id and mail clients and archives show it once. Security is STARTTLS
(port 587), implicit TLS ("ssl", port 465) or none (a relay on the same host); a private CA
can be named for the certificate check. SMTP's own reply codes decide retrying: 4xx is
temporary by definition, 5xx permanent; connection problems are temporary.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

from ews.config import ChannelConfig, secret
from notifiers.channels.base import Channel, DeliveryError, Notification, RetryPolicy
from notifiers.channels.recipients import emails
from notifiers.channels.texts import ChannelTexts, packaged
from notifiers.templates import BEIJING

log = logging.getLogger(__name__)

DEFAULT_PORT = {"starttls": 587, "ssl": 465, "none": 25}
# RFC 5322 atext without '=' (our escape character); anything else in a key is escaped as =XX
_ATEXT = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/?^_`{|}~.")


def message_id(idempotency_key: str, domain: str) -> str:
    """A valid, reversible Message-ID for `idempotency_key` (':' is not allowed in one)."""
    local = "".join(c if c in _ATEXT else "".join(f"={b:02X}" for b in c.encode()) for c in idempotency_key)
    local = ".".join(part or "=" for part in local.split("."))  # no empty dot-atom parts
    return f"<ews.{local}@{domain}>"


def _address(raw: str, display: str = "") -> Address:
    user, _, host = raw.rpartition("@")
    return Address(display_name=display, username=user, domain=host)


class SmtpChannel(Channel):
    def __init__(
        self, name: str, host: str, sender: str, *, port: int | None = None,
        security: str = "starttls", username: str | None = None, password: str | None = None,
        sender_name: str = "", ca_file: Path | None = None, texts: ChannelTexts | None = None,
        timeout_s: float = 10.0, retry: RetryPolicy | None = None,
    ):
        if "@" not in sender:
            raise ValueError(f"smtp channel {name}: sender {sender!r} is not an e-mail address")
        self.name = name
        self.host = host
        self.port = port or DEFAULT_PORT[security]
        self.security = security
        self.username = username
        self.password = password
        self.sender = sender
        self.sender_name = sender_name
        self.texts = texts or packaged("zh-CN")
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self._tls = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)

    @classmethod
    def from_config(cls, cfg: ChannelConfig) -> SmtpChannel:
        if not cfg.host or not cfg.sender:
            raise ValueError(f"smtp channel {cfg.name} needs host and sender")
        return cls(cfg.name, cfg.host, cfg.sender, port=cfg.port, security=cfg.security,
                   username=cfg.username, password=secret(cfg.password_env),
                   sender_name=cfg.sender_name or "", ca_file=cfg.ca_file, texts=packaged(cfg.language),
                   timeout_s=cfg.timeout_s, retry=RetryPolicy.from_config(cfg))

    def message(self, note: Notification, now: datetime | None = None) -> EmailMessage:
        to = emails(note.recipients, self.name)
        if not to:
            raise DeliveryError(f"smtp {self.name}: no recipient has an e-mail address", retryable=False)
        msg = EmailMessage()
        msg["Subject"] = self.texts.render("email_subject", note)
        msg["From"] = _address(self.sender, self.sender_name)
        msg["To"] = [_address(addr, str(r.get("name") or "")) for r, addr in to]
        msg["Date"] = format_datetime(now or datetime.now(BEIJING))
        msg["Message-ID"] = message_id(note.idempotency_key, self.sender.rpartition("@")[2])
        msg["X-EWS-Warning-Id"] = str(note.warning.get("id", ""))
        msg["X-EWS-Level"] = str(note.warning.get("level", ""))
        msg["X-EWS-Idempotency-Key"] = note.idempotency_key
        if note.warning.get("drill"):
            msg["X-EWS-Drill"] = "true"
        msg.set_content(self.texts.render("email_body", note), charset="utf-8")
        return msg

    def _connect(self) -> smtplib.SMTP:
        if self.security == "ssl":
            conn: smtplib.SMTP = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout_s,
                                                 context=self._tls)
        else:
            conn = smtplib.SMTP(self.host, self.port, timeout=self.timeout_s)
        try:
            conn.ehlo()
            if self.security == "starttls":
                conn.starttls(context=self._tls)
                conn.ehlo()
            if self.username is not None:
                conn.user, conn.password = self.username, self.password or ""
                if "plain" in conn.esmtp_features.get("auth", "").lower().split():
                    # one mechanism, one answer: login() would fall back to others after a refusal
                    conn.auth("PLAIN", conn.auth_plain)
                else:
                    conn.login(self.username, self.password or "")
        except BaseException:
            conn.close()
            raise
        return conn

    def send(self, note: Notification) -> None:
        msg = self.message(note)
        what = f"smtp {self.name}"
        try:
            conn = self._connect()
            try:
                refused = conn.send_message(msg)
            finally:
                try:
                    conn.quit()
                except (smtplib.SMTPException, OSError):
                    conn.close()
        except smtplib.SMTPAuthenticationError as exc:
            raise DeliveryError(f"{what}: authentication refused: {exc}", retryable=False) from exc
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            raise DeliveryError(f"{what}: every recipient refused: {exc.recipients}",
                                retryable=all(400 <= c < 500 for c in codes)) from exc
        except smtplib.SMTPResponseException as exc:
            raise DeliveryError(f"{what}: {exc.smtp_code} {exc.smtp_error!r}",
                                retryable=400 <= exc.smtp_code < 500) from exc
        except ssl.SSLCertVerificationError as exc:
            raise DeliveryError(f"{what}: certificate not trusted: {exc}", retryable=False) from exc
        except smtplib.SMTPNotSupportedError as exc:
            raise DeliveryError(f"{what}: the server lacks a feature we need: {exc}", retryable=False) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"{what}: {exc!r}", retryable=True) from exc
        if refused:
            # the others have it; retrying would send it to them twice
            log.error("%s: message %s refused for %s", what, msg["Message-ID"], refused)
