"""YAML loading that remembers where every value came from.

Operators edit rules, registries and configuration by hand; an error must name the file, the
line and the field. PyYAML's composer gives every node a start mark, so we walk the node tree
once, record the line of each path, and translate pydantic's error locations into lines.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

try:
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - libyaml missing
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

M = TypeVar("M", bound=BaseModel)
PathKey = tuple[str | int, ...]


@dataclass
class Problem:
    file: str
    line: int | None
    field: str
    reason: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.field or '(top level)'}: {self.reason}"


class ConfigError(Exception):
    """One or more problems in a hand-written file, each with file, line, field and reason."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass
class LoadedYaml:
    file: str
    data: Any
    lines: dict[PathKey, int] = field(default_factory=dict)

    def line_of(self, loc: Sequence[str | int]) -> int | None:
        """Line of the deepest known prefix of `loc` (pydantic locs can name missing keys)."""
        key = tuple(loc)
        while key:
            if key in self.lines:
                return self.lines[key]
            key = key[:-1]
        return self.lines.get((), None)


def _walk(node: yaml.Node, path: PathKey, lines: dict[PathKey, int]) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = k.value if isinstance(k, yaml.ScalarNode) else str(k.start_mark.line)
            _walk(v, (*path, key), lines)
            # point a key's errors at the key's line, not where its value block starts
            lines[(*path, key)] = k.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, (*path, i), lines)


def parse_yaml(text: str, file: str) -> LoadedYaml:
    try:
        node = yaml.compose(text, Loader=_Loader)
        data = yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise ConfigError([Problem(file, line, "", f"not valid YAML: {exc.problem}")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(file, None, "", f"not valid YAML: {exc}")]) from None
    lines: dict[PathKey, int] = {}
    if node is not None:
        _walk(node, (), lines)
    return LoadedYaml(file, data, lines)


def load_yaml(path: str | Path) -> LoadedYaml:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(str(p), None, "", f"cannot read file: {exc}")]) from None
    return parse_yaml(text, str(p))


def format_loc(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def validation_lines(exc: ValidationError, what: str) -> list[str]:
    """pydantic's errors as 'field: reason' (`what` where the whole object is wrong), for input
    that is no file: no URLs, no echoed input."""
    return [f"{format_loc(e['loc']) or what}: {e['msg']}" for e in exc.errors()]


def problems_from_validation(
    exc: ValidationError, doc: LoadedYaml, prefix: PathKey = ()
) -> list[Problem]:
    problems = []
    for err in exc.errors():
        # pydantic puts union member / validator names in loc; keep only real path parts
        loc = tuple(p for p in err["loc"] if isinstance(p, int) or not str(p).startswith(("function-", "union[")))
        full = (*prefix, *loc)
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling)"
        problems.append(Problem(doc.file, doc.line_of(full), format_loc(full), msg))
    return problems


def validate_doc(model: type[M], doc: LoadedYaml, data: Any = None, prefix: PathKey = ()) -> M:
    """Validate `data` (default: the whole document) into `model`, with file/line errors."""
    try:
        return model.model_validate(doc.data if data is None else data)
    except ValidationError as exc:
        raise ConfigError(problems_from_validation(exc, doc, prefix)) from None


def load_model(model: type[M], path: str | Path) -> M:
    doc = load_yaml(path)
    if doc.data is None:
        raise ConfigError([Problem(doc.file, None, "", "file is empty")])
    return validate_doc(model, doc)
