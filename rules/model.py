"""The YAML rule language: what an operator writes (pydantic) and the checked form.

A rules file::

    version: "2026-11-a"        # optional; default: first 12 hex of the file's sha256
    profile: guangdong          # optional; the file is used only when this profile is chosen
    rules:
      - id: rainstorm
        name: 暴雨预警
        select: {kind: rain, region: "440106", sensors: [RG-0001], tags: {owner: cma}}
        measure: {type: accumulation, windows: {rain_3h: 3h, rain_6h: 6h, rain_12h: 12h}}
        levels:                 # level -> conditions; a level holds when ANY condition holds
          blue:   {rain_12h: 50}
          yellow: {rain_6h: 50}
          orange: {rain_3h: 50}
          red:    {rain_3h: 100}
        hysteresis: 0           # in the measure's unit; or per level: {red: 5, orange: 2}
        hold: 0s                # the condition must hold this long before the level opens
        hold_exit: 0s           # ... and fail this long before it closes

``select`` needs only ``kind``; ``region`` is a code prefix (district 6, street 9 or
community 12 digits) or a list of them; ``sensors`` lists explicit ids; ``tags`` must all
match. ``measure`` is ``{type: value}`` (the reading itself, named ``value`` in conditions) or
``{type: accumulation, windows: {name: duration}}`` (rolling sums over event time). A
condition's threshold is a number or ``$param``, ``$param - x``, ``$param + x``, ``$param * x``
resolved from each sensor's registry ``params``. Where a rule has one measure, a level may be
given as a bare threshold: ``yellow: 15``.

A level is reached when ANY of its conditions holds: the engine runs one threshold detector
per measure (levels that do not use that measure are absent in it) and the rule's level is the
highest level any of them reports; the measure that reports it is the one named in the warning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ews.levels import Level
from rules.expr import Threshold

Scalar = float | int | str
Duration = str | int | float


class Select(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: str = Field(description="sensor kind, e.g. rain, water_level, ponding, gas, smoke")
    region: str | list[str] | None = Field(
        default=None, description="region code prefix(es): district, street or community code"
    )
    sensors: list[str] | None = Field(default=None, description="explicit sensor ids")
    tags: dict[str, str] = Field(default_factory=dict, description="all must match")

    @property
    def regions(self) -> list[str]:
        if self.region is None:
            return []
        return [self.region] if isinstance(self.region, str) else list(self.region)


class Measure(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["value", "accumulation"] = "value"
    windows: dict[str, Duration] = Field(
        default_factory=dict, description="accumulation windows by name, e.g. rain_3h: 3h"
    )


class RuleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    name: str = ""
    description: str = ""
    enabled: bool = True
    select: Select
    measure: Measure = Field(default_factory=Measure)
    levels: dict[str, Scalar | dict[str, Scalar]]
    hysteresis: float | dict[str, float] = 0.0
    hold: Duration = 0
    hold_exit: Duration = 0


class RulesFileIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str | None = None
    profile: str | None = None
    rules: list[RuleIn] = Field(default_factory=list)


@dataclass(frozen=True)
class RuleSpec:
    """A checked rule, ready to bind to sensors."""

    id: str
    name: str
    select: Select
    measure_type: Literal["value", "accumulation"]
    windows_ms: dict[str, int]  # accumulation windows by measure name (empty for value)
    conditions: dict[str, dict[Level, Threshold]]  # measure -> level -> threshold
    hysteresis: dict[Level, float]
    hold_ms: int
    hold_exit_ms: int
    version: str
    file: str
    line: int | None = None
    profile: str | None = None
    description: str = ""
    enabled: bool = True

    @property
    def kind(self) -> str:
        return self.select.kind

    @property
    def measures(self) -> list[str]:
        """Measure names in the order of the rule's conditions (used to break ties)."""
        return list(self.conditions)

    @property
    def params(self) -> set[str]:
        return {t.param for c in self.conditions.values() for t in c.values() if t.param}


@dataclass
class RuleSet:
    version: str
    rules: list[RuleSpec] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def get(self, rule_id: str) -> RuleSpec:
        for r in self.rules:
            if r.id == rule_id:
                return r
        raise KeyError(rule_id)
