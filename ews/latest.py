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

from ews.models import ReadingBatch

NEVER = np.iinfo(np.int64).min


class LatestReadings:
    def __init__(self, n_sensors: int):
        self._lock = threading.Lock()
        self.ts_ms: npt.NDArray[np.int64] = np.full(n_sensors, NEVER, np.int64)
        self.value: npt.NDArray[np.float64] = np.full(n_sensors, np.nan, np.float64)
        self.seen_ms: npt.NDArray[np.int64] = np.full(n_sensors, NEVER, np.int64)

    def update(self, batch: ReadingBatch, now_ms: int) -> None:
        """Take the newest reading of each sensor in the batch (by event time; a late reading
        older than the one held only refreshes `seen_ms`)."""
        if len(batch) == 0:
            return
        sensor = np.asarray(batch.sensor, np.int64)
        ts = np.asarray(batch.ts_ms, np.int64)
        ok = (sensor >= 0) & (sensor < self.ts_ms.shape[0])
        sensor, ts, value = sensor[ok], ts[ok], np.asarray(batch.value, np.float64)[ok]
        if sensor.shape[0] == 0:
            return
        # the last row of each sensor after sorting by (sensor, ts) is its newest reading
        order = np.lexsort((ts, sensor))
        sensor, ts, value = sensor[order], ts[order], value[order]
        last = np.ones(sensor.shape[0], np.bool_)
        last[:-1] = sensor[1:] != sensor[:-1]
        s, t, v = sensor[last], ts[last], value[last]
        with self._lock:
            newer = t >= self.ts_ms[s]
            self.ts_ms[s[newer]] = t[newer]
            self.value[s[newer]] = v[newer]
            self.seen_ms[s] = now_ms

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
