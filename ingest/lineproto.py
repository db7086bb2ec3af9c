"""InfluxDB line protocol, built in bulk from arrays of readings.

One measurement per kind; tags sensor, district, street, community (sorted by key, as InfluxDB
prefers); field `value` plus health fields when present; timestamp = event time in ms.
Per-sensor prefixes are built once, so a reading costs one string join.
"""

from __future__ import annotations

import math

from ews.sensors import SensorRegistry


def _escape_tag(s: str) -> str:
    return s.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


class LineBuilder:
    def __init__(self, sensors: SensorRegistry):
        self.prefixes = [
            f"{_escape_tag(s.kind)},community={s.community},district={s.district},"
            f"sensor={_escape_tag(s.id)},street={s.street} value="
            for s in sensors.sensors
        ]

    def build(
        self,
        sensor: list[int],
        ts_ms: list[int],
        value: list[float],
        battery: list[float | None] | None = None,
        rssi: list[float | None] | None = None,
    ) -> bytes:
        p = self.prefixes
        if battery is None and rssi is None:
            return "".join(
                f"{p[i]}{v!r} {t}\n" for i, t, v in zip(sensor, ts_ms, value, strict=True)
            ).encode()
        bat = battery or [None] * len(sensor)
        rs = rssi or [None] * len(sensor)
        out = []
        for i, t, v, b, r in zip(sensor, ts_ms, value, bat, rs, strict=True):
            extra = ""
            if b is not None and math.isfinite(b):
                extra += f",battery={b!r}"
            if r is not None and math.isfinite(r):
                extra += f",rssi={r!r}"
            out.append(f"{p[i]}{v!r}{extra} {t}\n")
        return "".join(out).encode()
