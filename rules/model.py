"""The YAML rule language: what an operator writes (pydantic) and the checked form.

A rules file (the full reference, with examples, is docs/rules.md)::

    version: "2026-11-a"        # optional; default: first 12 hex of the file's sha256
    profile: guangdong          # optional; the file is used only when this profile is chosen
    rules:                      # hazard rules: readings -> blue/yellow/orange/red
      - id: rainstorm
        name: 暴雨预警
        select: {kind: rain, region: "440106", sensors: [RG-0001], tags: {owner: cma}}
        measure:
          type: accumulation    # or value (the reading itself, named `value`)
          windows: {rain_3h: 3h, rain_6h: 6h, rain_12h: 12h}
          trends: {rise_1h: 1h}                 # least-squares slope, unit per hour
          forecasts: {rain_3h_next_1h: {of: rain_3h, horizon: 1h, fit: 1h}}
        params: {rise_limit: 0.3}               # defaults for $params a sensor lacks
        levels:                 # level -> conditions; a level holds when ANY condition holds
          blue:   {rain_12h: 50}
          yellow: {rain_6h: 50}
          orange: {rain_3h: 50}
          red:    {rain_3h: 100}
        hysteresis: 0           # in the measure's unit; or per level: {red: 5, orange: 2}
        hold: 0s                # the condition must hold this long before the level opens
        hold_exit: 0s           # ... and fail this long before it closes
        area: {by: street, k: 2}                # optional: k of n sensors of a region
        flap: {changes: 4, within: 1h}          # optional: hold a flapping level
    faults:                     # device-fault rules: never a hazard level
      - id: no_data
        detector: no_data       # no_data | stuck | spike | out_of_range | drift
        select: {kind: "*"}
        after: 3x               # 3 x the kind's expected interval (or a duration)
        feed_down: {fraction: 0.5, min_sensors: 10}

A level is reached when ANY of its conditions holds; the rule's level is the highest level
reached, and the measure that reached it is the one named in the warning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ews.levels import Level
from rules.expr import Threshold

Scalar = float | int | str
Duration = str | int | float
ANY_KIND = "*"


class Select(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: str = Field(description="sensor kind, e.g. rain, water_level; '*' (fault rules): any")
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


class ForecastIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    of: str = Field(description="`value` or the name of an accumulation window of the rule")
    horizon: Duration = Field(description="how far ahead, e.g. 1h")
    fit: Duration = Field("1h", description="the recent span the trend or intensity is taken from")


class Measure(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["value", "accumulation"] = "value"
    windows: dict[str, Duration] = Field(
        default_factory=dict, description="accumulation windows by name, e.g. rain_3h: 3h"
    )
    trends: dict[str, Duration] = Field(
        default_factory=dict, description="least-squares slope of the reading over a window, per hour"
    )
    forecasts: dict[str, ForecastIn] = Field(default_factory=dict)


class AreaIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    by: Literal["community", "street", "district"]
    k: int | str = Field(description="sensors needed: a number, or a share such as '50%'")


class FlapIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    changes: int = Field(4, ge=2)
    within: Duration = "1h"


class RuleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    name: str = ""
    description: str = ""
    enabled: bool = True
    select: Select
    measure: Measure = Field(default_factory=Measure)
    params: dict[str, float] = Field(default_factory=dict)
    levels: dict[str, Scalar | dict[str, Scalar]]
    hysteresis: float | dict[str, float] = 0.0
    hold: Duration = 0
    hold_exit: Duration = 0
    area: AreaIn | None = None
    flap: FlapIn | None = None


class FeedDownIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    fraction: float = Field(0.5, gt=0, le=1)
    min_sensors: int = Field(10, ge=1)


FaultDetector = Literal["no_data", "stuck", "spike", "out_of_range", "drift"]


class FaultIn(BaseModel):
    """One model for every fault detector; compile checks which fields apply to which."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    name: str = ""
    description: str = ""
    enabled: bool = True
    detector: FaultDetector
    select: Select
    level: str = "blue"
    params: dict[str, float] = Field(default_factory=dict)
    clear_after: Duration | None = None
    after: Duration | None = None  # no_data: "3x" (of the kind's interval) or a duration
    feed_down: FeedDownIn | None = None
    for_: Duration | None = Field(None, alias="for")  # stuck, drift
    tolerance: Scalar | None = None  # stuck
    ignore: list[float] | None = None  # stuck
    min_readings: int | None = Field(None, ge=1)  # stuck
    max_jump: Scalar | None = None  # spike
    confirm: int | None = Field(None, ge=1)  # spike
    min: Scalar | None = None  # out_of_range
    max: Scalar | None = None  # out_of_range
    tau: Duration | None = None  # drift
    radius_km: float | None = Field(None, gt=0)  # drift
    neighbours: int | None = Field(None, ge=1)  # drift: at most this many nearest
    min_neighbours: int | None = Field(None, ge=1)
    min_level: float | None = None
    low: float | None = Field(None, ge=0)
    high: float | None = Field(None, gt=0)
    every: Duration | None = None


class RulesFileIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str | None = None
    profile: str | None = None
    rules: list[RuleIn] = Field(default_factory=list)
    faults: list[FaultIn] = Field(default_factory=list)


@dataclass(frozen=True)
class Forecast:
    of: str  # "value" or an accumulation window name
    horizon_ms: int
    fit_ms: int


@dataclass(frozen=True)
class RuleSpec:
    """A checked hazard rule, ready to bind to sensors."""

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
    trends_ms: dict[str, int] = field(default_factory=dict)
    forecasts: dict[str, Forecast] = field(default_factory=dict)
    param_defaults: dict[str, float] = field(default_factory=dict)
    area_by: str | None = None  # community | street | district
    area_k: tuple[int, float] = (0, 0.0)  # (count, share); one of them is set
    flap_changes: int = 0  # 0: no flapping suppression
    flap_within_ms: int = 0

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

    def definition(self) -> tuple[object, ...]:
        """Everything that decides the rule's behaviour (not its version, file or wording)."""
        return (self.id, self.select.model_dump_json(), self.measure_type,
                tuple(sorted(self.windows_ms.items())), _conds(self.conditions),
                tuple(sorted(self.hysteresis.items())), self.hold_ms, self.hold_exit_ms,
                tuple(sorted(self.trends_ms.items())), tuple(sorted(self.forecasts.items())),
                tuple(sorted(self.param_defaults.items())), self.area_by, self.area_k,
                self.flap_changes, self.flap_within_ms, self.enabled)


def _conds(c: dict[str, dict[Level, Threshold]]) -> tuple[object, ...]:
    return tuple((m, tuple(sorted(by.items()))) for m, by in c.items())


@dataclass(frozen=True)
class FaultSpec:
    """A checked device-fault rule."""

    id: str
    name: str
    detector: str
    select: Select
    level: Level
    version: str
    file: str
    line: int | None = None
    profile: str | None = None
    description: str = ""
    enabled: bool = True
    clear_after_ms: int = 0
    params: dict[str, Threshold] = field(default_factory=dict)  # per-sensor numbers
    param_defaults: dict[str, float] = field(default_factory=dict)
    after_factor: float = 0.0  # no_data: multiple of the kind's interval (0: use after_ms)
    after_ms: int = 0
    feed_fraction: float = 0.0  # 0: no feed-down grouping
    feed_min: int = 0
    duration_ms: int = 0  # stuck, drift
    ignore: tuple[float, ...] = ()
    min_readings: int = 3
    confirm: int = 3
    tau_ms: int = 0
    radius_km: float = 0.0
    neighbours: int = 8
    min_neighbours: int = 3
    min_level: float = 0.0
    low: float = 0.0
    high: float = float("inf")
    every_ms: int = 0

    @property
    def kind(self) -> str:
        return self.select.kind

    def definition(self) -> tuple[object, ...]:
        return (self.id, self.detector, self.select.model_dump_json(), self.level,
                self.clear_after_ms, tuple(sorted(self.params.items())),
                tuple(sorted(self.param_defaults.items())), self.after_factor, self.after_ms,
                self.feed_fraction, self.feed_min, self.duration_ms, self.ignore,
                self.min_readings, self.confirm, self.tau_ms, self.radius_km, self.neighbours,
                self.min_neighbours, self.min_level, self.low, self.high, self.every_ms,
                self.enabled)


@dataclass
class RuleSet:
    version: str
    rules: list[RuleSpec] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    faults: list[FaultSpec] = field(default_factory=list)
    profiles: tuple[str, ...] = ()
    digest: str = ""  # of the files' contents, to tell a real change from a touched file

    def get(self, rule_id: str) -> RuleSpec:
        for r in self.rules:
            if r.id == rule_id:
                return r
        raise KeyError(rule_id)

    def fault(self, rule_id: str) -> FaultSpec:
        for f in self.faults:
            if f.id == rule_id:
                return f
        raise KeyError(rule_id)
