"""Who hears of a warning: a YAML policy mapping level to tiers of the region tree and roles.

Blue stays in the community, each higher level reaches one tier further up, red also goes
to the public (sirens, displays, feeds). Internal and public audiences are kept apart.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ews.levels import HAZARD_LEVELS, Level
from ews.regions import Contact, RegionNode, RegionRegistry, Role, Tier
from ews.yamlfile import load_model

log = logging.getLogger(__name__)

DEFAULT_POLICY = Path(__file__).parent / "templates" / "routing.yaml"
TransitionType = Literal["open", "raise", "lower", "resolve"]
ALL_TRANSITIONS: tuple[TransitionType, ...] = ("open", "raise", "lower", "resolve")
LevelKey = Literal["blue", "yellow", "orange", "red"]


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


class RoutingPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    levels: dict[LevelKey, list[Target]]
    notify_on: list[TransitionType] = Field(default_factory=lambda: list(ALL_TRANSITIONS))

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

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d


class Router:
    def __init__(self, regions: RegionRegistry, policy: RoutingPolicy | None = None):
        self.regions = regions
        self.policy = policy if policy is not None else load_policy()

    def notifies(self, transition: str) -> bool:
        return transition in self.policy.notify_on

    def recipients(self, community: str, level: Level) -> list[Recipient]:
        """Everyone the policy names for `level` in `community`, each once, in policy order."""
        if level == Level.NONE:
            return []
        if community not in self.regions:
            log.error("community %s is not in the region registry; nobody to notify", community)
            return []
        out: dict[str, Recipient] = {}
        for target in self.policy.levels[level.key]:  # type: ignore[index]
            for r in self._target(community, target):
                out.setdefault(r.id, r)
        return list(out.values())

    def plan(self, community: str, level: Level, channels: list[str]) -> dict[str, list[Recipient]]:
        """Recipients grouped by channel, for the configured `channels` only."""
        by_channel: dict[str, list[Recipient]] = {c: [] for c in channels}
        for r in self.recipients(community, level):
            for c in r.channels:
                if c in by_channel:
                    by_channel[c].append(r)
        return {c: rs for c, rs in by_channel.items() if rs}

    def _target(self, community: str, target: Target) -> list[Recipient]:
        if target.audience == "public":
            node = self.regions.get(community)
            chans = tuple(target.channels or ())
            found = [
                _recipient(n, c, "public", None)
                for n in self.regions.ancestors(community) for c in n.contacts if c.role == "public"
            ]
            return [*found, Recipient(
                id=f"public:{community}", name=f"{node.name}公众", role="public",
                tier="community", region=community, audience="public", channels=chans,
            )]
        assert target.tier is not None
        node_at = self.regions.at_tier(community, target.tier)
        if node_at is None:
            return []
        return [
            _recipient(node_at, c, "internal", target.channels)
            for c in node_at.contacts if c.role in target.roles
        ]


def _recipient(
    node: RegionNode, contact: Contact, audience: Literal["internal", "public"],
    only: list[str] | None,
) -> Recipient:
    chans = tuple(c for c in contact.channels if only is None or c in only)
    return Recipient(
        id=contact.id, name=contact.name, role=contact.role, tier=node.tier, region=node.code,
        audience=audience, channels=chans, phone=contact.phone, email=contact.email,
        wecom=contact.wecom,
    )
