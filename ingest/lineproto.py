"""InfluxDB line protocol, built in bulk from arrays of readings.

One measurement per kind; tags sensor, district, street, community (sorted by key, as InfluxDB
prefers); field `value` plus health fields when present; timestamp = event time in ms.
Per-sensor prefixes are built once. Numbers are formatted by orjson over whole arrays (its
float formatting is the shortest round-trip form, like `repr`, at a tenth of the cost), and a
numba-compiled loop lays prefix, value and time side by side into one buffer, each as one
`memcpy`: about 0.05 µs a reading (bench/decode.py), against 0.12 with numba's slice
assignments for the copies, 0.16 for a bytes join of three parts a line and 1.1 µs for an
f-string per line.

Readings of unregistered sensors (policy `store`) go to the measurement `unregistered` with a
`kind` tag, apart from the registered series that dashboards and rules read.

`read_lines` is the inverse, for the readings that wait in the spool: the rules' state is
rebuilt at start-up from InfluxDB and from the spool together.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import numpy.typing as npt
import orjson

from ews.compiled import copy_bytes, kernel
from ews.sensors import SensorRegistry

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
UNREGISTERED = "unregistered"
_NUMPY = orjson.OPT_SERIALIZE_NUMPY


def _escape_tag(s: str) -> str:
    return s.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def _json(a: npt.NDArray[np.generic]) -> npt.NDArray[np.uint8]:
    return np.frombuffer(orjson.dumps(np.ascontiguousarray(a), option=_NUMPY), np.uint8)


@kernel
def _number_end(numbers, j):  # type: ignore[no-untyped-def]
    """Index of the "," or "]" ending the JSON array's number that starts at `j`."""
    while numbers[j] != 44 and numbers[j] != 93:
        j += 1
    return j


@kernel
def _interleave(sensor, values, times, prefixes, offsets, out):  # type: ignore[no-untyped-def]
    """Line k: the prefix of sensor[k], the k-th number of the JSON array `values`, a space, the
    k-th number of `times`, a newline; returns the length written into `out`."""
    v = t = 1  # past each array's "["
    k = 0
    for r in range(sensor.shape[0]):
        a = offsets[sensor[r]]
        n = offsets[sensor[r] + 1] - a
        copy_bytes(out, k, prefixes, a, n)
        k += n
        e = _number_end(values, v)
        copy_bytes(out, k, values, v, e - v)
        k += e - v
        out[k] = 32
        k += 1
        v = e + 1
        e = _number_end(times, t)
        copy_bytes(out, k, times, t, e - t)
        k += e - t
        out[k] = 10
        k += 1
        t = e + 1
    return k


def _tags(measurement: str, community: str, sensor: str, kind: str | None = None) -> str:
    kind_tag = f",kind={_escape_tag(kind)}" if kind is not None else ""
    return (f"{_escape_tag(measurement)},community={_escape_tag(community)},district={community[:6]}"
            f"{kind_tag},sensor={_escape_tag(sensor)},street={community[:9]}")


class LineBuilder:
    def __init__(self, sensors: SensorRegistry):
        self.tags = [_tags(s.kind, s.community, s.id) for s in sensors.sensors]
        self.prefixes = [f"{t} value=".encode() for t in self.tags]
        self._plen = np.array([len(p) for p in self.prefixes], np.int64)
        self._poffs = np.concatenate([[0], np.cumsum(self._plen)]).astype(np.int64)
        self._pbuf = np.frombuffer(b"".join(self.prefixes), np.uint8)
        if self.prefixes:  # compiled code is loaded (or compiled) at the first call: here, not on the first batch
            self.build(np.zeros(1, np.int64), np.ones(1, np.int64), np.zeros(1, np.float64))

    def build(
        self, sensor: IntArray, ts_ms: IntArray, value: FloatArray,
        battery: FloatArray | None = None, rssi: FloatArray | None = None,
    ) -> bytes:
        n = int(sensor.shape[0])
        if n == 0:
            return b""
        if battery is not None or rssi is not None:
            plain = np.ones(n, np.bool_)
            if battery is not None:
                plain &= np.isnan(battery)
            if rssi is not None:
                plain &= np.isnan(rssi)
            if not plain.all():
                rich = np.flatnonzero(~plain)
                head = self.build(sensor[plain], ts_ms[plain], value[plain]) if plain.any() else b""
                return head + self._with_health(sensor[rich], ts_ms[rich], value[rich],
                                                None if battery is None else battery[rich],
                                                None if rssi is None else rssi[rich])
        values = _json(value)
        times = _json(ts_ms)
        out = np.empty(int(self._plen[sensor].sum()) + values.shape[0] + times.shape[0] + 2 * n, np.uint8)
        k = _interleave(np.ascontiguousarray(sensor), values, times, self._pbuf, self._poffs, out)
        return out[:k].tobytes()

    def _with_health(
        self, sensor: IntArray, ts_ms: IntArray, value: FloatArray,
        battery: FloatArray | None, rssi: FloatArray | None,
    ) -> bytes:
        out = []
        for k in range(int(sensor.shape[0])):
            fields = f"value={float(value[k])!r}"
            if battery is not None and math.isfinite(battery[k]):
                fields += f",battery={float(battery[k])!r}"
            if rssi is not None and math.isfinite(rssi[k]):
                fields += f",rssi={float(rssi[k])!r}"
            out.append(f"{self.tags[int(sensor[k])]} {fields} {int(ts_ms[k])}\n")
        return "".join(out).encode()


def unregistered_lines(rows: Sequence[tuple[str, str, str, int, float]]) -> bytes:
    """(sensor, kind, community, ts_ms, value) of unregistered sensors -> line protocol."""
    return "".join(
        f"{_tags(UNREGISTERED, community, sensor, kind)} value={float(v)!r} {int(ts)}\n"
        for sensor, kind, community, ts, v in rows
    ).encode()


def read_lines(lines: bytes) -> Iterator[tuple[str, str, int, float]]:
    """(measurement, sensor, ts_ms, value) of each line `LineBuilder` built, in order. Lines of
    unregistered sensors are left out, and so is any line not of this module's shape (a spool
    file is whole or absent, so that means a line written by something else)."""
    series: dict[bytes, tuple[str, str] | None] = {}  # a few hundred series key a spool's lines
    for line in lines.split(b"\n"):
        key, _, rest = line.partition(b" ")  # our tags and measurements never hold a space
        fields, _, ts = rest.rpartition(b" ")
        if not fields.startswith(b"value="):
            continue
        if key in series:
            ms = series[key]
        else:
            ms = series[key] = _series(key)
        if ms is None:
            continue
        try:
            yield ms[0], ms[1], int(ts), float(fields[6:].partition(b",")[0])
        except ValueError:
            continue


def _series(key: bytes) -> tuple[str, str] | None:
    if b"\\" in key:  # registered kinds and ids never need escaping
        return None
    measurement, *tags = key.decode("utf-8", "replace").split(",")
    sensor = next((t[7:] for t in tags if t.startswith("sensor=")), None)
    return None if sensor is None or measurement == UNREGISTERED else (measurement, sensor)
