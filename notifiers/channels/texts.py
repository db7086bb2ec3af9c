"""Texts the channels wrap around a warning: robot messages, e-mail, SMS, device and CAP texts.

The warning sentence itself is rendered once by `notifiers.templates` and travels in the
notification; channels only frame it (title, region, time, warning number) in their own
format. Wording lives in `templates/channels.{language}.yaml` so it can be changed without code;
names of kinds, levels and measures are taken from the message templates, so they exist once.
"""

from __future__ import annotations

import string
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ews.levels import Level
from ews.yamlfile import ConfigError, Problem, load_yaml, validate_doc
from notifiers.channels.base import Notification
from notifiers.templates import TEMPLATE_DIR, Renderer, beijing_time

FIELDS = frozenset({
    "title", "message", "region", "community", "kind", "level", "transition", "time", "issued",
    "id", "subject", "measure", "quantity", "drill", "count",
})
GROUP_KEYS = ("text", "markdown", "card", "email_subject", "email_body")


class CapTexts(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event: str
    headline: str
    headline_cancel: str
    description: str
    drill_note: str
    instruction_cancel: str
    instructions: dict[str, dict[str, str]] = Field(default_factory=dict)
    instruction_default: str


class GroupTexts(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str
    markdown: str
    card: str
    email_subject: str
    email_body: str


class ChannelTextSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    language: str
    drill_label: str = ""
    time_format: str = "%Y-%m-%d %H:%M"
    transitions: dict[str, str]
    other_transition: str
    title: str
    titles: dict[str, str] = Field(default_factory=dict)  # per notice kind, instead of `title`
    group: GroupTexts
    text: str
    markdown: str
    card: str
    email_subject: str
    email_body: str
    sms: str
    display: str
    display_clear: str
    speaker: str
    cap: CapTexts


def _templates(spec: ChannelTextSpec) -> Iterator[tuple[tuple[str, ...], str]]:
    for key in ("title", "text", "markdown", "card", "email_subject", "email_body", "sms", "display",
                "display_clear", "speaker"):
        yield (key,), getattr(spec, key)
    for key in ("event", "headline", "headline_cancel", "description"):
        yield ("cap", key), getattr(spec.cap, key)
    for key in GROUP_KEYS:
        yield ("group", key), getattr(spec.group, key)
    for notice, text in spec.titles.items():
        yield ("titles", notice), text


def _check(spec: ChannelTextSpec, doc_file: str, line_of: Any) -> None:
    problems = []
    for path, text in _templates(spec):
        try:
            used = {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
        except ValueError as exc:
            problems.append(Problem(doc_file, line_of(path), ".".join(path), str(exc)))
            continue
        for f in sorted(used - FIELDS):
            problems.append(Problem(doc_file, line_of(path), ".".join(path),
                                    f"unknown field {{{f}}}; known: {', '.join(sorted(FIELDS))}"))
    if problems:
        raise ConfigError(problems)


class ChannelTexts:
    """Renders the channel texts of one language for a notification."""

    def __init__(self, spec: ChannelTextSpec, names: Renderer):
        self.spec = spec
        self.names = names

    @classmethod
    def load(cls, language: str = "zh-CN", path: str | Path | None = None) -> ChannelTexts:
        p = Path(path) if path is not None else TEMPLATE_DIR / f"channels.{language}.yaml"
        if path is None and not p.is_file():
            raise ConfigError([Problem("(channels)", None, "language",
                                       f"no packaged channel texts for {language!r}")])
        doc = load_yaml(p)
        spec = validate_doc(ChannelTextSpec, doc)
        _check(spec, doc.file, doc.line_of)
        return cls(spec, Renderer.load(language))

    @property
    def language(self) -> str:
        return self.spec.language

    def level_name(self, level_key: str) -> str:
        return self.names.spec.levels.get(level_key, level_key)  # type: ignore[call-overload]

    def kind_name(self, kind: str) -> str:
        return self.names.spec.kinds.get(kind, kind)

    def fields(self, note: Notification) -> dict[str, str]:
        """Every template field for `note`; a field the warning lacks renders as '-'."""
        w = note.warning
        region = w.get("region") or {}
        names = [str((region.get(t) or {}).get("name", "")) for t in ("district", "street", "community")]
        value = w.get("value")
        text, unit = self.names.quantity(None if value is None else float(value), str(w.get("unit", "")))
        event_ms, issued_ms = w.get("event_ts_ms"), w.get("issued_ts_ms")
        fmt = self.spec.time_format
        f = {
            "message": note.message,
            "region": " ".join(n for n in names if n) or str(w.get("subject", "-")),
            "community": names[2] or "-",
            "kind": self.kind_name(str(w.get("kind", "-"))),
            "level": self.level_name(str(w.get("level", "-"))),
            "transition": self.spec.transitions.get(note.transition, self.spec.other_transition),
            "time": beijing_time(int(event_ms), fmt) if event_ms is not None else "-",
            "issued": beijing_time(int(issued_ms), fmt) if issued_ms is not None else "-",
            "id": str(w.get("id", "-")),
            "subject": str(w.get("subject_name") or w.get("subject", "-")),
            "measure": self.names.spec.measures.get(str(w.get("measure", "")), str(w.get("measure", "-"))),
            "quantity": f"{text} {unit}".rstrip(),
            "drill": self.spec.drill_label if (note.drill or w.get("drill")) else "",
            "count": str(max(1, len(note.items))),
        }
        title = self.spec.titles.get(note.notice, self.spec.title)
        f["title"] = title.format(**f)
        return f

    def render(self, key: str, note: Notification) -> str:
        """One of the top-level texts (text, markdown, email_subject, sms, display, ...); a
        group has its own layouts for the keys in GROUP_KEYS."""
        template = getattr(self.spec.group, key) if note.notice == "group" and key in GROUP_KEYS \
            else getattr(self.spec, key)
        return str(template).format(**self.fields(note))

    def instruction(self, kind: str, level: Level) -> str:
        per_kind = self.spec.cap.instructions.get(kind, {})
        return per_kind.get(level.key, self.spec.cap.instruction_default)


@cache
def packaged(language: str) -> ChannelTexts:
    """The packaged texts, loaded once per process and language."""
    return ChannelTexts.load(language)
