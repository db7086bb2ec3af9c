"""Acknowledgement: a person on duty takes a warning in hand (who, when, with what comment).

An acknowledged warning stops reminding and escalating. A raise to a higher level clears
the acknowledgement, because the people who took the lower level in hand may not be the
ones who must answer the higher one; the next acknowledgement is then for the new level.
"""

from __future__ import annotations

from typing import Any


class AckError(ValueError):
    """Why an acknowledgement was refused; `code` is stable for the HTTP API."""

    code = "ack_refused"

    def __init__(self, warning_id: str, reason: str):
        super().__init__(f"{warning_id}: {reason}")
        self.warning_id = warning_id


class UnknownWarning(AckError):
    code = "not_found"


class WarningResolved(AckError):
    code = "resolved"


class AlreadyAcknowledged(AckError):
    code = "already_acknowledged"


def check_ack(warning_id: str, w: dict[str, Any] | None, actor: str) -> dict[str, Any]:
    """The warning to acknowledge, or the error that refuses it."""
    if not actor.strip():
        raise AckError(warning_id, "an acknowledgement names who gives it")
    if w is None:
        raise UnknownWarning(warning_id, "no such warning")
    if w["state"] != "open":
        raise WarningResolved(warning_id, "the warning is already resolved")
    if w.get("acknowledged"):
        raise AlreadyAcknowledged(
            warning_id, f"already acknowledged by {w.get('acknowledged_by')} at level {w['level']}"
        )
    return w


def acknowledged(w: dict[str, Any], actor: str, comment: str, now_ms: int) -> dict[str, Any]:
    """The warning row after acknowledgement: timers stop."""
    return {
        **w, "acknowledged": True, "acknowledged_by": actor.strip(), "acknowledged_ts_ms": now_ms,
        "ack_comment": comment, "next_remind_ts_ms": None, "escalate_at_ts_ms": None,
    }


def cleared(w: dict[str, Any]) -> dict[str, Any]:
    """The warning row with its acknowledgement cleared (after a raise)."""
    return {**w, "acknowledged": False, "acknowledged_by": None, "acknowledged_ts_ms": None,
            "ack_comment": None}
