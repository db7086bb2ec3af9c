"""Inhibition: which open warning makes another one not worth a notification.

Two cases, both for the same subject (a sensor, or a region for area rules):
- a higher level suppresses lower ones: a gauge at orange on the 3-hour rule need not also
  page people about blue on its 12-hour rule;
- a device fault (a warning of kind "device" whose subject is the sensor) suppresses every
  hazard from that sensor, since its readings cannot be trusted.

Drill and real warnings never inhibit each other. Inhibited warnings are stored, audited and
published as usual; once nothing inhibits them, the lifecycle notifies their current state.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

DEVICE_KIND = "device"


def inhibitor(w: dict[str, Any], open_warnings: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """The open warning that inhibits `w` (a device fault first, else the highest level),
    or None."""
    best: dict[str, Any] | None = None
    for o in open_warnings:
        if o["id"] == w["id"] or o["subject"] != w["subject"] or bool(o["drill"]) != bool(w["drill"]):
            continue
        if o.get("pending_resolve"):
            continue  # on its way out: it no longer speaks for the subject
        if o["kind"] == DEVICE_KIND and w["kind"] != DEVICE_KIND:
            return o
        higher = int(o["level"]) > int(w["level"]) and (best is None or int(o["level"]) > int(best["level"]))
        if higher and o["kind"] != DEVICE_KIND and w["kind"] != DEVICE_KIND:
            best = o
    return best
