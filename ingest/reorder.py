"""A reorder buffer in front of the rules: deliveries out of order by less than `hold_s` (wall
time) reach the rules in event-time order, so they give the same warnings as in order.

The rules engine evaluates each reading at its own event time within a batch, whatever the
order inside it, but a reading older than one it has already evaluated for the same sensor is
only stored in its window, never evaluated (detectors do not go back in time). So readings
wait here: a reading is due `hold_s` after it arrived, and when some are due, every held
reading of the same sensor that is no newer than the newest due one goes with them, as one
batch. A reading that arrives within `hold_s` of a newer one of its sensor is therefore always
released with it or before it. The cost is `hold_s` of added latency to every warning.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ews.models import ReadingBatch


class ReorderBuffer:
    def __init__(self, hold_s: float, drill: bool = False):
        self.hold_s = hold_s
        self.drill = drill
        self._sensor = np.empty(0, np.int64)
        self._ts = np.empty(0, np.int64)
        self._value = np.empty(0, np.float64)
        self._due_at = np.empty(0, np.float64)

    def __len__(self) -> int:
        return int(self._sensor.shape[0])

    def add(self, batch: ReadingBatch, now: float) -> None:
        self._sensor = np.concatenate([self._sensor, batch.sensor])
        self._ts = np.concatenate([self._ts, batch.ts_ms])
        self._value = np.concatenate([self._value, batch.value])
        self._due_at = np.concatenate([self._due_at, np.full(len(batch), now + self.hold_s)])

    def next_due(self) -> float | None:
        return float(self._due_at.min()) if len(self) else None

    def release(self, now: float, everything: bool = False) -> ReadingBatch | None:
        if not len(self):
            return None
        if everything:
            go: npt.NDArray[np.bool_] = np.ones(len(self), np.bool_)
        else:
            due = self._due_at <= now
            if not due.any():
                return None
            newest = np.full(int(self._sensor.max()) + 1, np.iinfo(np.int64).min, np.int64)
            np.maximum.at(newest, self._sensor[due], self._ts[due])
            go = due | (self._ts <= newest[self._sensor])
        out = ReadingBatch(self._sensor[go], self._ts[go], self._value[go], self.drill)
        keep = ~go
        self._sensor, self._ts = self._sensor[keep], self._ts[keep]
        self._value, self._due_at = self._value[keep], self._due_at[keep]
        return out
