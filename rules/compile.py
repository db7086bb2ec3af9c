"""Checks that go beyond the schema, and the translation of a rule into a RuleSpec.

Every problem names the exact field, so the operator is sent to the right line: unknown level
names, durations and thresholds that do not parse, conditions on measures the rule does not
define, constant thresholds that do not ascend with the level.
"""

from __future__ import annotations

import re

from ews.levels import HAZARD_LEVELS, Level
from ews.regions import tier_of
from ews.yamlfile import LoadedYaml, PathKey, Problem, format_loc
from rules.expr import Threshold, parse_duration_ms
from rules.model import RuleIn, RuleSpec

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
VALUE = "value"


class _Report:
    def __init__(self, doc: LoadedYaml, prefix: PathKey):
        self.doc = doc
        self.prefix = prefix
        self.problems: list[Problem] = []

    def __call__(self, loc: PathKey, reason: str) -> None:
        full = (*self.prefix, *loc)
        self.problems.append(Problem(self.doc.file, self.doc.line_of(full), format_loc(full), reason))


def _level(name: str) -> Level | None:
    try:
        lvl = Level.parse(name)
    except ValueError:
        return None
    return lvl if lvl in HAZARD_LEVELS else None


def compile_rule(
    rule: RuleIn, doc: LoadedYaml, prefix: PathKey, version: str, profile: str | None
) -> tuple[RuleSpec | None, list[Problem]]:
    bad = _Report(doc, prefix)

    for i, code in enumerate(rule.select.regions):
        if tier_of(code) is None:
            loc: PathKey = ("select", "region", i) if isinstance(rule.select.region, list) else (
                "select", "region")
            bad(loc, f"region {code!r} is not a 6-, 9- or 12-digit region code")

    windows: dict[str, int] = {}
    if rule.measure.type == "accumulation":
        if not rule.measure.windows:
            bad(("measure", "windows"), "an accumulation needs at least one window, e.g. rain_3h: 3h")
        for name, raw in rule.measure.windows.items():
            if not _NAME_RE.match(name) or name == VALUE:
                bad(("measure", "windows", name), f"window name {name!r} must be an identifier "
                    "other than 'value', e.g. rain_3h")
                continue
            try:
                windows[name] = parse_duration_ms(raw)
            except ValueError as exc:
                bad(("measure", "windows", name), str(exc))
                continue
            if windows[name] <= 0:
                bad(("measure", "windows", name), "a window must be longer than zero")
        measures = list(rule.measure.windows)
    else:
        if rule.measure.windows:
            bad(("measure", "windows"), "windows apply only to type: accumulation")
        measures = [VALUE]

    conditions: dict[str, dict[Level, Threshold]] = {}
    for lname, cond in rule.levels.items():
        lvl = _level(lname)
        if lvl is None:
            bad(("levels", lname), f"unknown level {lname!r}; use blue, yellow, orange, red")
            continue
        if not isinstance(cond, dict):
            if len(measures) != 1:
                bad(("levels", lname), "give the measure, e.g. {rain_3h: 50}: this rule has "
                    f"several ({', '.join(measures)})")
                continue
            cond = {measures[0]: cond}
        if not cond:
            bad(("levels", lname), "a level needs at least one condition")
        for mname, raw in cond.items():
            loc2: PathKey = ("levels", lname, mname) if isinstance(rule.levels[lname], dict) else (
                "levels", lname)
            if mname not in measures:
                bad(loc2, f"unknown measure {mname!r}; this rule measures {', '.join(measures)}")
                continue
            try:
                conditions.setdefault(mname, {})[lvl] = Threshold.parse(raw)
            except ValueError as exc:
                bad(loc2, str(exc))
    if not rule.levels:
        bad(("levels",), "a rule needs at least one level")

    # order the measures as declared, and check constant thresholds ascend per measure
    conditions = {m: dict(sorted(conditions[m].items())) for m in measures if m in conditions}
    for mname, by_level in conditions.items():
        prev: tuple[Level, float] | None = None
        for lvl, th in by_level.items():
            if th.const is None:
                continue
            if prev is not None and th.const <= prev[1]:
                loc3: PathKey = ("levels", lvl.key, mname) if isinstance(
                    rule.levels.get(lvl.key), dict) else ("levels", lvl.key)
                bad(loc3, f"threshold {th} for {lvl.key} must be above {prev[1]:g} of "
                    f"{prev[0].key} (levels ascend)")
            prev = (lvl, th.const)

    hysteresis: dict[Level, float] = {}
    if isinstance(rule.hysteresis, dict):
        for lname, h in rule.hysteresis.items():
            lvl = _level(lname)
            if lvl is None:
                bad(("hysteresis", lname), f"unknown level {lname!r}; use blue, yellow, orange, red")
            elif h < 0:
                bad(("hysteresis", lname), "hysteresis must not be negative")
            else:
                hysteresis[lvl] = float(h)
        hysteresis = {lvl: hysteresis.get(lvl, 0.0) for lvl in HAZARD_LEVELS}
    else:
        if rule.hysteresis < 0:
            bad(("hysteresis",), "hysteresis must not be negative")
        hysteresis = dict.fromkeys(HAZARD_LEVELS, float(rule.hysteresis))

    holds: list[int] = []
    for key in ("hold", "hold_exit"):
        try:
            holds.append(parse_duration_ms(getattr(rule, key)))
        except ValueError as exc:
            bad((key,), str(exc))
            holds.append(0)

    if bad.problems:
        return None, bad.problems
    spec = RuleSpec(
        id=rule.id,
        name=rule.name or rule.id,
        select=rule.select,
        measure_type=rule.measure.type,
        windows_ms=windows,
        conditions=conditions,
        hysteresis=hysteresis,
        hold_ms=holds[0],
        hold_exit_ms=holds[1],
        version=version,
        file=doc.file,
        line=doc.line_of(prefix),
        profile=profile,
        description=rule.description,
        enabled=rule.enabled,
    )
    return spec, []
