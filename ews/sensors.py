"""Sensor kinds and the sensor registry.

Every registered sensor gets a dense integer index so the hot path can keep its state in numpy
arrays and look sensors up by index instead of by string.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ews.regions import RegionRegistry
from ews.yamlfile import ConfigError, LoadedYaml, Problem, load_yaml, validate_doc

# ids and kind names: a topic level and an InfluxDB tag value or measurement as they stand,
# nothing to escape in either
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class KindSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME_PATTERN)
    unit: str
    min: float
    max: float
    interval_s: float = Field(gt=0, description="expected reporting interval")
    description: str = ""

    @model_validator(mode="after")
    def _range(self) -> KindSpec:
        if not self.min < self.max:
            raise ValueError(f"valid range of kind {self.name} is empty ({self.min} .. {self.max})")
        if self.name == "unregistered":
            raise ValueError("kind name 'unregistered' is taken: readings of unregistered sensors are stored under it")
        return self


DEFAULT_KINDS: dict[str, KindSpec] = {
    k.name: k
    for k in (
        KindSpec(name="rain", unit="mm", min=0, max=100, interval_s=300,
                 description="rain in the reporting interval (tipping bucket), mm"),
        KindSpec(name="water_level", unit="m", min=-20, max=200, interval_s=300,
                 description="water level above the station datum, m"),
        KindSpec(name="ponding", unit="cm", min=0, max=300, interval_s=300,
                 description="water depth on the road surface, cm"),
        KindSpec(name="gas", unit="%LEL", min=0, max=100, interval_s=60,
                 description="combustible gas concentration, % of the lower explosive limit"),
        KindSpec(name="smoke", unit="flag", min=0, max=1, interval_s=3600,
                 description="smoke alarm state: 0 quiet, 1 alarm (standalone IoT smoke alarm)"),
    )
}

_ID_RE = re.compile(NAME_PATTERN)


class Sensor(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    kind: str
    community: str = Field(description="12-digit community code; street and district follow")
    name: str = ""
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    # station parameters rules may refer to, e.g. warning_level (警戒水位), guarantee_level
    # (保证水位), historical_max; numbers only so they can be thresholds
    params: dict[str, float] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)

    @property
    def district(self) -> str:
        return self.community[:6]

    @property
    def street(self) -> str:
        return self.community[:9]

    @model_validator(mode="after")
    def _shape(self) -> Sensor:
        if not _ID_RE.fullmatch(self.id):
            raise ValueError(
                "sensor id must be 1-64 characters of letters, digits, '_', '.', '-' "
                "(it is a topic segment and an InfluxDB tag)"
            )
        if not re.fullmatch(r"\d{12}", self.community):
            raise ValueError("community must be a 12-digit community/village code")
        return self


class SensorFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kinds: list[KindSpec] = Field(default_factory=list, description="added or overriding kinds")
    sensors: list[Sensor]


class SensorRegistry:
    def __init__(self, sensors: list[Sensor], kinds: dict[str, KindSpec] | None = None):
        self.kinds = dict(DEFAULT_KINDS if kinds is None else kinds)
        self.sensors = sensors
        self.index: dict[str, int] = {s.id: i for i, s in enumerate(sensors)}

    def __len__(self) -> int:
        return len(self.sensors)

    def __contains__(self, sensor_id: object) -> bool:
        return sensor_id in self.index

    def get(self, sensor_id: str) -> Sensor:
        return self.sensors[self.index[sensor_id]]

    def of_kind(self, kind: str) -> list[Sensor]:
        return [s for s in self.sensors if s.kind == kind]

    @classmethod
    def load(cls, path: str | Path, regions: RegionRegistry | None = None) -> SensorRegistry:
        doc = load_yaml(path)
        model = validate_doc(SensorFile, doc)
        kinds = dict(DEFAULT_KINDS)
        kinds.update({k.name: k for k in model.kinds})
        _check(model, kinds, regions, doc)
        return cls(model.sensors, kinds)


def _check(
    model: SensorFile, kinds: dict[str, KindSpec], regions: RegionRegistry | None, doc: LoadedYaml
) -> None:
    problems = []
    seen: set[str] = set()
    for i, s in enumerate(model.sensors):
        def bad(field: str, reason: str, i: int = i) -> None:
            loc = ("sensors", i, field)
            problems.append(Problem(doc.file, doc.line_of(loc), f"sensors[{i}].{field}", reason))

        if s.id in seen:
            bad("id", f"sensor id {s.id} appears twice")
        seen.add(s.id)
        if s.kind not in kinds:
            bad("kind", f"unknown kind {s.kind!r}; known: {', '.join(sorted(kinds))}")
        if regions is not None and s.community not in regions:
            bad("community", f"community {s.community} is not in the region registry")
        for name, v in s.params.items():
            if not math.isfinite(v):
                bad("params", f"parameter {name} must be a finite number")
    if problems:
        raise ConfigError(problems)
