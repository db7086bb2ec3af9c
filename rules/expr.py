"""The two small languages inside rule files: durations and threshold expressions.

Durations: a number of seconds, or ``"90s"``, ``"15m"``, ``"3h"``, ``"1d"``, ``"500ms"``, or
a sum of such parts such as ``"1h30m"``.

Thresholds: a number, or a reference to a sensor's registry parameter with at most one
operation: ``"$warning_level"``, ``"$warning_level - 0.3"``, ``"$warning_level + 0.5"``,
``"$historical_max * 0.9"``. Each sensor resolves the reference from its own ``params``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")
_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_EXPR = re.compile(rf"^\s*\$([A-Za-z_][A-Za-z0-9_]*)\s*(?:([-+*])\s*({_NUM}))?\s*$")


def parse_duration_ms(text: str | float | int) -> int:
    """Milliseconds of a duration; raises ValueError with the accepted forms."""
    if isinstance(text, bool):
        raise ValueError("a duration is a number of seconds or text like 90s, 15m, 3h, 1d")
    if isinstance(text, int | float):
        if not math.isfinite(text):
            raise ValueError("a duration must be a finite number of seconds")
        if text < 0:
            raise ValueError("a duration must not be negative")
        return round(text * 1000)
    s = text.strip().replace(" ", "")
    total, pos = 0.0, 0
    for m in _PART.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_MS[m.group(2)]
        pos = m.end()
    if not s or pos != len(s):
        raise ValueError(
            f"cannot read duration {text!r}; use seconds or text like 90s, 15m, 3h, 1d, 1h30m"
        )
    if not math.isfinite(total):
        raise ValueError(f"duration {text[:40]!r} is too long to count")
    return round(total)


@dataclass(frozen=True)
class Threshold:
    """A constant, or `$param op operand` resolved per sensor."""

    const: float | None = None
    param: str | None = None
    op: str = ""
    operand: float = 0.0

    @classmethod
    def parse(cls, raw: str | float | int) -> Threshold:
        if isinstance(raw, bool):
            raise ValueError("a threshold is a number or an expression like '$warning_level - 0.3'")
        if isinstance(raw, int | float):
            return cls(const=float(raw))
        try:
            return cls(const=float(raw))
        except ValueError:
            pass
        m = _EXPR.match(raw)
        if not m:
            raise ValueError(
                f"cannot read threshold {raw!r}; use a number, '$name', or '$name - 0.3', "
                "'$name + 0.3', '$name * 0.9' (name: a parameter of the sensor)"
            )
        return cls(param=m.group(1), op=m.group(2) or "", operand=float(m.group(3) or 0.0))

    def resolve(self, params: dict[str, float]) -> float:
        """The threshold for one sensor; KeyError names a missing parameter."""
        if self.const is not None:
            return self.const
        assert self.param is not None
        base = params[self.param]
        if self.op == "-":
            return base - self.operand
        if self.op == "+":
            return base + self.operand
        if self.op == "*":
            return base * self.operand
        return base

    def __str__(self) -> str:
        if self.const is not None:
            return f"{self.const:g}"
        return f"${self.param}" + (f" {self.op} {self.operand:g}" if self.op else "")
