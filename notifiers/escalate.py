"""Reminders and escalation of warnings nobody has acknowledged (wall-clock timers).

While a notified warning is unacknowledged, its recipients are reminded every `remind_s` of
its level, and every `escalate_s` it escalates one tier up the region tree (community ->
street -> district): the policy's escalation roles at the next node are added to everyone
who hears of the warning from then on. Timers start when people are first told and restart
on a raise (which also clears an acknowledgement); acknowledging or resolving stops them.
Timers are wall-clock because they measure how long people have not answered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ews.config import LevelName, LevelTimers, NotifierConfig, default_timers
from ews.levels import HAZARD_LEVELS, Level
from notifiers.routing import TIERS, Router


@dataclass(frozen=True)
class Timers:
    remind_ms: dict[Level, int | None]
    escalate_ms: dict[Level, int | None]

    @classmethod
    def from_config(cls, cfg: NotifierConfig) -> Timers:
        merged: dict[LevelName, LevelTimers] = {**default_timers(), **cfg.timers}
        remind: dict[Level, int | None] = {}
        escalate: dict[Level, int | None] = {}
        for lv in HAZARD_LEVELS:
            t = merged[lv.key]  # type: ignore[index]
            remind[lv] = None if t.remind_s is None else round(t.remind_s * 1000)
            escalate[lv] = None if t.escalate_s is None else round(t.escalate_s * 1000)
        return cls(remind, escalate)

    @classmethod
    def off(cls) -> Timers:
        return cls({lv: None for lv in HAZARD_LEVELS}, {lv: None for lv in HAZARD_LEVELS})

    def started(self, w: dict[str, Any], now_ms: int) -> dict[str, Any]:
        """The warning with its timers set from now for its level (none when acknowledged)."""
        lv = Level(int(w["level"]))
        if w.get("acknowledged") or lv == Level.NONE:
            return {**w, "next_remind_ts_ms": None, "escalate_at_ts_ms": None}
        r, e = self.remind_ms.get(lv), self.escalate_ms.get(lv)
        return {**w, "next_remind_ts_ms": None if r is None else now_ms + r,
                "escalate_at_ts_ms": None if e is None else now_ms + e}

    def after_reminder(self, w: dict[str, Any], now_ms: int) -> int | None:
        r = self.remind_ms.get(Level(int(w["level"])))
        return None if r is None else now_ms + r

    def after_escalation(self, w: dict[str, Any], now_ms: int) -> int | None:
        e = self.escalate_ms.get(Level(int(w["level"])))
        return None if e is None else now_ms + e


def due(w: dict[str, Any], column: str, now_ms: int) -> bool:
    at = w.get(column)
    return (at is not None and int(at) <= now_ms and w["state"] == "open"
            and not w.get("acknowledged") and int(w.get("notified_level") or 0) > 0)


def reached_tier(router: Router, w: dict[str, Any]) -> int:
    """Highest tier (index in TIERS) that hears of the warning: the policy's for its level
    or the one it escalated to."""
    level = Level(max(int(w["level"]), int(w.get("notified_level") or 0)))
    return max(router.top_tier(w["community"], level, bool(w["drill"])), int(w.get("escalated_tier", -1)))


def next_tier(router: Router, w: dict[str, Any]) -> int | None:
    """The tier an escalation goes to now, or None at the top of the tree."""
    t = reached_tier(router, w) + 1
    return t if t < len(TIERS) else None
