"""No data: a sensor that has not been heard from for longer than its timeout.

This is the one detector on wall-clock time: "heard from" is when a reading arrived, and the
check runs on a timer whether or not anything arrives (a deadman that only moves when data
comes, like Kapacitor's, cannot notice silence). It never produces a hazard level; the rules
engine turns it into a device-fault warning.

A sensor is silent when ``now - last_seen > timeout`` (a reading due exactly at the timeout is
still on time). When the engine starts, or when the whole feed comes back after an outage,
every sensor gets a full timeout from then (`grace`), so a restart or a broker outage is not
mistaken for a thousand dead sensors.
"""

from __future__ import annotations

import numpy as np

from detectors.windows import BoolArray, FloatArray, IntArray


class NoData:
    def __init__(self, timeout_ms: FloatArray, start_ms: int):
        self.timeout_ms = np.asarray(timeout_ms, np.float64)
        self.last_seen = np.full(self.timeout_ms.shape[0], int(start_ms), np.int64)

    def seen(self, subjects: IntArray, now_ms: int) -> None:
        self.last_seen[subjects] = np.maximum(self.last_seen[subjects], now_ms)

    def silent(self, now_ms: int) -> BoolArray:
        out: BoolArray = (now_ms - self.last_seen) > self.timeout_ms
        return out

    def grace(self, subjects: IntArray | BoolArray, now_ms: int) -> None:
        self.last_seen[subjects] = np.maximum(self.last_seen[subjects], now_ms)
