"""Grouping: items held for a short window become one message per recipient.

Every internal notification is held per channel and recipient; when the oldest item of a
recipient's group is `window` old, the timer folds the group into one message listing its
items in order. A community's duty officer thus gets one message for several sensors of the
community, a street's duty officer one for several communities of the street. Recipients
whose groups hold exactly the same items share one row, as they would without grouping.
The fold and the removal of the held items are one transaction, so a restart neither loses
nor repeats a group.
"""

from __future__ import annotations

from typing import Any

from ews.levels import Level
from ews.store import Delivery
from notifiers.dispatch import payload
from notifiers.templates import Renderer


def _level(item: dict[str, Any]) -> int:
    try:
        return int(Level.parse(str(item["warning"].get("level", "none"))))
    except ValueError:
        return 0


def fold(
    held: list[dict[str, Any]], renderer: Renderer, now_ms: int, give_up_ms: int
) -> list[Delivery]:
    """Outbox rows for the due held items (as `Store.held_due` returns them)."""
    by_group: dict[str, list[dict[str, Any]]] = {}
    for h in held:
        by_group.setdefault(h["group_key"], []).append(h)
    # recipients of one channel with the same items share a row
    shared: dict[tuple[str, tuple[int, ...]], list[list[dict[str, Any]]]] = {}
    for rows in by_group.values():
        rows.sort(key=lambda h: h["id"])
        sig = (rows[0]["channel"], tuple(int(h["transition_id"]) for h in rows))
        shared.setdefault(sig, []).append(rows)
    out = []
    for (channel, _), groups in shared.items():
        rows = groups[0]
        recipients = [g[0]["recipient"] for g in groups]
        first_id = min(h["id"] for g in groups for h in g)
        items = [{**h["item"], "transition_id": int(h["transition_id"])} for h in rows]
        drill = bool(rows[0]["item"].get("drill"))
        top = 0
        if len(items) == 1:
            it = items[0]
            body = payload("transition", it["transition"], it["warning"], it["message"], drill)
        else:
            # the message's headline warning is the most severe, the latest among equals
            top = max(range(len(items)), key=lambda i: (_level(items[i]), i))
            body = payload("group", "group", items[top]["warning"],
                           renderer.group([it["message"] for it in items], now_ms, drill=drill),
                           drill, items)
        head = rows[top]
        out.append(Delivery(
            channel, recipients, body, key=f"G{first_id}:{channel}",
            notice=body["notice"], transition_id=int(head["transition_id"]),
            warning_id=str(head["warning_id"]),
            origin_ts_ms=min(int(h["created_ts_ms"]) for h in rows),
            deadline_ts_ms=now_ms + give_up_ms,
        ))
    return out
