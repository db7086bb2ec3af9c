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
# fields each notice text may use; {message} is the warning's own message
NOTICE_FIELDS: dict[str, tuple[str, ...]] = {
    "remind": ("message", "count", "minutes"),
    "escalate": ("message", "minutes", "tier", "node"),
    "group": ("count", "time"),
    "group_item": ("index", "message"),
    "delivery_failed": ("message", "channel", "recipients", "attempts", "error", "time"),
}


class Messages(BaseModel):
    model_config = ConfigDict(extra="forbid")
    open: str
    raise_: str = Field(alias="raise")
    lower: str
    resolve: str


class Notices(BaseModel):
    """Texts of what the lifecycle sends besides transitions."""

    model_config = ConfigDict(extra="forbid")
    remind: str
    escalate: str
    group: str  # the first line of a grouped message; the items follow, one a line
    group_item: str
    delivery_failed: str


class TemplateSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    language: str
    drill_prefix: str = ""
    time_format: str = "%Y-%m-%d %H:%M"
    messages: Messages
    notices: Notices
    tiers: dict[Literal["community", "street", "district"], str] = Field(default_factory=dict)
    levels: dict[Literal["blue", "yellow", "orange", "red"], str]
    kinds: dict[str, str] = Field(default_factory=dict)
    measures: dict[str, str] = Field(default_factory=dict)
    units: dict[str, str] = Field(default_factory=dict)
    decimals: dict[str, int] = Field(default_factory=dict)
    # appended to an open or raise a forecast rule made; fields {predicted_time} {lead} {threshold}
    forecast: str = ""


def beijing_time(ts_ms: int, fmt: str) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, BEIJING).strftime(fmt)


def _check_fields(spec: TemplateSpec, file: str, line_of: dict[str, int | None]) -> None:
    problems = []
    texts: list[tuple[str, str, tuple[str, ...]]] = [(f"messages.{name}", text, FIELDS) for name, text in (
        ("open", spec.messages.open), ("raise", spec.messages.raise_),
        ("lower", spec.messages.lower), ("resolve", spec.messages.resolve))]
    texts += [(f"notices.{name}", getattr(spec.notices, name), known)
              for name, known in NOTICE_FIELDS.items()]
    for where, text, known in texts:
        line = line_of.get(where)
        try:
            used = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
        except ValueError as exc:
            problems.append(Problem(file, line, where, str(exc)))
            continue
        for f in used:
            if f.split(".")[0].split("[")[0] not in known:
                problems.append(Problem(
                    file, line, where, f"unknown field {{{f}}}; known: {', '.join(known)}",
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
        lines = {f"messages.{k}": doc.line_of(("messages", k)) for k in ("open", "raise", "lower", "resolve")}
        lines.update({f"notices.{k}": doc.line_of(("notices", k)) for k in NOTICE_FIELDS})
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
        predicted_ts_ms: int | None = None,
        lead_s: float | None = None,
    ) -> str:
        """`level` is the new level, or for a resolve the level the warning had; a forecast's
        predicted crossing time and lead, when given, add the template's `forecast` text."""
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
        if predicted_ts_ms is not None and self.spec.forecast and transition in ("open", "raise"):
            minutes = round((lead_s or 0.0) / 60)
            message += self.spec.forecast.format(
                predicted_time=beijing_time(predicted_ts_ms, self.spec.time_format),
                lead=str(minutes), threshold=f"{thr} {label}".rstrip())
        return f"{self.spec.drill_prefix}{message}" if drill else message

    def labelled(self, text: str, drill: bool) -> str:
        """`text` with the drill label in front, unless it already carries it."""
        prefix = self.spec.drill_prefix
        if drill and prefix and prefix not in text:
            return prefix + text
        return text

    def tier_name(self, tier: str) -> str:
        return self.spec.tiers.get(tier, tier)  # type: ignore[call-overload]

    def notice(self, name: str, *, drill: bool = False, **fields: object) -> str:
        """A notice text (remind, escalate, delivery_failed) with the drill label if needed."""
        text: str = getattr(self.spec.notices, name)
        return self.labelled(text.format(**fields), drill)

    def group(self, messages: list[str], now_ms: int, *, drill: bool = False) -> str:
        """One message listing several: a first line, then one line per item."""
        head = self.spec.notices.group.format(
            count=len(messages), time=beijing_time(now_ms, self.spec.time_format))
        items = [self.spec.notices.group_item.format(index=i, message=m)
                 for i, m in enumerate(messages, 1)]
        return self.labelled("\n".join([head, *items]), drill)

    def time(self, ts_ms: int) -> str:
        return beijing_time(ts_ms, self.spec.time_format)
