"""Warning lifecycle: level changes from the rules engine become open/raise/lower/resolve.

A warning's identity is (rule, subject). The transition type is decided against the stored
state, not the engine's `before`, so a level change repeated after a restart (the engine
rebuilds its state and may report NONE -> ORANGE again) does not open a second warning.
Each transition is committed with its audit row and outbox rows in one SQLite transaction;
the retained per-community state is published afterwards.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ews.levels import Level
from ews.models import LevelChange
from ews.regions import RegionRegistry
from ews.sensors import SensorRegistry
from ews.store import Delivery, Store
from notifiers.publish import community_state, encode, warning_json, warnings_topic
from notifiers.routing import Router
from notifiers.templates import Renderer, TransitionType

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes, bool], None]


@dataclass(frozen=True, slots=True)
class Transition:
    type: TransitionType
    warning: dict[str, Any]  # the stored row after the transition
    transition_id: int
    level_before: Level
    level_after: Level
    channels: tuple[str, ...]  # outbox rows written with it


def transition_type(current: Level, after: Level) -> TransitionType | None:
    """Type of moving an existing warning (NONE: there is none) to `after`; None: no change."""
    if current == Level.NONE:
        return "open" if after > Level.NONE else None
    if after == Level.NONE:
        return "resolve"
    if after > current:
        return "raise"
    if after < current:
        return "lower"
    return None


class WarningService:
    def __init__(
        self,
        store: Store,
        regions: RegionRegistry,
        sensors: SensorRegistry | None,
        router: Router,
        renderer: Renderer,
        publish: Publish | None,
        channels: list[str],
        *,
        topic_prefix: str = "ews-out/warnings",
        on_commit: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.store = store
        self.regions = regions
        self.sensors = sensors
        self.router = router
        self.renderer = renderer
        self.publish = publish
        self.channels = list(channels)
        self.topic_prefix = topic_prefix
        self.on_commit = on_commit  # e.g. OutboxWorker.wake, so deliveries start at once
        self.clock = clock
        self._lock = threading.Lock()
        self._open: dict[tuple[str, str], dict[str, Any]] = {
            (w["rule"], w["subject"]): w for w in store.open_warnings()
        }

    def open_warnings(self, community: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(w) for w in self._open.values()
                    if community is None or w["community"] == community]

    def apply(self, changes: Iterable[LevelChange]) -> list[Transition]:
        out: list[Transition] = []
        with self._lock:
            for change in changes:
                try:
                    t = self._apply_one(change)
                except Exception:
                    # one bad change must not stop the others; it is logged with its identity
                    log.exception("could not apply level change %s/%s", change.rule_id, change.subject)
                    continue
                if t is not None:
                    out.append(t)
        if out:
            if self.on_commit is not None:
                self.on_commit()
            self.publish_state({t.warning["community"] for t in out})
        return out

    def publish_state(self, communities: Iterable[str]) -> None:
        """Publish the retained open-warning list of each community (also at start-up)."""
        if self.publish is None:
            return
        now_ms = int(self.clock() * 1000)
        for community in sorted(communities):
            ws = self.open_warnings(community)
            body = encode(community_state(community, ws, self.regions, self.sensors, now_ms))
            try:
                self.publish(warnings_topic(self.topic_prefix, community), body, True)
            except Exception:
                log.exception("could not publish warning state of community %s", community)

    def _region_path(self, community: str) -> str:
        if community in self.regions:
            return self.regions.path_names(community)
        return community

    def _apply_one(self, c: LevelChange) -> Transition | None:
        key = (c.rule_id, c.subject)
        current = self._open.get(key)
        before = Level(int(current["level"])) if current is not None else Level.NONE
        after = Level(int(c.after))
        ttype = transition_type(before, after)
        if ttype is None:
            if current is None:
                log.debug("level change %s/%s to NONE with no open warning", *key)
            return None
        now_ms = int(self.clock() * 1000)
        if current is None:
            w: dict[str, Any] = {
                "id": self.store.new_warning_id(c.rule_id, c.subject, c.event_ts_ms),
                "rule": c.rule_id, "rule_name": c.rule_name, "subject": c.subject,
                "kind": c.kind, "community": c.community, "street": c.community[:9],
                "district": c.community[:6], "peak_level": int(after), "state": "open",
                "opened_event_ts_ms": c.event_ts_ms, "opened_ts_ms": now_ms,
                "resolved_event_ts_ms": None, "resolved_ts_ms": None,
                "acknowledged": False, "acknowledged_by": None, "acknowledged_ts_ms": None,
            }
        else:
            w = dict(current)
        # a resolved warning keeps the level it had, for its message and the record
        shown = before if ttype == "resolve" else after
        w.update({
            "level": int(shown), "measure": c.measure, "value": float(c.value), "unit": c.unit,
            "threshold": c.threshold, "updated_event_ts_ms": c.event_ts_ms,
            "updated_ts_ms": now_ms, "rule_version": c.rule_version, "drill": bool(c.drill),
            "peak_level": max(int(w["peak_level"]), int(after)),
        })
        if ttype == "resolve":
            w.update({"state": "resolved", "resolved_event_ts_ms": c.event_ts_ms,
                      "resolved_ts_ms": now_ms})
        w["message"] = self.renderer.render(
            ttype, region=self._region_path(c.community), kind=c.kind, measure=c.measure,
            unit=c.unit, value=c.value, level=shown, event_ts_ms=c.event_ts_ms, drill=c.drill,
            threshold=c.threshold,
        )
        deliveries: list[Delivery] = []
        if self.router.notifies(ttype):
            # whoever heard of the higher level also hears it was lowered or lifted
            plan = self.router.plan(c.community, max(before, after), self.channels)
            published = warning_json(w, self.regions, self.sensors)
            for channel, recipients in plan.items():
                deliveries.append(Delivery(
                    channel, [r.as_dict() for r in recipients],
                    {"transition": ttype, "warning": published, "message": w["message"]},
                ))
        tid = self.store.commit_transition(
            w,
            {
                "type": ttype, "level_before": int(before), "level_after": int(after),
                "value": float(c.value), "measure": c.measure, "event_ts_ms": c.event_ts_ms,
                "processed_ts_ms": now_ms, "rule_version": c.rule_version,
                "readings": [[int(t), float(v)] for t, v in c.readings],
            },
            deliveries,
        )
        if ttype == "resolve":
            self._open.pop(key, None)
        else:
            self._open[key] = w
        return Transition(ttype, dict(w), tid, before, after, tuple(d.channel for d in deliveries))
