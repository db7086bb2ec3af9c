"""Silences and maintenance windows: notifications held back by region subtree, sensor or rule.

A silence matches a warning when every matcher it names matches (region: the warning's
community lies in that subtree; sensor: the warning's subject; rule: the warning's rule).
It only keeps notifications back: the warning's transitions are still stored, audited and
published on the retained topic, so the record and the displays stay true. A maintenance
window is a silence planned ahead (it starts later than it was written). Silences live in
SQLite, so one written by `ews silence` reaches a running pipeline within a second.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ews.regions import RegionRegistry
from ews.store import Store

_REGION_RE = re.compile(r"^\d{6}(\d{3}(\d{3})?)?$")


class SilenceError(ValueError):
    """A silence that cannot be written; `field` names what is wrong."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class SilenceRequest(BaseModel):
    """What an operator asks for (from the CLI or the HTTP API)."""

    model_config = ConfigDict(extra="forbid")
    region: str | None = None  # 6, 9 or 12 digit code: that subtree
    sensor: str | None = None
    rule: str | None = None
    starts_ts_ms: int | None = None  # None: now
    ends_ts_ms: int
    author: str = Field(min_length=1)
    reason: str = Field(min_length=1)

    @model_validator(mode="after")
    def _shape(self) -> SilenceRequest:
        if self.region is None and self.sensor is None and self.rule is None:
            raise ValueError("a silence names a region, a sensor or a rule (or several)")
        if self.region is not None and not _REGION_RE.fullmatch(self.region):
            raise ValueError(f"region {self.region!r} is not a 6, 9 or 12 digit code")
        if self.starts_ts_ms is not None and self.ends_ts_ms <= self.starts_ts_ms:
            raise ValueError("a silence ends after it starts")
        return self


def matches(silence: dict[str, Any], rule: str, subject: str, community: str) -> bool:
    if silence.get("region") and not community.startswith(str(silence["region"])):
        return False
    if silence.get("sensor") and silence["sensor"] != subject:
        return False
    return not (silence.get("rule") and silence["rule"] != rule)


class Silences:
    def __init__(
        self,
        store: Store,
        regions: RegionRegistry | None = None,
        clock: Callable[[], float] = time.time,
        refresh_s: float = 1.0,
    ):
        self.store = store
        self.regions = regions
        self.clock = clock
        self.refresh_s = refresh_s
        self._lock = threading.Lock()
        self._cache: list[dict[str, Any]] = []
        self._loaded_at: float | None = None

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def add(self, request: SilenceRequest | dict[str, Any], actor: str | None = None) -> dict[str, Any]:
        req = request if isinstance(request, SilenceRequest) else SilenceRequest.model_validate(request)
        now = self._now_ms()
        starts = req.starts_ts_ms if req.starts_ts_ms is not None else now
        if req.ends_ts_ms <= max(starts, now):
            raise SilenceError("ends_ts_ms", "a silence must end in the future and after it starts")
        if req.region is not None and self.regions is not None and req.region not in self.regions:
            raise SilenceError("region", f"region {req.region} is not in the region registry")
        silence = {
            "id": "S-" + uuid.uuid4().hex[:10],
            "kind": "maintenance" if starts > now else "silence",
            "region": req.region, "sensor": req.sensor, "rule": req.rule,
            "starts_ts_ms": starts, "ends_ts_ms": req.ends_ts_ms,
            "author": req.author, "reason": req.reason, "created_ts_ms": now,
        }
        self.store.add_silence(silence, actor or req.author)
        self._invalidate()
        return silence

    def cancel(self, silence_id: str, actor: str) -> bool:
        ok = self.store.cancel_silence(silence_id, actor, self._now_ms())
        self._invalidate()
        return ok

    def _invalidate(self) -> None:
        with self._lock:
            self._loaded_at = None

    def _known(self) -> list[dict[str, Any]]:
        """Silences that have not ended by now (active or planned), re-read at most every
        `refresh_s` so ones written by another process are seen."""
        with self._lock:
            t = time.monotonic()
            if self._loaded_at is None or t - self._loaded_at >= self.refresh_s:
                now = self._now_ms()
                self._cache = [s for s in self.store.silences()
                               if s["cancelled_ts_ms"] is None and s["ends_ts_ms"] > now]
                self._loaded_at = t
            return list(self._cache)

    def active(self, now_ms: int | None = None) -> list[dict[str, Any]]:
        now = self._now_ms() if now_ms is None else now_ms
        return [s for s in self._known() if s["starts_ts_ms"] <= now < s["ends_ts_ms"]]

    def matching(self, rule: str, subject: str, community: str, now_ms: int | None = None) -> dict[str, Any] | None:
        """The first silence in force now that covers this warning, or None."""
        for s in self.active(now_ms):
            if matches(s, rule, subject, community):
                return s
        return None
