"""The newest reading of every sensor: value, event time and when it arrived.

The duty dashboard and the sensors endpoint ask "what did this station last say, and when
did we last hear from it?" for thousands of sensors at once; the rules engine's windows only
hold sensors that rules are bound to, so the pipeline keeps this small table itself, as
numpy arrays indexed like the sensor registry. After a restart it is empty until readings
arrive, unless seeded from InfluxDB (`seed`).
"""

from __future__ import annotations

import threading

import numpy as np
import numpy.typing as npt

from ews.compiled import kernel
from ews.models import ReadingBatch

NEVER = np.iinfo(np.int64).min


class LatestReadings:
    def __init__(self, n_sensors: int):
        self._lock = threading.Lock()
        self.ts_ms: npt.NDArray[np.int64] = np.full(n_sensors, NEVER, np.int64)
        self.value: npt.NDArray[np.float64] = np.full(n_sensors, np.nan, np.float64)
        self.seen_ms: npt.NDArray[np.int64] = np.full(n_sensors, NEVER, np.int64)
        # compiled code is loaded (or compiled) at the first call: here, not on the first batch
        none = np.zeros(0, np.int64)
        _take_newest(self.ts_ms, self.value, self.seen_ms, none, none, np.zeros(0), 0)

    def update(self, batch: ReadingBatch, now_ms: int) -> None:
        """Take the newest reading of each sensor in the batch (by event time; of readings at
        the same time the last one; a late reading older than the one held only refreshes
        `seen_ms`)."""
        if len(batch) == 0:
            return
        sensor = np.ascontiguousarray(batch.sensor, np.int64)
        ts = np.ascontiguousarray(batch.ts_ms, np.int64)
        value = np.ascontiguousarray(batch.value, np.float64)
        with self._lock:
            _take_newest(self.ts_ms, self.value, self.seen_ms, sensor, ts, value, now_ms)

    def seed(self, index: int, ts_ms: int, value: float) -> None:
        """A reading read back from storage, for a sensor not heard from since start-up."""
        with self._lock:
            if ts_ms > self.ts_ms[index]:
                self.ts_ms[index] = ts_ms
                self.value[index] = value

    def get(self, index: int) -> tuple[int, float, int] | None:
        """(event time, value, arrival time) of the newest reading, or None: never seen.
        Arrival time is NEVER for a reading seeded from storage."""
        with self._lock:
            t = int(self.ts_ms[index])
            if t == NEVER:
                return None
            return t, float(self.value[index]), int(self.seen_ms[index])

    def snapshot(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.int64]]:
        with self._lock:
            return self.ts_ms.copy(), self.value.copy(), self.seen_ms.copy()


def take_newest_by_sorting(held_ts: npt.NDArray[np.int64], held_value: npt.NDArray[np.float64],
                           seen: npt.NDArray[np.int64], sensor: npt.NDArray[np.int64], ts: npt.NDArray[np.int64],
                           value: npt.NDArray[np.float64], now_ms: int) -> None:
    """`_take_newest` as whole-array numpy, the form it replaced: sorted by (sensor, time),
    stably, each sensor's last row. Tests hold the kernel to it; bench/rules.py times both."""
    ok = (sensor >= 0) & (sensor < held_ts.shape[0])
    sensor, ts, value = sensor[ok], ts[ok], value[ok]
    if sensor.shape[0] == 0:
        return
    order = np.lexsort((ts, sensor))
    sensor, ts, value = sensor[order], ts[order], value[order]
    last = np.ones(sensor.shape[0], np.bool_)
    last[:-1] = sensor[1:] != sensor[:-1]
    s, t, v = sensor[last], ts[last], value[last]
    newer = t >= held_ts[s]
    held_ts[s[newer]] = t[newer]
    held_value[s[newer]] = v[newer]
    seen[s] = now_ms


@kernel
def _take_newest(held_ts: npt.NDArray[np.int64], held_value: npt.NDArray[np.float64],
                 seen: npt.NDArray[np.int64], sensor: npt.NDArray[np.int64], ts: npt.NDArray[np.int64],
                 value: npt.NDArray[np.float64], now_ms: int) -> None:
    # one pass in batch order: a reading at or after the one held replaces it. The sort by
    # sensor and time it replaced was a tenth of what the rules thread spent on a gateway batch
    for i in range(sensor.shape[0]):
        s = sensor[i]
        if s < 0 or s >= held_ts.shape[0]:
            continue
        seen[s] = now_ms
        if ts[i] >= held_ts[s]:
            held_ts[s] = ts[i]
            held_value[s] = value[i]
