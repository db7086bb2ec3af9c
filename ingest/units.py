"""Unit normalisation: a reading's unit converted to its kind's unit, or rejected.

Units are grouped by quantity; within one quantity a unit is a power of ten of the base unit,
so conversion multiplies or divides by an exact power of ten (12 cm -> 0.12 m, never
0.12000000000000001). Units we know but of another quantity (mm/h for a rain gauge's mm,
ppm for a % LEL detector) are `unit_mismatch`; units we do not know at all are `unknown_unit`.
Names follow SenML (RFC 8428 / RFC 8798) where it has them: "m", "mm", "cm", "km".
"""

from __future__ import annotations

from ingest.reasons import Reason, Rejected

# unit -> (quantity, power of ten of the quantity's base unit)
UNITS: dict[str, tuple[str, int]] = {
    "m": ("length", 0),
    "cm": ("length", -2),
    "mm": ("length", -3),
    "km": ("length", 3),
    "%LEL": ("lel", 0),
    "flag": ("flag", 0),
    # known, so a mistake is reported as a mismatch rather than as an unknown unit
    "mm/h": ("length_rate", -3),
    "m/s": ("speed", 0),
    "ppm": ("fraction", -6),
    "%": ("percent", 0),
    "%RH": ("humidity", 0),
    "Cel": ("temperature", 0),
    "Pa": ("pressure", 0),
    "hPa": ("pressure", 2),
    "dB": ("level", 0),
    "V": ("voltage", 0),
    "dBm": ("power_level", 0),
}


class UnitTable:
    """Conversion of a reading's unit to a kind's unit, cached per (unit, kind unit)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], tuple[int, int]] = {}

    def convert(self, value: float, unit: str, kind_unit: str) -> float:
        if unit == kind_unit:
            return value
        key = (unit, kind_unit)
        rule = self._cache.get(key)
        if rule is None:
            rule = self._rule(unit, kind_unit)
            self._cache[key] = rule
        mul, div = rule
        return value * mul if div == 1 else value / div

    @staticmethod
    def _rule(unit: str, kind_unit: str) -> tuple[int, int]:
        src = UNITS.get(unit)
        if src is None:
            raise Rejected(Reason.UNKNOWN_UNIT, f"unit {unit[:20]!r} is not known; this kind reports {kind_unit}")
        dst = UNITS.get(kind_unit)
        if dst is None or src[0] != dst[0]:
            raise Rejected(Reason.UNIT_MISMATCH, f"unit {unit!r} cannot be converted to {kind_unit!r}")
        shift = src[1] - dst[1]
        # multiplying or dividing by an exact integer keeps the result correctly rounded
        return (10**shift, 1) if shift >= 0 else (1, 10**-shift)
