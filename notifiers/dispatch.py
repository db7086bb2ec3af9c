"""From "tell these people this" to outbox rows, or to items held for grouping.

Public recipients (sirens, displays, feeds) always get their own row at once: a feed wants
one message per warning, and a siren must not wait. Internal recipients get one row per
channel with everyone on it, or, with a grouping window, one held item per channel and
recipient that the grouping timer later folds into one message per recipient.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ews.store import Delivery, Held
from notifiers.routing import Recipient


def group_key(channel: str, recipient_id: str, drill: bool) -> str:
    # drill and real items never share a message
    return f"{channel}|{recipient_id}|{'drill' if drill else 'real'}"


def payload(
    notice: str, transition: str, warning: dict[str, Any], message: str, drill: bool,
    items: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "notice": notice, "transition": transition, "warning": warning, "message": message,
        "drill": drill,
    }
    if items is not None:
        out["items"] = items
    return out


@dataclass(frozen=True)
class Dispatcher:
    channels: tuple[str, ...]  # configured channel names, in configuration order
    group_window_ms: int = 0
    give_up_ms: int = 3_600_000

    def by_channel(self, recipients: list[Recipient]) -> dict[str, list[Recipient]]:
        out: dict[str, list[Recipient]] = {c: [] for c in self.channels}
        for r in recipients:
            for c in r.channels:
                if c in out:
                    out[c].append(r)
        return {c: rs for c, rs in out.items() if rs}

    def direct(
        self, recipients: list[Recipient], body: dict[str, Any], now_ms: int, *,
        key_base: str | None = None, notice: str = "transition",
        transition_id: int | None = None, warning_id: str | None = None,
        exclude_channel: str | None = None,
    ) -> list[Delivery]:
        """One row per channel with every recipient on it. Without `key_base` the key is
        "{transition id}:{channel}" of the transition written with the rows."""
        return [
            Delivery(
                channel, [r.as_dict() for r in rs], body,
                key=None if key_base is None else f"{key_base}:{channel}",
                notice=notice, transition_id=transition_id, warning_id=warning_id,
                origin_ts_ms=now_ms, deadline_ts_ms=now_ms + self.give_up_ms,
            )
            for channel, rs in self.by_channel(recipients).items()
            if channel != exclude_channel
        ]

    def transition_rows(
        self, recipients: list[Recipient], body: dict[str, Any], now_ms: int, *,
        key_base: str | None = None, transition_id: int | None = None,
        warning_id: str | None = None,
    ) -> tuple[list[Delivery], list[Held]]:
        """Rows for a transition (or a late notice of one): public at once; internal at once
        or held for the grouping window."""
        if self.group_window_ms <= 0:
            return self.direct(recipients, body, now_ms, key_base=key_base,
                               transition_id=transition_id, warning_id=warning_id), []
        public = [r for r in recipients if r.audience == "public"]
        internal = [r for r in recipients if r.audience != "public"]
        rows = self.direct(public, body, now_ms, key_base=key_base,
                           transition_id=transition_id, warning_id=warning_id)
        held = [
            Held(group_key(channel, r.id, bool(body.get("drill"))), channel, r.as_dict(),
                 {k: body[k] for k in ("transition", "warning", "message", "drill")},
                 transition_id=transition_id, warning_id=warning_id)
            for channel, rs in self.by_channel(internal).items() for r in rs
        ]
        return rows, held
