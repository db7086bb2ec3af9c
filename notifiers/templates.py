"""Warning message texts rendered from per-language YAML templates.

Operators and the public read these messages, so wording lives in YAML (packaged zh-CN and
en, replaceable by a file) rather than in code. Times are shown in Beijing time.
"""

from __future__ import annotations

import string
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ews.levels import Level
from ews.yamlfile import ConfigError, Problem, load_yaml, validate_doc

# China has kept UTC+8 without daylight saving since 1991: a fixed offset is exact
BEIJING = timezone(timedelta(hours=8), "Asia/Shanghai")
TEMPLATE_DIR = Path(__file__).parent / "templates"
TransitionType = Literal["open", "raise", "lower", "resolve"]
FIELDS = ("region", "kind", "level", "measure", "value", "unit", "quantity", "time", "threshold")


class Messages(BaseModel):
    model_config = ConfigDict(extra="forbid")
    open: str
    raise_: str = Field(alias="raise")
    lower: str
    resolve: str


class TemplateSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    language: str
    drill_prefix: str = ""
    time_format: str = "%Y-%m-%d %H:%M"
    messages: Messages
    levels: dict[Literal["blue", "yellow", "orange", "red"], str]
    kinds: dict[str, str] = Field(default_factory=dict)
    measures: dict[str, str] = Field(default_factory=dict)
    units: dict[str, str] = Field(default_factory=dict)
    decimals: dict[str, int] = Field(default_factory=dict)


def beijing_time(ts_ms: int, fmt: str) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, BEIJING).strftime(fmt)


def _check_fields(spec: TemplateSpec, file: str, line_of: dict[str, int | None]) -> None:
    problems = []
    for name, text in (("open", spec.messages.open), ("raise", spec.messages.raise_),
                       ("lower", spec.messages.lower), ("resolve", spec.messages.resolve)):
        try:
            used = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
        except ValueError as exc:
            problems.append(Problem(file, line_of.get(name), f"messages.{name}", str(exc)))
            continue
        for f in used:
            if f.split(".")[0].split("[")[0] not in FIELDS:
                problems.append(Problem(
                    file, line_of.get(name), f"messages.{name}",
                    f"unknown field {{{f}}}; known: {', '.join(FIELDS)}",
                ))
    if problems:
        raise ConfigError(problems)


class Renderer:
    """Turns a warning transition into one line of text in the template's language."""

    def __init__(self, spec: TemplateSpec):
        self.spec = spec
        self._texts: dict[str, str] = {
            "open": spec.messages.open, "raise": spec.messages.raise_,
            "lower": spec.messages.lower, "resolve": spec.messages.resolve,
        }

    @property
    def language(self) -> str:
        return self.spec.language

    @classmethod
    def load(cls, language: str = "zh-CN", path: str | Path | None = None) -> Renderer:
        """The packaged templates for `language`, or a template file of one's own."""
        p = Path(path) if path is not None else TEMPLATE_DIR / f"{language}.yaml"
        if path is None and not p.is_file():
            raise ConfigError([Problem("(notifiers)", None, "language",
                                       f"no packaged message templates for {language!r}")])
        doc = load_yaml(p)
        spec = validate_doc(TemplateSpec, doc)
        lines = {k: doc.line_of(("messages", k)) for k in ("open", "raise", "lower", "resolve")}
        _check_fields(spec, doc.file, lines)
        return cls(spec)

    def quantity(self, value: float | None, unit: str) -> tuple[str, str]:
        """The value formatted with the unit's precision, and the unit's label."""
        label = self.spec.units.get(unit, unit)
        if value is None:
            return "-", label
        digits = self.spec.decimals.get(unit, 1)
        return f"{value:.{digits}f}", label

    def render(
        self,
        transition: TransitionType,
        *,
        region: str,
        kind: str,
        measure: str,
        unit: str,
        value: float | None,
        level: Level,
        event_ts_ms: int,
        drill: bool = False,
        threshold: float | None = None,
    ) -> str:
        """`level` is the new level, or for a resolve the level the warning had."""
        text, label = self.quantity(value, unit)
        thr = "-" if threshold is None else self.quantity(threshold, unit)[0]
        fields = {
            "region": region,
            "kind": self.spec.kinds.get(kind, kind),
            "level": self.spec.levels.get(level.key, level.key),  # type: ignore[call-overload]
            "measure": self.spec.measures.get(measure, measure),
            "value": text,
            "unit": label,
            "quantity": f"{text} {label}".rstrip(),
            "time": beijing_time(event_ts_ms, self.spec.time_format),
            "threshold": thr,
        }
        message = self._texts[transition].format(**fields)
        return f"{self.spec.drill_prefix}{message}" if drill else message
