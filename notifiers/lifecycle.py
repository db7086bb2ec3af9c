"""Warning lifecycle: level changes become open/raise/lower/resolve; people acknowledge.

A warning's identity is (rule, subject). The transition type is decided against the stored
state, not the engine's `before`, so a level change repeated after a restart (the engine
rebuilds its state and may report NONE -> ORANGE again) does not open a second warning.
Each step is committed with its audit rows and outbox rows (or held items) in one SQLite
transaction; the retained per-community state is published afterwards.

What reaches people is decided here, per transition: the routing policy and duty roster
say who; silences, inhibition and the drill audience may narrow it; the grouping window may
hold it. A timer (`tick`) then does what time alone decides: it ends quiet periods, folds
held groups, reminds, escalates, and tells people of warnings whose silence or inhibitor
has gone. `notified_level` on a warning is the highest level people were told of, so a
lowered or lifted warning reaches everyone who heard of it, and nobody who did not.

Quiet period: a resolve is held for `quiet_s` of event time, measured by the newest event
time the pipeline has seen (`advance`), or of wall time when readings stop coming, whichever
ends first. A re-raise within it cancels the resolve; the warning never left its level.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ews import metrics
from ews.config import NotifierConfig
from ews.levels import Level
from ews.models import LevelChange
from ews.regions import RegionRegistry
from ews.sensors import SensorRegistry
from ews.store import AuditEntry, Delivery, Held, Store
from notifiers import ack
from notifiers.dispatch import Dispatcher, payload
from notifiers.escalate import Timers, due, next_tier, reached_tier
from notifiers.group import fold
from notifiers.inhibit import inhibitor
from notifiers.publish import community_state, encode, warning_json, warnings_topic
from notifiers.routing import TIERS, Recipient, Router
from notifiers.silence import Silences
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
    channels: tuple[str, ...]  # outbox rows written with it (held items not counted)


@dataclass(frozen=True)
class Settings:
    quiet_ms: int = 0
    group_window_ms: int = 0
    give_up_ms: int = 3_600_000
    timers: Timers = field(default_factory=Timers.off)

    @classmethod
    def from_config(cls, cfg: NotifierConfig) -> Settings:
        return cls(round(cfg.quiet_s * 1000), round(cfg.group_window_s * 1000),
                   round(cfg.give_up_s * 1000), Timers.from_config(cfg))


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


def _change_fields(c: LevelChange) -> dict[str, Any]:
    return {
        "value": float(c.value), "measure": c.measure, "unit": c.unit, "threshold": c.threshold,
        "event_ts_ms": int(c.event_ts_ms), "rule_version": c.rule_version,
        "readings": [[int(t), float(v)] for t, v in c.readings],
        "predicted_ts_ms": c.predicted_ts_ms, "lead_s": c.lead_s,
    }


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
        settings: Settings | None = None,
        silences: Silences | None = None,
    ):
        self.store = store
        self.regions = regions
        self.sensors = sensors
        self.router = router
        self.renderer = renderer
        self.publish = publish
        self.channels = list(channels)
        self.topic_prefix = topic_prefix
        self.on_commit = on_commit  # e.g. the outbox workers' wake, so deliveries start at once
        self.clock = clock
        self.settings = settings if settings is not None else Settings()
        self.silences = silences
        self.dispatch = Dispatcher(tuple(self.channels), self.settings.group_window_ms,
                                   self.settings.give_up_ms)
        self._lock = threading.RLock()
        self._open: dict[tuple[str, str], dict[str, Any]] = {
            (w["rule"], w["subject"]): w for w in store.open_warnings()
        }
        self._watermark_ms = max((int(w["updated_event_ts_ms"]) for w in self._open.values()), default=0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # told of transitions the timer makes (resolves after a quiet period); those from
        # `apply` are returned to its caller instead
        self.timer_listeners: list[Callable[[Transition], None]] = []

    # -- queries -------------------------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def open_warnings(self, community: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(w) for w in self._open.values()
                    if community is None or w["community"] == community]

    def warning(self, warning_id: str) -> dict[str, Any] | None:
        """A warning as the contract's JSON object (None: unknown id)."""
        w = self._find_open(warning_id) or self.store.warning(warning_id)
        return None if w is None else warning_json(w, self.regions, self.sensors)

    def _find_open(self, warning_id: str) -> dict[str, Any] | None:
        with self._lock:
            for w in self._open.values():
                if w["id"] == warning_id:
                    return w
        return None

    # -- inputs --------------------------------------------------------------------------

    def advance(self, event_ts_ms: int) -> None:
        """The newest event time seen in the readings (ends quiet periods on event time)."""
        if event_ts_ms > self._watermark_ms:
            self._watermark_ms = int(event_ts_ms)

    def apply(self, changes: Iterable[LevelChange]) -> list[Transition]:
        out: list[Transition] = []
        touched: set[str] = set()
        rows = False
        with self._lock:
            for change in changes:
                if change.event_ts_ms > self._watermark_ms:
                    self._watermark_ms = int(change.event_ts_ms)
                try:
                    t, wrote = self._apply_one(change, touched)
                except Exception:
                    # one bad change must not stop the others; it is logged with its identity
                    metrics.PIPELINE_ERRORS.labels("warnings").inc()
                    log.exception("could not apply level change %s/%s", change.rule_id, change.subject)
                    continue
                rows = rows or wrote
                if t is not None:
                    out.append(t)
        self._after(touched, rows)
        return out

    def acknowledge(self, warning_id: str, actor: str, comment: str = "") -> dict[str, Any]:
        """Acknowledge an open warning; returns it as the contract's JSON object. Raises
        notifiers.ack.UnknownWarning, WarningResolved or AlreadyAcknowledged (AckError)."""
        with self._lock:
            current = self._find_open(warning_id)
            if current is None:
                current = self.store.warning(warning_id)
            w = ack.check_ack(warning_id, current, actor)
            now = self._now_ms()
            w = ack.acknowledged(w, actor, comment, now)
            detail = {
                "comment": comment, "level": int(w["level"]),
                "since_issued_ms": now - int(w["opened_ts_ms"]),
                "since_update_ms": now - int(w["updated_ts_ms"]),
                "escalated_tier": int(w.get("escalated_tier", -1)), "reminders": int(w.get("reminders", 0)),
            }
            self.store.commit(now, warning=w, audits=[
                AuditEntry(actor.strip(), "warning.acknowledge", w["id"], detail)])
            self._open[(w["rule"], w["subject"])] = w
            metrics.ACKNOWLEDGED.inc()
        self._after({w["community"]}, False)
        return warning_json(w, self.regions, self.sensors)

    # -- the timer -----------------------------------------------------------------------

    def start(self, interval_s: float = 0.25) -> None:
        if self._thread is not None:
            return
        self._stop.clear()

        def loop() -> None:
            while not self._stop.wait(interval_s):
                try:
                    self.tick()
                except Exception:
                    metrics.PIPELINE_ERRORS.labels("warnings-timer").inc()
                    log.exception("warning timer pass failed")

        self._thread = threading.Thread(target=loop, name="ews-warning-timer", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def tick(self) -> int:
        """Do what time decides: quiet periods, held groups, late notices, reminders,
        escalations. Returns how many steps were taken."""
        touched: set[str] = set()
        made: list[Transition] = []
        steps = 0
        with self._lock:
            now = self._now_ms()
            for w in list(self._open.values()):
                try:
                    steps += self._tick_one(w, now, touched, made)
                except Exception:
                    metrics.PIPELINE_ERRORS.labels("warnings-timer").inc()
                    log.exception("timer step for warning %s failed", w["id"])
            groups = self._flush_groups(now)
        self._after(touched, steps > 0 or groups > 0)
        for t in made:  # outside the lock: a listener may take its time
            for listener in self.timer_listeners:
                try:
                    listener(t)
                except Exception:
                    log.exception("transition listener failed")
        return steps + groups

    def _tick_one(self, w: dict[str, Any], now: int, touched: set[str], made: list[Transition]) -> int:
        p = w.get("pending_resolve")
        if p is not None:
            quiet = self.settings.quiet_ms
            if self._watermark_ms >= int(p["event_ts_ms"]) + quiet or now >= int(p["ts_ms"]) + quiet:
                made.append(self._transition(w, {**p, "drill": w["drill"]}, "resolve", Level(int(w["level"])),
                                             Level.NONE, now, {"quiet_ms": quiet, "held_since_ts_ms": p["ts_ms"]}))
                touched.add(w["community"])
                return 1
            return 0
        if self._late_notice(w, now):
            return 1
        if due(w, "escalate_at_ts_ms", now) and self._suppressed(w, now) is None:
            self._escalate(w, now)
            touched.add(w["community"])  # the published state says how far it went
            return 1
        if due(w, "next_remind_ts_ms", now) and self._suppressed(w, now) is None:
            self._remind(w, now)
            return 1
        return 0

    # -- one level change ----------------------------------------------------------------

    def _region_path(self, community: str) -> str:
        if community in self.regions:
            return self.regions.path_names(community)
        return community

    def _apply_one(self, c: LevelChange, touched: set[str]) -> tuple[Transition | None, bool]:
        key = (c.rule_id, c.subject)
        current = self._open.get(key)
        before = Level(int(current["level"])) if current is not None else Level.NONE
        after = Level(int(c.after))
        now = self._now_ms()
        fields = {**_change_fields(c), "drill": bool(c.drill)}
        cancelled: dict[str, Any] | None = None
        if current is not None and current.get("pending_resolve") is not None:
            if after == Level.NONE:
                return None, False  # already on its way out; the first resolve's time counts
            held_since = current["pending_resolve"]["ts_ms"]
            current = {**current, "pending_resolve": None}
            cancelled = {"resolve_cancelled": True, "held_since_ts_ms": held_since}
            if transition_type(before, after) is None:
                # back at its level within the quiet period: the warning simply stays
                self.store.commit(now, warning=current, audits=[AuditEntry(
                    "rules", "warning.resolve_cancelled", current["id"],
                    {"level": int(after), "value": float(c.value), "held_since_ts_ms": held_since},
                    int(c.event_ts_ms))])
                self._open[key] = current
                touched.add(current["community"])
                return None, False
        elif current is not None and after == Level.NONE and self.settings.quiet_ms > 0:
            w = {**current, "pending_resolve": {**fields, "ts_ms": now}}
            self.store.commit(now, warning=w, audits=[AuditEntry(
                "rules", "warning.resolve_pending", w["id"],
                {"level": int(before), "value": float(c.value), "quiet_ms": self.settings.quiet_ms},
                int(c.event_ts_ms))])
            self._open[key] = w
            touched.add(w["community"])
            return None, False
        ttype = transition_type(before, after)
        if ttype is None:
            if current is None:
                log.debug("level change %s/%s to NONE with no open warning", *key)
            return None, False
        if current is None:
            current = {
                "id": self.store.new_warning_id(c.rule_id, c.subject, c.event_ts_ms),
                "rule": c.rule_id, "rule_name": c.rule_name, "subject": c.subject,
                "kind": c.kind, "community": c.community, "street": c.community[:9],
                "district": c.community[:6], "peak_level": int(after), "state": "open",
                "opened_event_ts_ms": c.event_ts_ms, "opened_ts_ms": now,
                "resolved_event_ts_ms": None, "resolved_ts_ms": None,
                "acknowledged": False, "acknowledged_by": None, "acknowledged_ts_ms": None,
            }
        t = self._transition(current, fields, ttype, before, after, now, cancelled)
        touched.add(t.warning["community"])
        return t, bool(t.channels)

    def _transition(
        self, current: dict[str, Any], f: dict[str, Any], ttype: TransitionType, before: Level,
        after: Level, now: int, extra_audit: dict[str, Any] | None = None,
    ) -> Transition:
        key = (current["rule"], current["subject"])
        w = dict(current)
        # a resolved warning keeps the level it had, for its message and the record
        shown = before if ttype == "resolve" else after
        w.update({
            "level": int(shown), "measure": f["measure"], "value": float(f["value"]),
            "unit": f["unit"], "threshold": f["threshold"], "updated_event_ts_ms": int(f["event_ts_ms"]),
            "updated_ts_ms": now, "rule_version": f["rule_version"], "drill": bool(f["drill"]),
            "peak_level": max(int(w["peak_level"]), int(after)), "pending_resolve": None,
        })
        if ttype == "raise":
            w = ack.cleared(w)
        if ttype == "resolve":
            w.update({"state": "resolved", "resolved_event_ts_ms": int(f["event_ts_ms"]),
                      "resolved_ts_ms": now, "next_remind_ts_ms": None, "escalate_at_ts_ms": None})
        w["message"] = self.renderer.render(
            ttype, region=self._region_path(w["community"]), kind=w["kind"], measure=f["measure"],
            unit=f["unit"], value=f["value"], level=shown, event_ts_ms=int(f["event_ts_ms"]),
            drill=bool(f["drill"]), threshold=f["threshold"],
            predicted_ts_ms=f.get("predicted_ts_ms"), lead_s=f.get("lead_s"),
        )
        audit: dict[str, Any] = dict(extra_audit or {})
        deliveries: list[Delivery] = []
        held: list[Held] = []
        # whoever heard of the highest level also hears it was lowered or lifted
        notify_at = after if ttype in ("open", "raise") else Level(int(w.get("notified_level") or 0))
        suppressed = self._suppressed(w, now)
        if not self.router.notifies(ttype):
            audit["not_notified"] = "policy"
        elif notify_at == Level.NONE:
            audit["not_notified"] = "never notified"
        elif suppressed is not None:
            audit["suppressed"] = suppressed
            metrics.SUPPRESSED.labels(suppressed["by"]).inc()
            if ttype in ("open", "raise"):
                w.update({"next_remind_ts_ms": None, "escalate_at_ts_ms": None})
        else:
            recipients = self._audience(w, notify_at, now)
            body = payload("transition", ttype, warning_json(w, self.regions, self.sensors),
                           w["message"], bool(w["drill"]))
            deliveries, held = self.dispatch.transition_rows(recipients, body, now)
            audit["recipients"] = [r.id for r in recipients]
            if ttype in ("open", "raise"):
                w["notified_level"] = max(int(w.get("notified_level") or 0), int(after))
                w = self.settings.timers.started(w, now)
        tid = self.store.commit(
            now, warning=w,
            transition={
                "type": ttype, "level_before": int(before), "level_after": int(after),
                "value": float(f["value"]), "measure": f["measure"], "event_ts_ms": int(f["event_ts_ms"]),
                "processed_ts_ms": now, "rule_version": f["rule_version"], "readings": f["readings"],
                "audit": audit,
            },
            deliveries=deliveries, held=held,
        )
        assert tid is not None
        if ttype == "resolve":
            self._open.pop(key, None)
        else:
            self._open[key] = w
        return Transition(ttype, dict(w), tid, before, after, tuple(d.channel for d in deliveries))

    # -- who is told ---------------------------------------------------------------------

    def _suppressed(self, w: dict[str, Any], now: int) -> dict[str, Any] | None:
        """Why notifications of `w` are held back now (a silence or an inhibitor), or None."""
        if self.silences is not None:
            s = self.silences.matching(w["rule"], w["subject"], w["community"], now)
            if s is not None:
                return {"by": "silence", "id": s["id"], "kind": s["kind"], "reason": s["reason"]}
        o = inhibitor(w, self._open.values())
        if o is not None:
            return {"by": "inhibited", "id": o["id"], "rule": o["rule"], "kind": o["kind"],
                    "level": Level(int(o["level"])).key}
        return None

    def _escalated(self, w: dict[str, Any], level: Level, now: int) -> list[Recipient]:
        """Those added by escalation above what the policy reaches at `level`."""
        base = self.router.top_tier(w["community"], level, bool(w["drill"]))
        out: list[Recipient] = []
        for tier in range(base + 1, int(w.get("escalated_tier", -1)) + 1):
            out += self.router.escalation_recipients(w["community"], tier, drill=bool(w["drill"]), at_ms=now)
        return out

    def _audience(self, w: dict[str, Any], level: Level, now: int) -> list[Recipient]:
        recipients = self.router.recipients(w["community"], level, drill=bool(w["drill"]), at_ms=now)
        seen = {r.id for r in recipients}
        return recipients + [r for r in self._escalated(w, level, now) if r.id not in seen]

    def _internal(self, w: dict[str, Any], now: int) -> list[Recipient]:
        level = Level(max(int(w["level"]), 1))
        return [r for r in self._audience(w, level, now) if r.audience == "internal"]

    def _late_notice(self, w: dict[str, Any], now: int) -> bool:
        """Tell people of an open warning above what they were told, once nothing holds it
        back any more (a silence ended, an inhibitor went)."""
        level = Level(int(w["level"]))
        told = int(w.get("notified_level") or 0)
        ttype: TransitionType = "open" if told == 0 else "raise"
        if level <= told or not self.router.notifies(ttype):
            return False
        if self._suppressed(w, now) is not None:
            return False
        tid = self.store.last_transition_id(w["id"])
        if tid is None:
            return False
        recipients = self._audience(w, level, now)
        body = payload("transition", ttype, warning_json(w, self.regions, self.sensors),
                       w["message"], bool(w["drill"]))
        deliveries, held = self.dispatch.transition_rows(
            recipients, body, now, key_base=f"{w['id']}:late{int(level)}", transition_id=tid,
            warning_id=w["id"])
        w2 = self.settings.timers.started({**w, "notified_level": int(level)}, now)
        self.store.commit(now, warning=w2, deliveries=deliveries, held=held, audits=[AuditEntry(
            "timer", "notify.late", w["id"],
            {"level": int(level), "transition": ttype, "recipients": [r.id for r in recipients]},
            int(w["updated_event_ts_ms"]))])
        self._open[(w["rule"], w["subject"])] = w2
        return True

    def _remind(self, w: dict[str, Any], now: int) -> None:
        n = int(w.get("reminders") or 0) + 1
        recipients = self._internal(w, now)
        if not recipients:
            # only the public hears of it (or nobody): there is no one to remind
            self._open[(w["rule"], w["subject"])] = {**w, "next_remind_ts_ms": None}
            self.store.commit(now, warning=self._open[(w["rule"], w["subject"])])
            return
        since = int(w["updated_ts_ms"])
        text = self.renderer.notice("remind", message=w["message"], count=n,
                                    minutes=max(1, round((now - since) / 60_000)), drill=bool(w["drill"]))
        body = payload("remind", "remind", warning_json(w, self.regions, self.sensors), text, bool(w["drill"]))
        tid = self.store.last_transition_id(w["id"])
        deliveries = self.dispatch.direct(recipients, body, now, key_base=f"{w['id']}:remind{n}",
                                          notice="remind", transition_id=tid, warning_id=w["id"])
        w2 = {**w, "reminders": n, "next_remind_ts_ms": self.settings.timers.after_reminder(w, now)}
        self.store.commit(now, warning=w2, deliveries=deliveries, audits=[AuditEntry(
            "timer", "warning.remind", w["id"],
            {"count": n, "level": int(w["level"]), "recipients": [r.id for r in recipients]},
            int(w["updated_event_ts_ms"]))])
        self._open[(w["rule"], w["subject"])] = w2
        metrics.REMINDERS.inc()

    def _escalate(self, w: dict[str, Any], now: int) -> None:
        tier = next_tier(self.router, w)
        recipients: list[Recipient] = []
        while tier is not None:
            recipients = self.router.escalation_recipients(w["community"], tier, drill=bool(w["drill"]), at_ms=now)
            if recipients:
                break
            # nobody holds the role at that node: go on up rather than stop
            tier = tier + 1 if tier + 1 < len(TIERS) else None
        key = (w["rule"], w["subject"])
        if tier is None:
            w2 = {**w, "escalate_at_ts_ms": None}
            self.store.commit(now, warning=w2, audits=[AuditEntry(
                "timer", "warning.escalation_exhausted", w["id"],
                {"reached_tier": TIERS[reached_tier(self.router, w)] if reached_tier(self.router, w) >= 0 else None},
                int(w["updated_event_ts_ms"]))])
            self._open[key] = w2
            return
        n = int(w.get("escalations") or 0) + 1
        node = self.regions.at_tier(w["community"], TIERS[tier])
        minutes = max(1, round((now - int(w["updated_ts_ms"])) / 60_000))
        text = self.renderer.notice(
            "escalate", message=w["message"], minutes=minutes, tier=self.renderer.tier_name(TIERS[tier]),
            node=node.name if node is not None else TIERS[tier], drill=bool(w["drill"]))
        w2 = {**w, "escalations": n, "escalated_tier": tier,
              "escalate_at_ts_ms": self.settings.timers.after_escalation(w, now)}
        body = payload("escalate", "escalate", warning_json(w2, self.regions, self.sensors), text,
                       bool(w["drill"]))
        tid = self.store.last_transition_id(w["id"])
        deliveries = self.dispatch.direct(recipients, body, now, key_base=f"{w['id']}:escalate{n}",
                                          notice="escalate", transition_id=tid, warning_id=w["id"])
        self.store.commit(now, warning=w2, deliveries=deliveries, audits=[AuditEntry(
            "timer", "warning.escalate", w["id"],
            {"count": n, "tier": TIERS[tier], "node": node.code if node is not None else None,
             "level": int(w["level"]), "recipients": [r.id for r in recipients]},
            int(w["updated_event_ts_ms"]))])
        self._open[key] = w2
        metrics.ESCALATIONS.labels(TIERS[tier]).inc()

    def _flush_groups(self, now: int) -> int:
        window = self.settings.group_window_ms
        oldest = self.store.next_held_ms()
        if oldest is None or oldest + window > now:
            return 0
        held = self.store.held_due(now - window)
        rows = fold(held, self.renderer, now, self.settings.give_up_ms)
        audits = [AuditEntry("timer", "notify.group", d.warning_id, {
            "key": d.key, "channel": d.channel, "recipients": [r["id"] for r in d.recipients],
            "items": [it["transition_id"] for it in d.payload.get("items", [])] or [d.transition_id],
        }) for d in rows]
        self.store.commit(now, deliveries=rows, drop_held=[h["id"] for h in held], audits=audits)
        return len(rows)

    # -- delivery given up ---------------------------------------------------------------

    def failure_notices(self, row: dict[str, Any], error: str) -> list[Delivery]:
        """The notice that a message was given up, to the duty officers the policy names,
        on every other channel they have. Called by the outbox workers."""
        if row.get("notice") == "delivery_failed":
            log.critical("a delivery-failure notice could not be delivered either: %s", row["idempotency_key"])
            return []
        now = self._now_ms()
        body_in = row.get("payload") or {}
        warning = body_in.get("warning") or {}
        community = ((warning.get("region") or {}).get("community") or {}).get("code")
        if community is None:
            stored = self.store.warning(str(row["warning_id"]))
            community = stored["community"] if stored else None
        if community is None:
            log.critical("delivery of %s given up and no district to tell", row["idempotency_key"])
            return []
        recipients = self.router.failure_recipients(community, now)
        drill = bool(body_in.get("drill", warning.get("drill", False)))
        names = "、".join(r.get("name", r.get("id", "?")) for r in row.get("recipients", [])) or "-"
        text = self.renderer.notice(
            "delivery_failed", message=str(body_in.get("message", "")).split("\n")[0],
            channel=row["channel"], recipients=names, attempts=int(row["attempts"]) + 1,
            error=error[:160], time=self.renderer.time(now), drill=drill)
        body = payload("delivery_failed", "delivery_failed", warning, text, drill)
        body["failed"] = {"idempotency_key": row["idempotency_key"], "channel": row["channel"],
                          "error": error[:500], "recipients": [r.get("id") for r in row.get("recipients", [])]}
        out = self.dispatch.direct(recipients, body, now, key_base=f"F{row['id']}",
                                   notice="delivery_failed", transition_id=int(row["transition_id"]),
                                   warning_id=str(row["warning_id"]), exclude_channel=str(row["channel"]))
        if not out:
            log.critical("delivery of %s on %s given up and nobody else to tell: %s",
                         row["idempotency_key"], row["channel"], error)
        return out

    # -- after each step -----------------------------------------------------------------

    def _after(self, touched: set[str], rows: bool) -> None:
        if rows and self.on_commit is not None:
            self.on_commit()
        if touched:
            self.publish_state(touched)

    def publish_state(self, communities: Iterable[str]) -> None:
        """Publish the retained open-warning list of each community (also at start-up)."""
        if self.publish is None:
            return
        now_ms = self._now_ms()
        for community in sorted(communities):
            ws = self.open_warnings(community)
            body = encode(community_state(community, ws, self.regions, self.sensors, now_ms))
            try:
                self.publish(warnings_topic(self.topic_prefix, community), body, True)
            except Exception:
                log.exception("could not publish warning state of community %s", community)
