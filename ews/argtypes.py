"""Command-line numbers checked where argparse reads them, so a bad value is one line naming
the option (`ews simulate: error: argument --speed: ...`) instead of a traceback, a
division by zero, or a run that silently does nothing."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from datetime import datetime

from ews.hostport import split_listen
from notifiers.templates import BEIJING
from rules.expr import parse_duration_ms


def _number(text: str, kind: Callable[[str], float]) -> float:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {'a whole number' if kind is int else 'a number'}") from None


def positive(text: str) -> float:
    """A finite number above zero (rates, durations, hours)."""
    v = _number(text, float)
    if not math.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text!r}")
    return v


def speed(text: str) -> float:
    """Event seconds per wall second: above zero, or inf for as fast as possible."""
    v = _number(text, float)
    if math.isnan(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0 (inf: as fast as possible), got {text!r}")
    return v


def non_negative(text: str) -> float:
    v = _number(text, float)
    if not math.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of 0 or more, got {text!r}")
    return v


def fraction(text: str) -> float:
    v = _number(text, float)
    if not 0 <= v <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text!r}")
    return v


def count(text: str) -> int:
    """A whole number above zero (sensors)."""
    v = int(_number(text, int))
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be a whole number above 0, got {text!r}")
    return v


def whole(text: str) -> int:
    """A whole number of 0 or more (seeds, process counts where 0 means automatic)."""
    v = int(_number(text, int))
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number of 0 or more, got {text!r}")
    return v


def port(text: str) -> int:
    """A TCP port, or 0 for none."""
    v = int(_number(text, int))
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"must be a TCP port (1-65535) or 0, got {text!r}")
    return v


def duration_ms(text: str) -> int:
    """A duration as rule files write it (90s, 15m, 3h), in milliseconds."""
    try:
        return parse_duration_ms(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def beijing_ms(text: str) -> int:
    """'2024-07-01 08:00' (Beijing time unless an offset is given) -> epoch ms."""
    try:
        d = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time like '2024-07-01 08:00' (Beijing) or ISO 8601 with an offset") from None
    return int((d.replace(tzinfo=BEIJING) if d.tzinfo is None else d).timestamp() * 1000)


def listen(text: str) -> str:
    """host:port to serve on (host optional: 127.0.0.1)."""
    try:
        host, port = split_listen(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return f"{host}:{port}"
