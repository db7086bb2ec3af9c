"""Who the configured channels cannot reach, said at start-up rather than found out in a storm.

A contact (in the region registry or the duty roster) lists the channels it is reached on,
and a routing target may name channels of its own (the public audience's feeds). Names that
are not configured channels are passed over when messages go out, which is right for one of
several, but a contact none of whose channels is configured hears of nothing, and nothing
says so: a typo in `channels:`, or a channel taken out of the configuration. The same for a
routing target whose channels are all missing.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

from ews import metrics
from ews.regions import RegionRegistry
from notifiers.roster import Roster
from notifiers.routing import RoutingPolicy, Target

log = logging.getLogger(__name__)


def unreachable(regions: RegionRegistry, roster: Roster | None, policy: RoutingPolicy,
                configured: Collection[str]) -> list[str]:
    """One line per contact or routing target that no configured channel reaches."""
    out: list[str] = []
    have = set(configured)
    places = [(code, c, "region registry") for code, node in regions.nodes.items() for c in node.contacts]
    places += [(code, c, "duty roster") for code, c in (roster.contacts() if roster is not None else [])]
    for code, c, source in places:
        if c.role != "public" and not have.intersection(c.channels):
            out.append(f"{c.id} ({c.name}, {c.role} at {code}, {source}): its channels are {_names(c.channels)}")
    targets: list[tuple[str, Target]] = [(f"levels.{lv}", t) for lv, ts in policy.levels.items() for t in ts]
    targets += [("drill", t) for t in policy.drill] + [("delivery_failed", t) for t in policy.delivery_failed]
    for where, t in targets:
        if t.channels is not None and not have.intersection(t.channels):
            who = "the public" if t.audience == "public" else f"{', '.join(t.roles)} at {t.tier}"
            out.append(f"{who} (routing policy, {where}): its channels are {_names(t.channels)}")
    esc = policy.escalation.channels
    if esc is not None and not have.intersection(esc):
        out.append(f"escalations (routing policy): their channels are {_names(esc)}")
    return out


def say_unreachable(lines: list[str], most: int = 20) -> None:
    """Log them (the first `most`, then how many more) and set the gauge an alert reads."""
    metrics.UNREACHABLE.set(len(lines))
    for line in lines[:most]:
        log.error("no configured channel reaches %s", line)
    if len(lines) > most:
        log.error("... and %d more contacts or routing targets that no configured channel reaches", len(lines) - most)


def _names(channels: Collection[str]) -> str:
    return "[" + ", ".join(channels) + "]" if channels else "no channel"
