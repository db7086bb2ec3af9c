"""Prometheus Alertmanager's v2 API: each warning becomes an alert, a lifted one is ended.

POST /api/v2/alerts takes a list of `{labels, annotations, startsAt, endsAt, generatorURL}`.
Alertmanager identifies an alert by its label set, and `severity` is a label (so its routes
and inhibition rules can use it), so a raise would leave the old-level alert firing: every
post therefore also ends the same warning at the other levels. Nothing we do not send keeps an
alert alive, so an open warning's alert gets an explicit `endsAt` of now + ttl (Alertmanager
would otherwise resolve it after its resolve_timeout); reminders and level changes renew it.
A group notice posts each of its warnings; a delivery failure is an alert of its own
(alertname EwsDeliveryFailed).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import httpx

from ews.config import ChannelConfig, secret
from ews.levels import HAZARD_LEVELS, Level
from notifiers.channels.base import Channel, Notification, RetryPolicy
from notifiers.channels.httpsend import client, post_json
from notifiers.channels.texts import ChannelTexts, packaged

ALERTNAME = "EwsWarning"
ALERTNAME_DELIVERY = "EwsDeliveryFailed"
DEFAULT_TTL_S = 6 * 3600.0


def _ts(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def labels(w: dict[str, Any], level: str) -> dict[str, str]:
    region = w.get("region") or {}
    out = {
        "alertname": ALERTNAME,
        "severity": level,
        "warning_id": str(w.get("id", "")),
        "rule": str(w.get("rule", "")),
        "subject": str(w.get("subject", "")),
        "kind": str(w.get("kind", "")),
        "district": str((region.get("district") or {}).get("code", "")),
        "street": str((region.get("street") or {}).get("code", "")),
        "community": str((region.get("community") or {}).get("code", "")),
    }
    if w.get("drill"):
        out["drill"] = "true"
    return out


class AlertmanagerChannel(Channel):
    def __init__(
        self, name: str, url: str, *, ttl_s: float = DEFAULT_TTL_S, generator_url: str | None = None,
        auth: tuple[str, str] | None = None, texts: ChannelTexts | None = None,
        retry: RetryPolicy | None = None, http: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.name = name
        self.url = url.rstrip("/") + "/api/v2/alerts"
        self.ttl_s = ttl_s
        self.generator_url = generator_url
        self.texts = texts or packaged("zh-CN")
        self.retry = retry or RetryPolicy()
        self.clock = clock
        self._client = http or httpx.Client(timeout=5.0)
        if auth is not None:
            self._client.auth = httpx.BasicAuth(*auth)

    @classmethod
    def from_config(cls, cfg: ChannelConfig) -> AlertmanagerChannel:
        if not cfg.url:
            raise ValueError(f"alertmanager channel {cfg.name} needs the Alertmanager url")
        auth = (cfg.username, secret(cfg.password_env) or "") if cfg.username else None
        return cls(cfg.name, cfg.url, ttl_s=cfg.ttl_s or DEFAULT_TTL_S, generator_url=cfg.generator_url,
                   auth=auth, texts=packaged(cfg.language), retry=RetryPolicy.from_config(cfg),
                   http=client(cfg.timeout_s, cfg.ca_file))

    def alerts(self, note: Notification) -> list[dict[str, Any]]:
        """The alerts to post: one warning's, or each of a group's warnings'."""
        if note.notice == "group" and note.items:
            parts = [replace(note, notice="transition", items=(), transition=str(it.get("transition", "")),
                             warning=it.get("warning") or {}, message=str(it.get("message", "")))
                     for it in note.items]
            return [a for part in parts for a in self._warning_alerts(part)]
        return self._warning_alerts(note)

    def _warning_alerts(self, note: Notification) -> list[dict[str, Any]]:
        w = note.warning
        now_ms = int(self.clock() * 1000)
        level = str(w.get("level", ""))
        starts_ms = int(w.get("issued_ts_ms") or now_ms)
        f = self.texts.fields(note)
        annotations = {
            "summary": f["title"],
            "description": note.message,
            "region": f["region"],
            "measure": f"{f['measure']} {f['quantity']}",
            "event_ts": str(w.get("event_ts", "")),
            "transition": note.transition,
        }
        lbl = labels(w, level)
        if note.notice == "delivery_failed":
            # its own alert: the warning's alert stays as it is
            lbl["alertname"] = ALERTNAME_DELIVERY
        ended = _ts(now_ms)
        current: dict[str, Any] = {
            "labels": lbl,
            "annotations": annotations,
            "startsAt": _ts(starts_ms),
            # a lifted warning ends now; an open one stays firing until renewed or ended
            "endsAt": ended if note.transition == "resolve" else _ts(now_ms + int(self.ttl_s * 1000)),
        }
        if self.generator_url:
            current["generatorURL"] = self.generator_url.replace("{id}", str(w.get("id", "")))
        if note.notice == "delivery_failed":
            return [current]
        # the levels this warning may have fired at before (up to its peak) are ended
        peak = Level.parse(str(w.get("peak_level") or level or "red"))
        others = [
            {"labels": labels(w, lv.key), "annotations": annotations, "startsAt": _ts(starts_ms), "endsAt": ended}
            for lv in HAZARD_LEVELS if lv.key != level and lv <= peak
        ]
        return [current, *others]

    def send(self, note: Notification) -> None:
        post_json(self._client, self.url, self.alerts(note), what=f"alertmanager {self.name}")

    def close(self) -> None:
        self._client.close()
