"""Sensor and network faults, applied to the stream of readings as a scenario file lists them.

What each does to the rows of the selected sensors whose timestamp falls in its window
[`start`, `start` + `duration`) after the scenario starts (no duration: to the end):

- ``stuck``: the value freezes at the sensor's last reading before the window;
- ``dropout``: no messages at all;
- ``spikes``: `per_hour` readings (Poisson) jump by `magnitude` or to `value`;
- ``drift``: the value creeps by `per_hour` units an hour since the window opened;
- ``low_battery``: the battery field falls from `from_pct` to `to_pct`; with `dies`, the
  sensor is silent after the window;
- ``clock_skew``: the payload timestamp is off by `offset` (the message still goes out on time);
- ``duplicates``: a `fraction` of messages is sent twice, the copy `delay` later;
- ``out_of_order``: a `fraction` of messages is held back by `min_delay`..`max_delay`, so it
  arrives after newer ones;
- ``gateway_silent``: every sensor of a street (`street`, its gateway's area) is silent; with
  `backfill` the gateway delivers what it buffered when it comes back.

The order of application is fixed whatever the order in the file, as in a real device chain:
what the sensor measures (stuck, drift, spikes), its battery, what is lost on the way
(dropout, a dead battery, a silent gateway), its clock, then delivery (duplicates, delays).
Selections pick sensors by id, region code prefix and kind; `count` then draws that many of
them with the scenario seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field, model_validator

from simulators.spec import DurationMs, SignedDurationMs, Strict
from simulators.stream import Stream

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


class _Window(Strict):
    start: DurationMs = 0
    duration: DurationMs | None = None


class _SensorFault(_Window):
    sensors: list[str] | None = None
    region: str | None = None
    kind: str | None = None
    count: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _selects(self) -> _SensorFault:
        if self.sensors is None and self.region is None and self.kind is None:
            raise ValueError("select sensors by `sensors`, `region` and/or `kind`")
        return self


class Stuck(_SensorFault):
    type: Literal["stuck"]


class Dropout(_SensorFault):
    type: Literal["dropout"]


class Spikes(_SensorFault):
    type: Literal["spikes"]
    per_hour: float = Field(2.0, gt=0)
    magnitude: float | None = None
    value: float | None = None
    within_range: bool = True  # clip to the kind's valid range (False: test the rejection path)

    @model_validator(mode="after")
    def _how(self) -> Spikes:
        if (self.magnitude is None) == (self.value is None):
            raise ValueError("give exactly one of `magnitude` (added) or `value` (jumped to)")
        return self


class Drift(_SensorFault):
    type: Literal["drift"]
    per_hour: float


class LowBattery(_SensorFault):
    type: Literal["low_battery"]
    from_pct: float = Field(25.0, ge=0, le=100)
    to_pct: float = Field(0.0, ge=0, le=100)
    dies: bool = False


class ClockSkew(_SensorFault):
    type: Literal["clock_skew"]
    offset: SignedDurationMs


class Duplicates(_SensorFault):
    type: Literal["duplicates"]
    fraction: float = Field(0.05, gt=0, le=1)
    delay: DurationMs = 0


class OutOfOrder(_SensorFault):
    type: Literal["out_of_order"]
    fraction: float = Field(0.1, gt=0, le=1)
    min_delay: DurationMs = 0
    max_delay: DurationMs = 900_000

    @model_validator(mode="after")
    def _delays(self) -> OutOfOrder:
        if not 0 <= self.min_delay <= self.max_delay or self.max_delay == 0:
            raise ValueError("need 0 <= min_delay <= max_delay and a positive max_delay")
        return self


class GatewaySilent(_Window):
    type: Literal["gateway_silent"]
    street: str = Field(pattern=r"^\d{9}$")
    backfill: bool = False


Fault = Annotated[
    Stuck | Dropout | Spikes | Drift | LowBattery | ClockSkew | Duplicates | OutOfOrder | GatewaySilent,
    Field(discriminator="type"),
]
_STAGES: tuple[tuple[type, ...], ...] = (
    (Stuck, Drift, Spikes), (LowBattery,), (Dropout, GatewaySilent), (ClockSkew,), (Duplicates, OutOfOrder),
)


@dataclass
class Applied:
    """What a fault did: its place in the file, the sensors it hit, its window, rows touched."""

    index: int
    type: str
    sensors: list[str]
    start_ms: int
    end_ms: int
    rows: int = 0
    detail: dict[str, object] = field(default_factory=dict)


def select(fault: _SensorFault | GatewaySilent, stream: Stream, rng: np.random.Generator) -> IntArray:
    """Registry indices of the sensors a fault applies to."""
    reg = stream.registry
    if isinstance(fault, GatewaySilent):
        return np.array([i for i, s in enumerate(reg.sensors) if s.street == fault.street], np.int64)
    wanted = set(fault.sensors) if fault.sensors is not None else None
    picked = np.array([
        i for i, s in enumerate(reg.sensors)
        if (wanted is None or s.id in wanted)
        and (fault.region is None or s.community.startswith(fault.region))
        and (fault.kind is None or s.kind == fault.kind)
    ], np.int64)
    if fault.count is not None and fault.count < picked.shape[0]:
        picked = np.sort(rng.choice(picked, fault.count, replace=False))
    return picked


def apply_faults(
    stream: Stream, faults: list[Fault], start_ms: int, end_ms: int, seed: int
) -> tuple[Stream, list[Applied]]:
    """The stream with every fault applied, in send order, and what each fault did."""
    out = stream.take(np.arange(len(stream)))  # a copy: faults change arrays in place
    report: list[Applied] = []
    for stage in _STAGES:
        for index, fault in enumerate(faults):
            if not isinstance(fault, stage):
                continue
            rng = np.random.default_rng([seed, 0xFA, index])
            w0 = start_ms + fault.start
            w1 = end_ms + 1 if fault.duration is None else w0 + fault.duration
            sensors = select(fault, out, rng)
            applied = Applied(index, fault.type, [out.registry.sensors[int(i)].id for i in sensors], w0, w1)
            out = _apply(fault, out, sensors, w0, w1, rng, applied)
            report.append(applied)
    report.sort(key=lambda a: a.index)
    return out.in_send_order(), report


def _apply(
    fault: Fault, s: Stream, sensors: IntArray, w0: int, w1: int, rng: np.random.Generator, applied: Applied
) -> Stream:
    chosen = np.isin(s.sensor, sensors)
    inside = chosen & (s.ts >= w0) & (s.ts < w1)
    applied.rows = int(inside.sum())
    lo = np.array([s.registry.kinds[x.kind].min for x in s.registry.sensors])[s.sensor]
    hi = np.array([s.registry.kinds[x.kind].max for x in s.registry.sensors])[s.sensor]
    if isinstance(fault, Stuck):
        for i in sensors:
            own = s.sensor == i
            before = np.flatnonzero(own & (s.ts < w0))
            rows = np.flatnonzero(own & inside)
            if rows.size:
                held = s.value[before[np.argmax(s.ts[before])]] if before.size else s.value[rows[np.argmin(s.ts[rows])]]
                s.value[rows] = held
                applied.detail[s.registry.sensors[int(i)].id] = float(held)
    elif isinstance(fault, Drift):
        s.value[inside] = np.clip(s.value[inside] + fault.per_hour * (s.ts[inside] - w0) / 3_600_000,
                                  lo[inside], hi[inside])
    elif isinstance(fault, Spikes):
        hours = (w1 - w0) / 3_600_000
        hit: list[int] = []
        for i in sensors:
            rows = np.flatnonzero((s.sensor == i) & inside)
            n = min(int(rng.poisson(fault.per_hour * hours)), rows.size)
            if n:
                hit += rng.choice(rows, n, replace=False).tolist()
        rows_hit = np.array(sorted(hit), np.int64)
        jumped = s.value[rows_hit] + fault.magnitude if fault.magnitude is not None else np.full(
            rows_hit.size, float(fault.value or 0.0))
        s.value[rows_hit] = np.clip(jumped, lo[rows_hit], hi[rows_hit]) if fault.within_range else jumped
        applied.rows = int(rows_hit.size)
        applied.detail["ts"] = s.ts[rows_hit].tolist()
    elif isinstance(fault, LowBattery):
        span = max(w1 - w0, 1)
        frac = (s.ts[inside] - w0) / span
        s.battery[inside] = np.round(fault.from_pct + (fault.to_pct - fault.from_pct) * frac, 1)
        if fault.dies:
            return s.take(~(chosen & (s.ts >= w1)))
    elif isinstance(fault, Dropout):
        return s.take(~inside)
    elif isinstance(fault, GatewaySilent):
        if not fault.backfill:
            return s.take(~inside)
        s.send[inside] = np.maximum(s.send[inside], w1)
    elif isinstance(fault, ClockSkew):
        s.ts[inside] += fault.offset
    elif isinstance(fault, Duplicates):
        rows = np.flatnonzero(inside & (rng.uniform(0, 1, len(s)) < fault.fraction))
        copies = s.take(rows)
        copies.send = copies.send + fault.delay
        applied.rows = int(rows.size)
        return s.plus(copies)
    elif isinstance(fault, OutOfOrder):
        rows = np.flatnonzero(inside & (rng.uniform(0, 1, len(s)) < fault.fraction))
        s.send[rows] += rng.integers(fault.min_delay, fault.max_delay + 1, rows.size)
        applied.rows = int(rows.size)
    return s
