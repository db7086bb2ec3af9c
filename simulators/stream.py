"""The stream of readings as it will be published: one row per message-to-be.

A simulation gives every sensor a reading every tick; faults then change values, drop rows,
add copies, shift timestamps and delay deliveries. Rows carry the timestamp in the payload
(`ts`, what the sensor claims) apart from when the row goes out (`send`, scenario time), so a
delayed or backfilled reading is sent late with its own old timestamp, and a skewed clock
stamps a wrong time on a reading sent on time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ews.sensors import SensorRegistry
from simulators.rainstorm import SimResult

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(slots=True)
class Stream:
    registry: SensorRegistry
    sensor: IntArray  # registry index
    ts: IntArray  # event time in the payload, epoch ms
    value: FloatArray
    battery: FloatArray  # % ; NaN: the message has no battery field
    send: IntArray  # when the message goes out, epoch ms of scenario time

    def __len__(self) -> int:
        return int(self.sensor.shape[0])

    @classmethod
    def from_result(cls, result: SimResult, battery: FloatArray | None = None) -> Stream:
        """Every reading of `result`, sent at its own timestamp, in time then sensor order."""
        flat = result.flat()
        bat = np.full(len(flat), np.nan) if battery is None else np.asarray(battery, np.float64).reshape(-1)
        return cls(result.sensors, flat.sensor, flat.ts_ms, flat.value, bat.copy(), flat.ts_ms.copy())

    @classmethod
    def of(
        cls, registry: SensorRegistry, sensor: IntArray, ts: IntArray, value: FloatArray,
        battery: FloatArray | None = None,
    ) -> Stream:
        n = sensor.shape[0]
        bat = np.full(n, np.nan) if battery is None else battery
        return cls(registry, sensor.astype(np.int64), ts.astype(np.int64), value.astype(np.float64),
                   bat.astype(np.float64), ts.astype(np.int64).copy()).in_send_order()

    def take(self, rows: IntArray | npt.NDArray[np.bool_]) -> Stream:
        return Stream(self.registry, self.sensor[rows], self.ts[rows], self.value[rows],
                      self.battery[rows], self.send[rows])

    def plus(self, other: Stream) -> Stream:
        return Stream(
            self.registry, np.concatenate([self.sensor, other.sensor]), np.concatenate([self.ts, other.ts]),
            np.concatenate([self.value, other.value]), np.concatenate([self.battery, other.battery]),
            np.concatenate([self.send, other.send]),
        )

    def in_send_order(self) -> Stream:
        # stable: rows sent at the same moment keep their order (a copy goes after its original)
        return self.take(np.argsort(self.send, kind="stable"))

    def shifted(self, offset_ms: int) -> Stream:
        """The same stream moved in time (payload timestamps and send times alike)."""
        return Stream(self.registry, self.sensor, self.ts + offset_ms, self.value, self.battery,
                      self.send + offset_ms)

    def send_groups(self) -> list[tuple[int, int]]:
        """[start, end) row ranges of rows sent at the same moment (the stream in send order)."""
        if len(self) == 0:
            return []
        cuts = np.flatnonzero(np.diff(self.send)) + 1
        starts = np.concatenate([[0], cuts])
        ends = np.concatenate([cuts, [len(self)]])
        return list(zip(starts.tolist(), ends.tolist(), strict=True))
