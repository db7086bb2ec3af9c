"""The addresses a notification reaches on one channel, taken from its recipients.

Registries are written by hand ("138-0000-0001", "+86 138 0000 0001"); gateways and robots want
digits. A recipient without an address for the channel is skipped and named in the log, since
the routing policy chose them and an operator should fix the registry.
"""

from __future__ import annotations

import logging
import re
from typing import Any

log = logging.getLogger(__name__)

_NOT_DIGIT = re.compile(r"[^\d]")


def normalize_phone(raw: str) -> str | None:
    """Digits only, keeping a leading '+'; None when fewer than 5 digits remain."""
    s = raw.strip()
    digits = _NOT_DIGIT.sub("", s)
    if len(digits) < 5:
        return None
    return ("+" + digits) if s.startswith("+") else digits


def mainland(phone: str) -> str:
    """A +86 number as the 11 digits WeCom and DingTalk match their members' mobiles against."""
    return phone[3:] if phone.startswith("+86") else phone


def phones(recipients: list[dict[str, Any]], channel: str) -> list[tuple[dict[str, Any], str]]:
    """(recipient, phone) for each recipient with a usable phone number, each number once."""
    out: list[tuple[dict[str, Any], str]] = []
    seen: set[str] = set()
    for r in recipients:
        p = normalize_phone(str(r.get("phone") or ""))
        if p is None:
            if r.get("audience") != "public":
                log.warning("%s: recipient %s has no usable phone number", channel, r.get("id"))
            continue
        if p not in seen:
            seen.add(p)
            out.append((r, p))
    return out


def emails(recipients: list[dict[str, Any]], channel: str) -> list[tuple[dict[str, Any], str]]:
    out: list[tuple[dict[str, Any], str]] = []
    seen: set[str] = set()
    for r in recipients:
        e = str(r.get("email") or "").strip()
        if "@" not in e:
            if r.get("audience") != "public":
                log.warning("%s: recipient %s has no e-mail address", channel, r.get("id"))
            continue
        if e.lower() not in seen:
            seen.add(e.lower())
            out.append((r, e))
    return out
