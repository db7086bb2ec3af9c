"""The points a test's readings became in InfluxDB, read back one by one."""

from __future__ import annotations

from collections.abc import Iterable

from ingest.influx_v1 import InfluxV1

Point = tuple[str, int, float]  # sensor, ts_ms, value


def stored(url: str, db: str, kinds: Iterable[str] = ("rain",)) -> list[Point]:
    """Every point of the measurements `kinds`; empty while InfluxDB does not answer (a fault
    test's server not back yet, a database the pipeline has not made yet)."""
    c = InfluxV1(url, db)
    out: list[Point] = []
    try:
        for k in kinds:
            for series in c.query(f'SELECT "value" FROM "{k}" GROUP BY "sensor"'):
                sid = series["tags"]["sensor"]
                out += [(sid, int(t), float(v)) for t, v in series["values"]]
    except Exception:
        return []
    finally:
        c.close()
    return out
