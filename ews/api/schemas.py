"""Request and response bodies, so the OpenAPI description says what goes in and comes out.

Warnings are the published contract object (docs/contract.md); it may gain fields within a
version, so response models allow extra fields rather than dropping them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

LevelKey = Literal["blue", "yellow", "orange", "red"]
MAX_MS = 253_402_300_799_999  # 9999-12-31: keeps times inside SQLite's integers
MAX_SILENCE_S = 30 * 24 * 3600.0


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Node(_Open):
    code: str
    name: str


class RegionPath(_Open):
    district: Node
    street: Node
    community: Node


class WarningOut(_Open):
    id: str
    rule: str
    kind: str
    subject: str
    level: str
    level_zh: str
    state: Literal["open", "resolved"]
    value: float | None = None
    measure: str
    unit: str
    threshold: float | None = None
    region: RegionPath
    event_ts: str
    issued_ts: str
    drill: bool
    message: str
    acknowledged: bool


class WarningList(_Open):
    total: int
    limit: int
    offset: int
    warnings: list[WarningOut]


class AuditRow(_Open):
    seq: int
    ts_ms: int
    ts: str
    actor: str
    action: str
    warning_id: str | None = None
    detail: dict[str, Any]


class WarningDetail(WarningOut):
    transitions: list[dict[str, Any]]
    audit: list[AuditRow]


class AckIn(_Closed):
    comment: str = Field("", max_length=500, description="what the duty officer did or will do")


class SilenceIn(_Closed):
    """Hold back notifications by region subtree, sensor and/or rule until `ends_ts_ms`
    (or for `duration_s`). Without region and sensor, a token of one region silences that
    region only."""

    region: str | None = Field(None, pattern=r"^\d{6}(\d{3}(\d{3})?)?$")
    sensor: str | None = Field(None, min_length=1, max_length=64)
    rule: str | None = Field(None, min_length=1, max_length=120)
    starts_ts_ms: int | None = Field(None, ge=0, le=MAX_MS, description="default: now")
    ends_ts_ms: int | None = Field(None, ge=0, le=MAX_MS)
    duration_s: float | None = Field(None, gt=0, le=MAX_SILENCE_S)
    reason: str = Field(min_length=1, max_length=500)

    @model_validator(mode="after")
    def _end(self) -> SilenceIn:
        if (self.ends_ts_ms is None) == (self.duration_s is None):
            raise ValueError("give exactly one of ends_ts_ms and duration_s")
        return self


class WarningSilenceIn(_Closed):
    duration_s: float = Field(gt=0, le=MAX_SILENCE_S, description="how long to hold back notifications")
    reason: str = Field(min_length=1, max_length=500)


class SilenceOut(_Open):
    id: str
    kind: Literal["silence", "maintenance"]
    region: str | None = None
    sensor: str | None = None
    rule: str | None = None
    starts_ts_ms: int
    ends_ts_ms: int
    author: str
    reason: str
    active: bool


class SilenceList(_Open):
    silences: list[SilenceOut]


class LastReading(_Open):
    ts: str
    ts_ms: int
    value: float | None


class SensorOut(_Open):
    id: str
    name: str
    kind: str
    unit: str
    region: RegionPath
    lat: float
    lon: float
    last: LastReading | None
    last_seen_ts: str | None
    health: Literal["ok", "stale", "fault", "unknown"]
    level: Literal["none", "blue", "yellow", "orange", "red"]
    warnings: list[str]


class SensorList(_Open):
    sensors: list[SensorOut]


class SensorDetail(SensorOut):
    rules: list[dict[str, Any]]


class Series(_Open):
    measure: str
    label: str
    unit: str
    points: list[tuple[int, float]]


class ThresholdLine(_Open):
    rule: str
    measure: str
    level: LevelKey
    value: float


class Readings(_Open):
    sensor: str
    kind: str
    unit: str
    from_ms: int
    until_ms: int
    series: list[Series]
    thresholds: list[ThresholdLine]


class RegionTree(_Open):
    code: str
    name: str
    tier: Literal["district", "street", "community"]
    level: Literal["none", "blue", "yellow", "orange", "red"]
    counts: dict[str, int]
    unacknowledged: int
    sensors: int
    children: list[RegionTree]


class RegionsOut(_Open):
    regions: list[RegionTree]


class RulesOut(_Open):
    version: str
    profiles: list[str]
    files: list[str]
    rules: list[dict[str, Any]]
    faults: list[dict[str, Any]]
    bind_problems: list[str]


class ReloadOut(_Open):
    version_before: str
    version_after: str
    changed: bool
    rules: int


class Me(_Open):
    name: str
    role: str
    region: str
    region_name: str
    may: dict[str, bool]


class Health(_Open):
    status: str


class Ready(_Open):
    ready: bool
    checks: dict[str, dict[str, Any]]
