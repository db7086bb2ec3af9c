"""Building blocks of scenario files: strict models, durations, places.

Durations are written as in rule files (``90s``, ``15m``, ``3h``, ``1h30m`` or seconds) and
held in milliseconds; a signed duration (``-10m``) is for clock offsets.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, model_validator

from rules.expr import parse_duration_ms


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _duration(v: Any) -> int:
    if isinstance(v, str | int | float) and not isinstance(v, bool):
        return parse_duration_ms(v)
    raise ValueError("a duration is a number of seconds or text like 90s, 15m, 3h, 1h30m")


def _signed_duration(v: Any) -> int:
    if isinstance(v, str) and v.strip().startswith("-"):
        return -parse_duration_ms(v.strip()[1:])
    if isinstance(v, int | float) and not isinstance(v, bool) and v < 0:
        return -parse_duration_ms(-v)
    return _duration(v)


DurationMs = Annotated[int, BeforeValidator(_duration)]
SignedDurationMs = Annotated[int, BeforeValidator(_signed_duration)]


class Location(Strict):
    """A place: a sensor's position, the centre of a region's sensors, or coordinates."""

    sensor: str | None = None
    region: str | None = None
    lat: float | None = None
    lon: float | None = None

    @model_validator(mode="after")
    def _one(self) -> Location:
        given = [self.sensor is not None, self.region is not None, self.lat is not None or self.lon is not None]
        if sum(given) != 1:
            raise ValueError("give exactly one of: sensor, region, or lat and lon")
        if (self.lat is None) != (self.lon is None):
            raise ValueError("give both lat and lon")
        return self
