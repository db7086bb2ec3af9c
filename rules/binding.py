"""Binding a rule to the sensors it selects, with each sensor's own thresholds.

Done once when rules or the registry change: the result is a dense array of the selected
sensors' registry indices and, per measure, a threshold array (n_subjects x 4 levels, NaN where
the level is absent), ready for the threshold detectors. A sensor that lacks a referenced
parameter, or whose resolved thresholds do not ascend, is skipped for that rule only and named
in the problems; the rest of the rule and the engine go on.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ews.levels import HAZARD_LEVELS, Level
from ews.sensors import Sensor, SensorRegistry
from rules.model import RuleSpec

N_LEVELS = len(HAZARD_LEVELS)
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass
class Binding:
    spec: RuleSpec
    sensors: IntArray  # registry indices of the subjects, in registry order
    thresholds: dict[str, FloatArray]  # measure -> (n_subjects, 4), NaN = level absent
    hysteresis: FloatArray  # (4,) per level

    @property
    def n_subjects(self) -> int:
        return int(self.sensors.shape[0])


def selects(spec: RuleSpec, sensor: Sensor) -> bool:
    sel = spec.select
    if sensor.kind != sel.kind:
        return False
    if sel.sensors is not None and sensor.id not in sel.sensors:
        return False
    if sel.regions and not any(sensor.community.startswith(c) for c in sel.regions):
        return False
    return all(sensor.tags.get(k) == v for k, v in sel.tags.items())


def _resolve(spec: RuleSpec, sensor: Sensor) -> tuple[dict[str, list[float]] | None, str | None]:
    rows: dict[str, list[float]] = {}
    for measure, by_level in spec.conditions.items():
        row = [float("nan")] * N_LEVELS
        for lvl, th in by_level.items():
            try:
                row[int(lvl) - 1] = th.resolve(sensor.params)
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


def bind(spec: RuleSpec, registry: SensorRegistry) -> tuple[Binding, list[str]]:
    problems: list[str] = []
    if spec.kind not in registry.kinds:
        problems.append(f"rule {spec.id}: kind {spec.kind!r} is not a known sensor kind "
                        f"({', '.join(sorted(registry.kinds))})")
    for sid in spec.select.sensors or []:
        if sid not in registry:
            problems.append(f"rule {spec.id}: sensor {sid} is not in the sensor registry")
        elif registry.get(sid).kind != spec.kind:
            problems.append(f"rule {spec.id}: sensor {sid} is of kind {registry.get(sid).kind}, "
                            f"not {spec.kind}")
    chosen: list[int] = []
    per_measure: dict[str, list[list[float]]] = {m: [] for m in spec.conditions}
    for idx, sensor in enumerate(registry.sensors):
        if not selects(spec, sensor):
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
    return Binding(spec, np.asarray(chosen, np.int64), thresholds, hyst), problems
