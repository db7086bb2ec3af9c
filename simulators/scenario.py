"""Scenario files: which models, where, when, how strong, which faults, how fast, and what
warnings the scenario should raise.

A scenario file (YAML, see docs/simulation.md for every field)::

    name: 5.22 暴雨演练
    duration: 6h               # event time simulated
    tick: 5m                   # every sensor reports once a tick
    speed: 360                 # event seconds per wall second when published (.inf: flat out)
    seed: 522                  # reading noise, fault draws; the same seed gives the same stream
    drill: true                # publish under the drill topic root: warnings say 演练
    models:
      - {type: rainstorm, from: {lat: 23.095, lon: 113.28}, to: {region: "440106018"}}
    faults:
      - {type: stuck, sensors: [RG-0003], start: 1h, duration: 2h}
    expect:
      - {rule: rainstorm, region: "440106003", min_level: orange}

Files are validated with file and line in every error; names that must exist in the sensor
registry (sensor ids, region codes, streets) are checked against it when one is given.
Shipped scenarios live in `simulators/scenarios/` and can be named without a path.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import Field, ValidationError, field_validator, model_validator

from ews.levels import Level
from ews.sensors import SensorRegistry
from ews.yamlfile import (
    ConfigError,
    LoadedYaml,
    Problem,
    format_loc,
    load_yaml,
    problems_from_validation,
    validate_doc,
)
from simulators.faults import Fault, GatewaySilent
from simulators.fire import Growth
from simulators.spec import DurationMs, Location, Strict

SCENARIO_DIR = Path(__file__).parent / "scenarios"
LevelKey = Literal["blue", "yellow", "orange", "red"]


class FormulaSpec(Strict):
    """q = q1 (1 + c lg P) / (t + b)^n, L/(s·ha): a city's storm-intensity formula."""

    q1: float = Field(gt=0)
    c: float = Field(ge=0)
    b: float = Field(ge=0)
    n: float = Field(gt=0, lt=2)
    source: str = ""


class _Model(Strict):
    start: DurationMs = 0  # when the model begins, after the scenario starts


class RainstormSpec(_Model):
    """A design storm (Chicago hyetograph) moving across the district as a storm cell."""

    type: Literal["rainstorm"]
    from_: Location = Field(default_factory=lambda: Location(lat=23.095, lon=113.280), alias="from")
    to: Location = Field(default_factory=lambda: Location(lat=23.205, lon=113.460))
    return_period_years: float = Field(100.0, ge=1)
    burst: DurationMs | None = None  # rain at a point lasts this long (default: half the time left)
    speed_kmh: float | None = Field(None, gt=0)
    radius_km: float = Field(2.6, gt=0)
    peak_ratio: float = Field(0.4, gt=0, lt=1)
    formula: FormulaSpec | None = None  # default: Guangzhou's (simulators/hyetograph.py)


class TyphoonSpec(_Model):
    type: Literal["typhoon"]
    from_: Location = Field(default_factory=lambda: Location(lat=22.10, lon=114.60), alias="from")
    towards: Location = Field(default_factory=lambda: Location(lat=23.90, lon=112.40))
    speed_kmh: float = Field(18.0, gt=0)
    max_rain_mm_h: float = Field(11.0, ge=0)
    eye_rain_mm_h: float = Field(3.0, ge=0)
    rm_km: float = Field(45.0, gt=0)
    re_km: float = Field(160.0, gt=0)
    arms: int = Field(2, ge=0)
    band_amplitude: float = Field(0.8, ge=0, lt=1)
    band_pitch_deg: float = Field(18.0, gt=0, lt=90)
    band_width: float = Field(0.35, gt=0, le=1)
    cells_per_hour: float = Field(6.0, ge=0)
    cell_rain_mm_h: float = Field(35.0, ge=0)
    cell_radius_km: float = Field(2.5, gt=0)
    flow_kmh: float = Field(30.0, ge=0)


class RiverFloodSpec(_Model):
    type: Literal["river_flood"]
    rivers: list[str] | None = None  # `river` tags; with `sensors` unset: these rivers' stations
    sensors: list[str] | None = None  # or explicit stations; neither: every station
    peak_after: DurationMs = 3 * 3_600_000  # the wave peaks at each river's first station
    rise: DurationMs = 2 * 3_600_000
    reservoirs: float = Field(3.0, gt=1)
    peak_param: str = "guarantee_level"
    margin_m: float = 0.2
    celerity_kmh: float = Field(4.0, gt=0)
    attenuation_km: float = Field(20.0, gt=0)
    flow_bearing_deg: float = 180.0
    surge_m: float = 0.0
    surge_reach_km: float = Field(3.0, gt=0)


class GasLeakSpec(_Model):
    type: Literal["gas_leak"]
    at: Location
    ramp: DurationMs = 20 * 60_000
    duration: DurationMs | None = None  # how long it leaks before the valve is shut
    peak_lel: float = Field(80.0, gt=0)
    reach_m: float = Field(300.0, gt=0)
    settle: DurationMs = 15 * 60_000


class FireSpec(_Model):
    type: Literal["fire"]
    at: Location  # a smoke alarm (the room of origin), or a place (its nearest alarm)
    growth: Growth = "fast"
    max_kw: float = Field(3000.0, gt=0)
    burn: DurationMs | None = 40 * 60_000
    decay: DurationMs = 8 * 60_000
    trip_kw: float = Field(50.0, gt=0)
    smoke_speed_m_s: float = Field(0.5, gt=0)
    smoke_reach_m: float = Field(25.0, gt=0)
    max_distance_m: float = Field(300.0, gt=0)


ModelSpec = Annotated[
    RainstormSpec | TyphoonSpec | RiverFloodSpec | GasLeakSpec | FireSpec, Field(discriminator="type")
]


class BackgroundSpec(Strict):
    """The quiet day underneath every scenario (simulators/background.py)."""

    drizzle_mm_h: float = Field(0.0, ge=0)
    tide_m2_m: float = Field(0.22, ge=0)
    tide_k1_m: float = Field(0.08, ge=0)
    tide_reach_km: float = Field(3.0, gt=0)
    stage_noise_m: float = Field(0.005, ge=0)
    ponding_noise_cm: float = Field(0.2, ge=0)
    gas_noise: float = Field(0.3, ge=0)


class HydrologySpec(Strict):
    """How the ground answers rain (simulators/hydrology.py)."""

    gauge_noise: float = Field(0.12, ge=0)
    gauge_resolution_mm: float = Field(0.1, gt=0)
    catchment_km: float = Field(1.5, ge=0)
    reservoir_hours: float = Field(1.5, gt=0)
    stage_m_per_mm: float = Field(0.032, ge=0)
    drainage_mm_h: tuple[float, float] = (25.0, 50.0)
    concentration: tuple[float, float] = (3.0, 7.0)


class Expectation(Strict):
    """A warning the scenario should raise (`min_level`) or must not exceed (`max_level`).

    Warnings match by rule (``*``: any) and by subject: the `sensor`, or any sensor in the
    `region` subtree, or anywhere. `min_level`: at least `min_subjects` matching subjects
    reached that level; `max_level`: no matching warning went above it (``none``: no warning).
    """

    rule: str = "*"
    sensor: str | None = None
    region: str | None = Field(None, pattern=r"^\d{6}(\d{3}(\d{3})?)?$")
    min_level: LevelKey | None = None
    max_level: Literal["none", "blue", "yellow", "orange", "red"] | None = None
    min_subjects: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _shape(self) -> Expectation:
        if self.min_level is None and self.max_level is None:
            raise ValueError("give min_level (the warning must be raised) and/or max_level")
        if self.sensor is not None and self.region is not None:
            raise ValueError("give sensor or region, not both")
        return self

    def describe(self) -> str:
        where = self.sensor or (f"region {self.region}" if self.region else "anywhere")
        what = []
        if self.min_level:
            many = f" at {self.min_subjects} subjects" if self.min_subjects > 1 else ""
            what.append(f"at least {self.min_level}{many}")
        if self.max_level:
            what.append(f"at most {self.max_level}")
        return f"rule {self.rule} {where}: {' and '.join(what)}"

    def unmet(self, warnings: list[dict[str, Any]], sensors: SensorRegistry) -> str | None:
        """Why the stored warnings (rows with rule, subject, community, peak_level) fail this
        expectation, or None when they meet it."""
        def matches(w: dict[str, Any]) -> bool:
            if self.rule != "*" and w["rule"] != self.rule:
                return False
            if self.sensor is not None:
                return bool(w["subject"] == self.sensor)
            return self.region is None or str(w["community"]).startswith(self.region)

        mine = [w for w in warnings if matches(w)]
        peaks: dict[str, int] = {}
        for w in mine:
            peaks[w["subject"]] = max(peaks.get(w["subject"], 0), int(w["peak_level"]))
        if self.min_level is not None:
            need = Level.parse(self.min_level)
            reached = sorted(s for s, lv in peaks.items() if lv >= need)
            if len(reached) < self.min_subjects:
                seen = ", ".join(f"{s}={Level(lv).key}" for s, lv in sorted(peaks.items())) or "no warnings"
                return f"{self.describe()}: {len(reached)} subject(s) reached it ({seen})"
        if self.max_level is not None:
            cap = Level.NONE if self.max_level == "none" else Level.parse(self.max_level)
            over = sorted(f"{s}={Level(lv).key}" for s, lv in peaks.items() if lv > cap)
            if over:
                return f"{self.describe()}: exceeded by {', '.join(over)}"
        return None


# A month of one-minute ticks is 44,640 steps of every sensor: drills and demos last hours,
# the longest shipped scenario days
MAX_DURATION_MS = 31 * 86_400_000


class Scenario(Strict):
    name: str
    description: str = ""
    seed: int = Field(522, ge=0)  # numpy seeds are non-negative
    # where event time starts; unset: the scenario ends when publishing starts, so no reading
    # lies in the future
    start: datetime | None = None
    duration: DurationMs
    tick: DurationMs = 300_000
    speed: float = Field(360.0, gt=0)  # event seconds per wall second; .inf: as fast as possible
    batch: bool = False  # per-street gateway batches instead of one message per reading
    drill: bool = False
    health: bool = False  # every message carries a battery field
    background: BackgroundSpec = Field(default_factory=BackgroundSpec)
    hydrology: HydrologySpec = Field(default_factory=HydrologySpec)
    models: list[ModelSpec] = Field(default_factory=list)
    faults: list[Fault] = Field(default_factory=list)
    expect: list[Expectation] = Field(default_factory=list)

    @field_validator("duration")
    @classmethod
    def _bounded(cls, v: int) -> int:
        if v > MAX_DURATION_MS:
            raise ValueError(f"a scenario lasts at most {MAX_DURATION_MS // 86_400_000}d: its readings are "
                             "computed in memory before the first is published")
        return v

    @field_validator("start")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("give the start with its UTC offset, e.g. 2020-05-22T00:00:00+08:00")
        return v

    @model_validator(mode="after")
    def _times(self) -> Scenario:
        if self.tick <= 0 or self.tick % 60_000:
            raise ValueError("tick must be a whole number of minutes")
        if self.duration < self.tick:
            raise ValueError("duration must be at least one tick")
        for m in self.models:
            if m.start >= self.duration:
                raise ValueError(f"a {m.type} model starts at or after the end of the scenario")
        return self

    @property
    def n_ticks(self) -> int:
        return self.duration // self.tick


def scenario_path(ref: str | Path) -> Path:
    """A file path, or the name of a shipped scenario (``typhoon`` -> scenarios/typhoon.yaml)."""
    p = Path(ref)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return p
    shipped = SCENARIO_DIR / f"{ref}.yaml"
    if shipped.is_file():
        return shipped
    names = ", ".join(sorted(f.stem for f in SCENARIO_DIR.glob("*.yaml")))
    raise ConfigError([Problem(str(ref), None, "", f"no such scenario file or shipped scenario (shipped: {names})")])


def shipped() -> list[Path]:
    return sorted(SCENARIO_DIR.glob("*.yaml"))


def load_scenario(ref: str | Path, sensors: SensorRegistry | None = None) -> Scenario:
    """Load and validate a scenario; with `sensors`, also check every name it uses exists."""
    doc = load_yaml(scenario_path(ref))
    if doc.data is None:
        raise ConfigError([Problem(doc.file, None, "", "file is empty")])
    # models and faults one by one first: errors inside a tagged union would otherwise be
    # reported at the list item, not at the line of the field that is wrong
    problems = _items(doc, "models", _MODEL_TYPES) + _items(doc, "faults", _FAULT_TYPES)
    if problems:
        raise ConfigError(problems)
    scenario = validate_doc(Scenario, doc)
    if sensors is not None:
        problems = check_names(scenario, sensors, doc)
        if problems:
            raise ConfigError(problems)
    return scenario


_MODEL_TYPES: dict[str, type[Strict]] = {
    "rainstorm": RainstormSpec, "typhoon": TyphoonSpec, "river_flood": RiverFloodSpec,
    "gas_leak": GasLeakSpec, "fire": FireSpec,
}
_FAULT_TYPES: dict[str, type[Strict]] = {
    get_args(cls.model_fields["type"].annotation)[0]: cls
    for cls in get_args(get_args(Fault)[0])
}


def _items(doc: LoadedYaml, key: str, types: dict[str, type[Strict]]) -> list[Problem]:
    items = doc.data.get(key) if isinstance(doc.data, dict) else None
    if not isinstance(items, list):
        return []  # absent or not a list: the whole-file validation says so
    problems: list[Problem] = []
    for i, item in enumerate(items):
        kind = item.get("type") if isinstance(item, dict) else None
        if not isinstance(kind, str) or kind not in types:
            loc = (key, i, "type") if isinstance(item, dict) and "type" in item else (key, i)
            problems.append(Problem(doc.file, doc.line_of(loc), format_loc(loc),
                                    f"type must be one of {', '.join(types)}, got {kind!r}"))
            continue
        try:
            types[kind].model_validate(item)
        except ValidationError as exc:
            problems += problems_from_validation(exc, doc, (key, i))
    return problems


def check_names(sc: Scenario, sensors: SensorRegistry, doc: LoadedYaml) -> list[Problem]:
    """Sensor ids, region codes and streets the scenario names, looked up in the registry."""
    problems: list[Problem] = []
    communities = {s.community for s in sensors.sensors}

    def bad(loc: tuple[str | int, ...], reason: str) -> None:
        problems.append(Problem(doc.file, doc.line_of(loc), ".".join(str(x) for x in loc), reason))

    def sensor(loc: tuple[str | int, ...], sid: str, kind: str | None = None) -> None:
        if sid not in sensors:
            bad(loc, f"sensor {sid} is not in the sensor registry")
        elif kind is not None and sensors.get(sid).kind != kind:
            bad(loc, f"sensor {sid} is a {sensors.get(sid).kind} sensor, not {kind}")

    def region(loc: tuple[str | int, ...], code: str) -> None:
        if not any(c.startswith(code) for c in communities):
            bad(loc, f"no sensor lies in region {code}")

    def place(loc: tuple[str | int, ...], where: Location, kind: str | None = None) -> None:
        if where.sensor is not None:
            sensor((*loc, "sensor"), where.sensor, kind)
        if where.region is not None:
            region((*loc, "region"), where.region)

    for i, m in enumerate(sc.models):
        at: tuple[str | int, ...] = ("models", i)
        if isinstance(m, RainstormSpec):
            place((*at, "from"), m.from_)
            place((*at, "to"), m.to)
        elif isinstance(m, TyphoonSpec):
            place((*at, "from"), m.from_)
            place((*at, "towards"), m.towards)
        elif isinstance(m, RiverFloodSpec):
            for j, sid in enumerate(m.sensors or []):
                sensor((*at, "sensors", j), sid, "water_level")
            known = {s.tags.get("river") for s in sensors.of_kind("water_level")}
            for j, river in enumerate(m.rivers or []):
                if river not in known:
                    bad((*at, "rivers", j), f"no water-level station has the river tag {river!r}")
        elif isinstance(m, GasLeakSpec):
            place((*at, "at"), m.at)
        elif isinstance(m, FireSpec):
            place((*at, "at"), m.at, "smoke")
            if not sensors.of_kind("smoke"):
                bad(at, "the registry has no smoke alarm for the fire to trip")
    for i, f in enumerate(sc.faults):
        at = ("faults", i)
        if isinstance(f, GatewaySilent):
            region((*at, "street"), f.street)
            continue
        for j, sid in enumerate(f.sensors or []):
            sensor((*at, "sensors", j), sid)
        if f.region is not None:
            region((*at, "region"), f.region)
        if f.kind is not None and f.kind not in sensors.kinds:
            bad((*at, "kind"), f"unknown kind {f.kind!r}")
    for i, e in enumerate(sc.expect):
        if e.sensor is not None:
            sensor(("expect", i, "sensor"), e.sensor)
        if e.region is not None:
            region(("expect", i, "region"), e.region)
    return problems
