"""Binding a rule to the sensors it selects, with each sensor's own parameters.

Done once when rules or the registry change: the result is a dense array of the selected
sensors' registry indices and, per (measure, level) condition, a threshold column (NaN where a
sensor has no such level), ready for one threshold detector per rule. A `$param` comes from
the sensor's registry `params`, else from the rule's `params` defaults. A sensor that lacks a
referenced parameter, or whose resolved thresholds do not ascend, is skipped for that rule
only and named in the problems; the rest of the rule and the engine go on.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from ews.levels import HAZARD_LEVELS, Level
from ews.sensors import Sensor, SensorRegistry
from rules.expr import Threshold
from rules.model import ANY_KIND, FaultSpec, RuleSpec, Select

N_LEVELS = len(HAZARD_LEVELS)
TIER_DIGITS = {"community": 12, "street": 9, "district": 6}
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass
class Binding:
    spec: RuleSpec
    sensors: IntArray  # registry indices of the subjects, in registry order
    thresholds: dict[str, FloatArray]  # measure -> (n_subjects, 4), NaN = level absent
    hysteresis: FloatArray  # (4,) per level
    # one detector column per (measure, level) condition, ascending by level
    column_measure: list[str] = field(default_factory=list)
    column_level: list[int] = field(default_factory=list)
    column_enter: FloatArray = field(default_factory=lambda: np.empty((0, 0)))
    # area rules: region code per group and group index per subject
    groups: list[str] = field(default_factory=list)
    group_of: IntArray = field(default_factory=lambda: np.empty(0, np.int64))
    need: IntArray = field(default_factory=lambda: np.empty(0, np.int64))

    @property
    def n_subjects(self) -> int:
        return int(self.sensors.shape[0])

    def key(self) -> tuple[object, ...]:
        """Identity of the bound state: same key, same detectors can carry on."""
        return (self.spec.definition(), self.sensors.tobytes(), self.column_enter.tobytes())


def selects(sel: Select, sensor: Sensor) -> bool:
    if sel.kind != ANY_KIND and sensor.kind != sel.kind:
        return False
    if sel.sensors is not None and sensor.id not in sel.sensors:
        return False
    if sel.regions and not any(sensor.community.startswith(c) for c in sel.regions):
        return False
    return all(sensor.tags.get(k) == v for k, v in sel.tags.items())


def resolve(th: Threshold, sensor: Sensor, defaults: dict[str, float]) -> float:
    """A threshold for one sensor; KeyError names the missing parameter."""
    if th.param is not None and th.param not in sensor.params and th.param in defaults:
        return th.resolve({th.param: defaults[th.param]})
    return th.resolve(sensor.params)


def _resolve(spec: RuleSpec, sensor: Sensor) -> tuple[dict[str, list[float]] | None, str | None]:
    rows: dict[str, list[float]] = {}
    for measure, by_level in spec.conditions.items():
        row = [float("nan")] * N_LEVELS
        for lvl, th in by_level.items():
            try:
                row[int(lvl) - 1] = resolve(th, sensor, spec.param_defaults)
            except KeyError:
                return None, (
                    f"rule {spec.id}: sensor {sensor.id} has no parameter {th.param!r} "
                    f"(needed by {lvl.key}: {th}); rule skipped for this sensor"
                )
        present = [(i, v) for i, v in enumerate(row) if v == v]  # v == v: not NaN
        for (lo, a), (hi, b) in itertools.pairwise(present):
            if not b > a:
                return None, (
                    f"rule {spec.id}: sensor {sensor.id} thresholds do not ascend on {measure} "
                    f"({Level(lo + 1).key} {a:g}, {Level(hi + 1).key} {b:g}; check its "
                    "params); rule skipped for this sensor"
                )
        rows[measure] = row
    return rows, None


def _kind_problems(spec: RuleSpec | FaultSpec, registry: SensorRegistry) -> list[str]:
    problems: list[str] = []
    kind = spec.select.kind
    if kind != ANY_KIND and kind not in registry.kinds:
        problems.append(f"rule {spec.id}: kind {kind!r} is not a known sensor kind "
                        f"({', '.join(sorted(registry.kinds))})")
    for sid in spec.select.sensors or []:
        if sid not in registry:
            problems.append(f"rule {spec.id}: sensor {sid} is not in the sensor registry")
        elif kind != ANY_KIND and registry.get(sid).kind != kind:
            problems.append(f"rule {spec.id}: sensor {sid} is of kind {registry.get(sid).kind}, "
                            f"not {kind}")
    return problems


def bind(spec: RuleSpec, registry: SensorRegistry) -> tuple[Binding, list[str]]:
    problems = _kind_problems(spec, registry)
    chosen: list[int] = []
    per_measure: dict[str, list[list[float]]] = {m: [] for m in spec.conditions}
    for idx, sensor in enumerate(registry.sensors):
        if not selects(spec.select, sensor):
            continue
        rows, problem = _resolve(spec, sensor)
        if rows is None:
            problems.append(problem or "")
            continue
        chosen.append(idx)
        for m, row in rows.items():
            per_measure[m].append(row)
    thresholds = {
        m: np.asarray(rows, np.float64).reshape(len(chosen), N_LEVELS)
        for m, rows in per_measure.items()
    }
    hyst = np.asarray([spec.hysteresis.get(lvl, 0.0) for lvl in HAZARD_LEVELS], np.float64)
    b = Binding(spec, np.asarray(chosen, np.int64), thresholds, hyst)
    cols = sorted(((int(lv), i, m) for i, m in enumerate(spec.conditions)
                   for lv in spec.conditions[m]))
    b.column_level = [lv for lv, _, _ in cols]
    b.column_measure = [m for _, _, m in cols]
    b.column_enter = np.stack([thresholds[m][:, lv - 1] for lv, _, m in cols], axis=1) if cols else (
        np.empty((len(chosen), 0)))
    if spec.area_by is not None:
        _bind_area(b, registry)
    return b, problems


def _bind_area(b: Binding, registry: SensorRegistry) -> None:
    digits = TIER_DIGITS[b.spec.area_by or "community"]
    codes = [registry.sensors[int(i)].community[:digits] for i in b.sensors]
    b.groups = list(dict.fromkeys(codes))
    index = {c: i for i, c in enumerate(b.groups)}
    b.group_of = np.asarray([index[c] for c in codes], np.int64)
    size = np.bincount(b.group_of, minlength=len(b.groups))
    count, share = b.spec.area_k
    need = np.full(len(b.groups), count, np.int64) if count else np.maximum(
        1, np.ceil(share * size - 1e-9)).astype(np.int64)
    b.need = need


@dataclass
class FaultBinding:
    spec: FaultSpec
    sensors: IntArray  # registry indices
    params: dict[str, FloatArray]  # tolerance / max_jump / min / max per subject (NaN: none)
    timeout_ms: FloatArray  # no_data
    neighbours: IntArray  # drift: (n, K) subject indices, -1 padded

    @property
    def n_subjects(self) -> int:
        return int(self.sensors.shape[0])

    def key(self) -> tuple[object, ...]:
        return (self.spec.definition(), self.sensors.tobytes(),
                tuple((k, v.tobytes()) for k, v in sorted(self.params.items())),
                self.timeout_ms.tobytes())


def bind_fault(spec: FaultSpec, registry: SensorRegistry) -> tuple[FaultBinding, list[str]]:
    problems = _kind_problems(spec, registry)
    chosen: list[int] = []
    values: dict[str, list[float]] = {k: [] for k in spec.params}
    for idx, sensor in enumerate(registry.sensors):
        if not selects(spec.select, sensor):
            continue
        row: dict[str, float] = {}
        try:
            for name, th in spec.params.items():
                row[name] = resolve(th, sensor, spec.param_defaults)
        except KeyError as exc:
            problems.append(f"rule {spec.id}: sensor {sensor.id} has no parameter {exc.args[0]!r}; "
                            "rule skipped for this sensor")
            continue
        chosen.append(idx)
        for k, v in row.items():
            values[k].append(v)
    sensors = np.asarray(chosen, np.int64)
    timeout = np.asarray([
        spec.after_factor * registry.kinds[registry.sensors[i].kind].interval_s * 1000
        if spec.after_factor else float(spec.after_ms) for i in chosen], np.float64)
    nb = _neighbours(spec, registry, sensors) if spec.detector == "drift" else np.empty((0, 0), np.int64)
    return FaultBinding(spec, sensors, {k: np.asarray(v, np.float64) for k, v in values.items()},
                        timeout, nb), problems


def _neighbours(spec: FaultSpec, registry: SensorRegistry, sensors: IntArray) -> IntArray:
    """Up to `neighbours` nearest subjects of the same kind within `radius_km`, -1 padded."""
    from scipy.spatial import cKDTree

    k = spec.neighbours
    out = np.full((sensors.shape[0], k), -1, np.int64)
    if sensors.shape[0] < 2:
        return out
    lat0 = float(np.mean([registry.sensors[int(i)].lat for i in sensors]))
    kx = 111.32 * math.cos(math.radians(lat0))
    xy = np.asarray([(registry.sensors[int(i)].lon * kx, registry.sensors[int(i)].lat * 111.32)
                     for i in sensors])
    kinds = [registry.sensors[int(i)].kind for i in sensors]
    for kind in set(kinds):
        members = np.flatnonzero(np.asarray(kinds) == kind)
        if members.shape[0] < 2:
            continue
        tree = cKDTree(xy[members])
        kk = min(k + 1, members.shape[0])
        dist, idx = tree.query(xy[members], k=kk, distance_upper_bound=spec.radius_km)
        dist, idx = dist.reshape(members.shape[0], kk), idx.reshape(members.shape[0], kk)
        for row, (d, ix) in enumerate(zip(dist, idx, strict=True)):
            me = members[row]
            near = [int(members[j]) for dd, j in zip(d, ix, strict=True)
                    if np.isfinite(dd) and j < members.shape[0] and members[j] != me][:k]
            out[me, :len(near)] = near
    return out
