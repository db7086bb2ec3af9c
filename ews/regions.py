"""The administrative tree 区 — 街道/镇 — 社区/村 and the contacts at each node.

Codes follow the statistical division scheme: district 6 digits (GB/T 2260), street/town 9,
community/village 12, each a prefix of the next, so a subtree is a code prefix and a topic
wildcard at once.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ews.yamlfile import load_model

Tier = Literal["district", "street", "community"]
TIER_DIGITS: dict[str, int] = {"district": 6, "street": 9, "community": 12}
Role = Literal["duty_officer", "leader", "grid_staff", "public"]

_CODE_RE = re.compile(r"^\d{6}(\d{3}(\d{3})?)?$")


def tier_of(code: str) -> Tier | None:
    if not _CODE_RE.fullmatch(code):
        return None
    return {6: "district", 9: "street", 12: "community"}[len(code)]  # type: ignore[return-value]


class Contact(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    name: str
    role: Role
    phone: str | None = None
    email: str | None = None
    wecom: str | None = None
    # channel names (from the notifier configuration) this person is reached on
    channels: list[str] = Field(default_factory=lambda: ["console", "webhook"])


class _NodeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str
    name: str
    contacts: list[Contact] = Field(default_factory=list)
    sample_code: bool = False  # True where the code is illustrative, not the official one


class CommunityIn(_NodeIn):
    @field_validator("code")
    @classmethod
    def _code(cls, v: str) -> str:
        if not re.fullmatch(r"\d{12}", v):
            raise ValueError("a community/village code has 12 digits")
        return v


class StreetIn(_NodeIn):
    communities: list[CommunityIn] = Field(default_factory=list)

    @field_validator("code")
    @classmethod
    def _code(cls, v: str) -> str:
        if not re.fullmatch(r"\d{9}", v):
            raise ValueError("a street/town code has 9 digits")
        return v

    @model_validator(mode="after")
    def _children(self) -> StreetIn:
        for c in self.communities:
            if not c.code.startswith(self.code):
                raise ValueError(f"community {c.code} does not lie under street {self.code}")
        return self


class DistrictIn(_NodeIn):
    streets: list[StreetIn] = Field(default_factory=list)

    @field_validator("code")
    @classmethod
    def _code(cls, v: str) -> str:
        if not re.fullmatch(r"\d{6}", v):
            raise ValueError("a district code has 6 digits (GB/T 2260)")
        return v

    @model_validator(mode="after")
    def _children(self) -> DistrictIn:
        for s in self.streets:
            if not s.code.startswith(self.code):
                raise ValueError(f"street {s.code} does not lie under district {self.code}")
        return self


class RegionFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    districts: list[DistrictIn]

    @model_validator(mode="after")
    def _unique(self) -> RegionFile:
        seen: set[str] = set()
        for node in _iter_in(self):
            if node.code in seen:
                raise ValueError(f"region code {node.code} appears twice")
            seen.add(node.code)
        return self


def _iter_in(f: RegionFile) -> Iterator[_NodeIn]:
    for d in f.districts:
        yield d
        for s in d.streets:
            yield s
            yield from s.communities


@dataclass
class RegionNode:
    code: str
    name: str
    tier: Tier
    parent: str | None
    contacts: list[Contact]
    children: list[str] = field(default_factory=list)
    sample_code: bool = False


class RegionRegistry:
    def __init__(self, nodes: dict[str, RegionNode]):
        self.nodes = nodes

    @classmethod
    def from_model(cls, f: RegionFile) -> RegionRegistry:
        nodes: dict[str, RegionNode] = {}
        for d in f.districts:
            nodes[d.code] = RegionNode(d.code, d.name, "district", None, d.contacts, [], d.sample_code)
            for s in d.streets:
                nodes[d.code].children.append(s.code)
                nodes[s.code] = RegionNode(s.code, s.name, "street", d.code, s.contacts, [], s.sample_code)
                for c in s.communities:
                    nodes[s.code].children.append(c.code)
                    nodes[c.code] = RegionNode(
                        c.code, c.name, "community", s.code, c.contacts, [], c.sample_code
                    )
        return cls(nodes)

    @classmethod
    def load(cls, path: str | Path) -> RegionRegistry:
        return cls.from_model(load_model(RegionFile, path))

    def __contains__(self, code: object) -> bool:
        return code in self.nodes

    def get(self, code: str) -> RegionNode:
        try:
            return self.nodes[code]
        except KeyError:
            raise KeyError(f"region {code} is not in the region registry") from None

    def ancestors(self, code: str) -> list[RegionNode]:
        """The node and its ancestors, nearest first: community, street, district."""
        out = []
        node: RegionNode | None = self.get(code)
        while node is not None:
            out.append(node)
            node = self.nodes.get(node.parent) if node.parent else None
        return out

    def at_tier(self, code: str, tier: Tier) -> RegionNode | None:
        for node in self.ancestors(code):
            if node.tier == tier:
                return node
        return None

    def path_names(self, code: str) -> str:
        """'天河区 车陂街道 某社区' for a community code."""
        return " ".join(n.name for n in reversed(self.ancestors(code)))

    def communities(self) -> list[RegionNode]:
        return [n for n in self.nodes.values() if n.tier == "community"]

    def streets(self) -> list[RegionNode]:
        return [n for n in self.nodes.values() if n.tier == "street"]
