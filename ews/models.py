"""Shared models that cross module boundaries: accepted readings and level changes.

Readings travel as parallel numpy arrays (one batch, many sensors); level changes are the only
thing the rules engine hands to the warning lifecycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from ews.levels import Level

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass(slots=True)
class ReadingBatch:
    """Validated readings: sensor index (into the SensorRegistry), event time, value."""

    sensor: IntArray
    ts_ms: IntArray
    value: FloatArray
    drill: bool = False

    def __len__(self) -> int:
        return int(self.sensor.shape[0])

    @classmethod
    def empty(cls) -> ReadingBatch:
        return cls(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float64))

    @classmethod
    def of(cls, sensor: list[int], ts_ms: list[int], value: list[float], drill: bool = False) -> ReadingBatch:
        return cls(
            np.asarray(sensor, np.int64), np.asarray(ts_ms, np.int64), np.asarray(value, np.float64), drill
        )


@dataclass(slots=True)
class LevelChange:
    """A subject's level under one rule moved (NONE -> level opens, level -> NONE resolves)."""

    rule_id: str
    rule_version: str
    kind: str
    subject: str  # sensor id, or a region code for area rules and feed-down warnings
    community: str  # code of the subject's community (of the region itself for a region subject)
    measure: str  # what the value is, e.g. "rain_3h", "water_level", "gas"
    unit: str
    before: Level
    after: Level
    value: float
    threshold: float | None  # the threshold of `after` (or of `before` on resolve)
    event_ts_ms: int
    readings: list[tuple[int, float]] = field(default_factory=list)  # (ts_ms, value) that led here
    drill: bool = False
    rule_name: str = ""
    # forecast rules: when the threshold is expected to be crossed, and the lead that gives
    predicted_ts_ms: int | None = None
    lead_s: float | None = None
