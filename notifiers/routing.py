"""Who hears of a warning: a YAML policy mapping level to tiers of the region tree and roles.

Blue stays in the community, each higher level reaches one tier further up, red also goes
to the public (sirens, displays, feeds). Internal and public audiences are kept apart.
Drill warnings (演练) go only to the policy's drill audience, whatever their level. A role at
a node is held by whoever the duty roster has on shift, else by the registry's contacts.
The policy also names who is added when a warning escalates one tier up, and who hears that
a message could not be delivered.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ews.levels import HAZARD_LEVELS, Level
from ews.regions import Contact, RegionNode, RegionRegistry, Role, Tier
from ews.yamlfile import load_model
from notifiers.roster import Roster

log = logging.getLogger(__name__)

DEFAULT_POLICY = Path(__file__).parent / "templates" / "routing.yaml"
TransitionType = Literal["open", "raise", "lower", "resolve"]
ALL_TRANSITIONS: tuple[TransitionType, ...] = ("open", "raise", "lower", "resolve")
LevelKey = Literal["blue", "yellow", "orange", "red"]
TIERS: tuple[Tier, ...] = ("community", "street", "district")  # up the tree


class Target(BaseModel):
    """Contacts with `roles` at `tier` above the community, or the public audience."""

    model_config = ConfigDict(extra="forbid")
    audience: Literal["internal", "public"] = "internal"
    tier: Tier | None = None
    roles: list[Role] = Field(default_factory=list)
    # internal: limit the contacts' own channels to these; public: the channels to use
    channels: list[str] | None = None

    @model_validator(mode="after")
    def _shape(self) -> Target:
        if self.audience == "internal":
            if self.tier is None or not self.roles:
                raise ValueError("an internal target names a tier and at least one role")
        elif not self.channels:
            raise ValueError("a public target names its channels")
        return self


class Escalation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # roles added at the next tier up when nobody acknowledges in time
    roles: list[Role] = Field(default_factory=lambda: ["duty_officer"], min_length=1)  # type: ignore[arg-type]
    channels: list[str] | None = None


def _default_failure_targets() -> list[Target]:
    return [Target(tier="district", roles=["duty_officer"])]


class RoutingPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    levels: dict[LevelKey, list[Target]]
    notify_on: list[TransitionType] = Field(default_factory=lambda: list(ALL_TRANSITIONS))
    # drill warnings reach these targets only, at every level; none listed: nobody
    drill: list[Target] = Field(default_factory=list)
    escalation: Escalation = Field(default_factory=Escalation)
    # who hears that a message was given up (tiers are taken in the warning's district)
    delivery_failed: list[Target] = Field(default_factory=_default_failure_targets)

    @model_validator(mode="after")
    def _all_levels(self) -> RoutingPolicy:
        # a forgotten level would silently reach nobody; an empty list says so on purpose
        missing = [lv.key for lv in HAZARD_LEVELS if lv.key not in self.levels]
        if missing:
            raise ValueError(f"levels must list every level (use [] for none); missing: {missing}")
        return self


def load_policy(path: str | Path | None = None) -> RoutingPolicy:
    return load_model(RoutingPolicy, DEFAULT_POLICY if path is None else path)


@dataclass(frozen=True)
class Recipient:
    id: str
    name: str
    role: str
    tier: str
    region: str  # code of the node the recipient belongs to
    audience: Literal["internal", "public"]
    channels: tuple[str, ...]
    phone: str | None = None
    email: str | None = None
    wecom: str | None = None
    via: Literal["registry", "roster", "policy"] = "registry"  # where the person came from

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d


class Router:
    def __init__(
        self,
        regions: RegionRegistry,
        policy: RoutingPolicy | None = None,
        roster: Roster | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.regions = regions
        self.policy = policy if policy is not None else load_policy()
        self.roster = roster
        self.clock = clock

    def notifies(self, transition: str) -> bool:
        return transition in self.policy.notify_on

    def _at(self, at_ms: int | None) -> int:
        return int(self.clock() * 1000) if at_ms is None else at_ms

    def targets(self, level: Level, drill: bool = False) -> list[Target]:
        if level == Level.NONE:
            return []
        return list(self.policy.drill) if drill else list(self.policy.levels[level.key])  # type: ignore[index]

    def recipients(
        self, community: str, level: Level, *, drill: bool = False, at_ms: int | None = None
    ) -> list[Recipient]:
        """Everyone the policy names for `level` in `community`, each once, in policy order."""
        if level == Level.NONE:
            return []
        if community not in self.regions:
            log.error("community %s is not in the region registry; nobody to notify", community)
            return []
        at = self._at(at_ms)
        out: dict[str, Recipient] = {}
        for target in self.targets(level, drill):
            for r in self._target(community, target, at):
                out.setdefault(r.id, r)
        return list(out.values())

    def plan(
        self, community: str, level: Level, channels: list[str], *, drill: bool = False,
        at_ms: int | None = None,
    ) -> dict[str, list[Recipient]]:
        """Recipients grouped by channel, for the configured `channels` only."""
        return by_channel(self.recipients(community, level, drill=drill, at_ms=at_ms), channels)

    def top_tier(self, community: str, level: Level, drill: bool = False) -> int:
        """Index in TIERS of the highest internal tier the policy reaches (-1: none)."""
        tiers = [TIERS.index(t.tier) for t in self.targets(level, drill)
                 if t.audience == "internal" and t.tier is not None]
        return max(tiers, default=-1)

    def escalation_recipients(
        self, community: str, tier: int, *, drill: bool = False, at_ms: int | None = None
    ) -> list[Recipient]:
        """Who is added when a warning escalates to TIERS[tier]: the escalation roles there,
        or for a drill only the drill audience's roles at that tier."""
        if community not in self.regions or not 0 <= tier < len(TIERS):
            return []
        at = self._at(at_ms)
        if drill:
            targets = [t for t in self.policy.drill if t.audience == "internal" and t.tier == TIERS[tier]]
        else:
            esc = self.policy.escalation
            targets = [Target(tier=TIERS[tier], roles=esc.roles, channels=esc.channels)]
        out: dict[str, Recipient] = {}
        for target in targets:
            for r in self._target(community, target, at):
                out.setdefault(r.id, r)
        return list(out.values())

    def failure_recipients(self, community: str, at_ms: int | None = None) -> list[Recipient]:
        """Who hears that a message about a warning in `community` was given up."""
        at = self._at(at_ms)
        out: dict[str, Recipient] = {}
        if community in self.regions:
            for target in self.policy.delivery_failed:
                for r in self._target(community, target, at):
                    out.setdefault(r.id, r)
        return list(out.values())

    def _target(self, community: str, target: Target, at_ms: int) -> list[Recipient]:
        if target.audience == "public":
            node = self.regions.get(community)
            chans = tuple(target.channels or ())
            found = [
                _recipient(n, c, "public", None)
                for n in self.regions.ancestors(community) for c in n.contacts if c.role == "public"
            ]
            return [*found, Recipient(
                id=f"public:{community}", name=f"{node.name}公众", role="public",
                tier="community", region=community, audience="public", channels=chans, via="policy",
            )]
        assert target.tier is not None
        node_at = self.regions.at_tier(community, target.tier)
        if node_at is None:
            return []
        return [
            _recipient(node_at, c, "internal", target.channels, via)
            for c, via in self._holders(node_at, target.roles, at_ms)
        ]

    def _holders(self, node: RegionNode, roles: list[Role], at_ms: int) -> list[tuple[Contact, str]]:
        """Contacts holding `roles` at `node` now: the roster's shift where it has one, else
        the registry's contacts, in the node's contact order."""
        order = [c.role for c in node.contacts if c.role in roles] + list(roles)
        out: list[tuple[Contact, str]] = []
        for role in dict.fromkeys(order):
            on = self.roster.on_duty(node.code, role, at_ms) if self.roster is not None else None
            if on is not None:
                out.extend((c, "roster") for c in on)
            else:
                out.extend((c, "registry") for c in node.contacts if c.role == role)
        return out


def by_channel(recipients: list[Recipient], channels: list[str]) -> dict[str, list[Recipient]]:
    """Recipients per configured channel (in `channels` order), channels with nobody left out."""
    out: dict[str, list[Recipient]] = {c: [] for c in channels}
    for r in recipients:
        for c in r.channels:
            if c in out:
                out[c].append(r)
    return {c: rs for c, rs in out.items() if rs}


def _recipient(
    node: RegionNode, contact: Contact, audience: Literal["internal", "public"],
    only: list[str] | None, via: str = "registry",
) -> Recipient:
    chans = tuple(c for c in contact.channels if only is None or c in only)
    return Recipient(
        id=contact.id, name=contact.name, role=contact.role, tier=node.tier, region=node.code,
        audience=audience, channels=chans, phone=contact.phone, email=contact.email,
        wecom=contact.wecom, via=via,  # type: ignore[arg-type]
    )
