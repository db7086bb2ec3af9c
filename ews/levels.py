"""The four warning levels (蓝/黄/橙/红, IV/III/II/I) and their names.

Levels are small integers so detectors can keep them in numpy arrays; 0 means "no warning".
"""

from __future__ import annotations

from enum import IntEnum


class Level(IntEnum):
    NONE = 0
    BLUE = 1
    YELLOW = 2
    ORANGE = 3
    RED = 4

    @property
    def key(self) -> str:
        """The contract name: none|blue|yellow|orange|red."""
        return self.name.lower()

    @property
    def zh(self) -> str:
        return _ZH[self]

    @property
    def roman(self) -> str:
        return _ROMAN[self]

    @classmethod
    def parse(cls, name: str) -> Level:
        try:
            return cls[name.strip().upper()]
        except KeyError:
            raise ValueError(
                f"unknown level {name!r}; expected one of blue, yellow, orange, red"
            ) from None


_ZH = {Level.NONE: "无", Level.BLUE: "蓝色", Level.YELLOW: "黄色", Level.ORANGE: "橙色", Level.RED: "红色"}
_ROMAN = {Level.NONE: "-", Level.BLUE: "IV", Level.YELLOW: "III", Level.ORANGE: "II", Level.RED: "I"}

HAZARD_LEVELS: tuple[Level, ...] = (Level.BLUE, Level.YELLOW, Level.ORANGE, Level.RED)
