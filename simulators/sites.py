"""Where sensors are and what each site is like: flat km coordinates, stable per-site draws,
and the order of water-level stations along their rivers.

A site's character (a drain's capacity, a gauge's calibration, a kitchen's gas baseline) is
drawn from its sensor id, not from the scenario seed, so the same weak spots flood in every
drill and only the reading noise changes with the seed.
"""

from __future__ import annotations

import itertools
import math
import zlib
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from ews.sensors import SensorRegistry

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

KM_PER_DEG_LAT = 111.32


def site_fraction(ids: Sequence[str], what: str) -> FloatArray:
    """A stable number in [0, 1) per sensor id and property, the same on every run and machine."""
    return np.array([zlib.crc32(f"{what}:{i}".encode()) / 2**32 for i in ids], np.float64)


def site_uniform(ids: Sequence[str], what: str, bounds: tuple[float, float]) -> FloatArray:
    lo, hi = bounds
    return lo + (hi - lo) * site_fraction(ids, what)


def km_per_deg_lon(lat: float) -> float:
    return KM_PER_DEG_LAT * math.cos(math.radians(lat))


def xy_km(lat: FloatArray, lon: FloatArray, lat0: float, lon0: float) -> tuple[FloatArray, FloatArray]:
    """East and north km from (lat0, lon0); flat is exact enough across a district."""
    return (np.asarray(lon) - lon0) * km_per_deg_lon(lat0), (np.asarray(lat) - lat0) * KM_PER_DEG_LAT


def distance_km(lat: FloatArray, lon: FloatArray, lat0: float, lon0: float) -> FloatArray:
    x, y = xy_km(lat, lon, lat0, lon0)
    out: FloatArray = np.hypot(x, y)
    return out


class Sites:
    """Columns of a sensor registry as arrays, for the models."""

    def __init__(self, sensors: SensorRegistry):
        self.registry = sensors
        self.ids = [s.id for s in sensors.sensors]
        self.kinds = [s.kind for s in sensors.sensors]
        self.lat = np.array([s.lat for s in sensors.sensors], np.float64)
        self.lon = np.array([s.lon for s in sensors.sensors], np.float64)

    def __len__(self) -> int:
        return len(self.ids)

    def of_kind(self, kind: str) -> IntArray:
        return np.array([i for i, k in enumerate(self.kinds) if k == kind], np.int64)

    def ids_of(self, cols: IntArray) -> list[str]:
        return [self.ids[int(i)] for i in cols]

    def in_region(self, code: str) -> IntArray:
        return np.array(
            [i for i, s in enumerate(self.registry.sensors) if s.community.startswith(code)], np.int64
        )

    def centroid(self, cols: IntArray) -> tuple[float, float]:
        return float(self.lat[cols].mean()), float(self.lon[cols].mean())


def river_positions(sites: Sites, cols: IntArray, flow_bearing_deg: float) -> tuple[FloatArray, FloatArray]:
    """(km downstream of the river's first station, km upstream of its last) for each station.

    Stations are grouped by their `river` tag (untagged ones stand alone) and ordered along the
    direction the water flows (a compass bearing: Tianhe's 涌 flow south into the Pearl River,
    180°); distances follow the chain of stations, not the straight line.
    """
    rad = math.radians(flow_bearing_deg)
    ux, uy = math.sin(rad), math.cos(rad)
    lat0, lon0 = (float(sites.lat[cols].mean()), float(sites.lon[cols].mean())) if cols.size else (0.0, 0.0)
    x, y = xy_km(sites.lat[cols], sites.lon[cols], lat0, lon0)
    along = x * ux + y * uy
    rivers: dict[str, list[int]] = {}
    for j, i in enumerate(cols):
        s = sites.registry.sensors[int(i)]
        rivers.setdefault(s.tags.get("river", f"#{s.id}"), []).append(j)
    down = np.zeros(cols.size)
    up = np.zeros(cols.size)
    for members in rivers.values():
        order = sorted(members, key=lambda j: along[j])
        hops = [0.0] + [math.hypot(x[b] - x[a], y[b] - y[a]) for a, b in itertools.pairwise(order)]
        run = np.cumsum(hops)
        for j, d in zip(order, run, strict=True):
            down[j] = d
            up[j] = run[-1] - d
    return down, up
