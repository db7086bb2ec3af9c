"""Checks that go beyond the schema, and the translation of rules into RuleSpec / FaultSpec.

Every problem names the exact field, so the operator is sent to the right line: unknown level
names, durations and thresholds that do not parse, conditions on measures the rule does not
define, constant thresholds that do not ascend with the level, forecasts of unknown measures,
fault-rule fields that do not apply to the chosen detector.
"""

from __future__ import annotations

import math
import re

from ews.levels import HAZARD_LEVELS, Level
from ews.regions import tier_of
from ews.yamlfile import LoadedYaml, PathKey, Problem, format_loc
from rules.expr import Threshold, parse_duration_ms
from rules.model import ANY_KIND, FaultIn, FaultSpec, Forecast, RuleIn, RuleSpec, Select

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_FACTOR_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*x\s*$")
VALUE = "value"
# A month: longer than any hazard window in use (rainfall totals to 72 h, 10-day flood-season
# sums), short enough that a typo like `999h` cannot ask for tens of gigabytes of window slots
MAX_DURATION_MS = 31 * 86_400_000


class _Report:
    def __init__(self, doc: LoadedYaml, prefix: PathKey):
        self.doc = doc
        self.prefix = prefix
        self.problems: list[Problem] = []

    def __call__(self, loc: PathKey, reason: str) -> None:
        full = (*self.prefix, *loc)
        self.problems.append(Problem(self.doc.file, self.doc.line_of(full), format_loc(full), reason))

    def duration(self, loc: PathKey, raw: str | float | int | None, default: int = 0) -> int:
        if raw is None:
            return default
        try:
            ms = parse_duration_ms(raw)
        except ValueError as exc:
            self(loc, str(exc))
            return default
        if ms > MAX_DURATION_MS:
            self(loc, f"{raw!r} is longer than {MAX_DURATION_MS // 86_400_000}d, the most a rule's time may be: "
                      "windows keep their readings in memory, and every start reads the longest back from InfluxDB")
            return default
        return ms


def _level(name: str) -> Level | None:
    try:
        lvl = Level.parse(name)
    except ValueError:
        return None
    return lvl if lvl in HAZARD_LEVELS else None


def _check_select(sel: Select, bad: _Report, any_kind: bool) -> None:
    if sel.kind == ANY_KIND and not any_kind:
        bad(("select", "kind"), "a hazard rule names one sensor kind ('*' is for fault rules)")
    for i, code in enumerate(sel.regions):
        if tier_of(code) is None:
            loc: PathKey = ("select", "region", i) if isinstance(sel.region, list) else (
                "select", "region")
            bad(loc, f"region {code!r} is not a 6-, 9- or 12-digit region code")


def _names(bad: _Report, where: str, raw: dict[str, object], taken: set[str]) -> dict[str, int]:
    """Named durations (windows, trends), checked as identifiers unique within the rule."""
    out: dict[str, int] = {}
    for name, d in raw.items():
        loc: PathKey = ("measure", where, name)
        if not _NAME_RE.fullmatch(name) or name == VALUE:
            bad(loc, f"measure name {name!r} must be an identifier other than 'value', e.g. rain_3h")
            continue
        if name in taken:
            bad(loc, f"measure name {name!r} is used twice in this rule")
            continue
        ms = bad.duration(loc, d, -1)  # type: ignore[arg-type]
        if ms == -1:
            continue
        if ms <= 0:
            bad(loc, "a window must be longer than zero")
            continue
        out[name] = ms
        taken.add(name)
    return out


def compile_rule(
    rule: RuleIn, doc: LoadedYaml, prefix: PathKey, version: str, profile: str | None
) -> tuple[RuleSpec | None, list[Problem]]:
    bad = _Report(doc, prefix)
    _check_select(rule.select, bad, any_kind=False)

    taken: set[str] = set()
    windows = _names(bad, "windows", dict(rule.measure.windows), taken)
    if rule.measure.type == "accumulation":
        if not rule.measure.windows:
            bad(("measure", "windows"), "an accumulation needs at least one window, e.g. rain_3h: 3h")
        measures = list(windows)
    else:
        if rule.measure.windows:
            bad(("measure", "windows"), "windows apply only to type: accumulation")
        measures = [VALUE]
    trends = _names(bad, "trends", dict(rule.measure.trends), taken)
    measures += list(trends)
    forecasts: dict[str, Forecast] = {}
    for name, fc in rule.measure.forecasts.items():
        loc: PathKey = ("measure", "forecasts", name)
        if not _NAME_RE.fullmatch(name) or name == VALUE or name in taken:
            bad(loc, f"forecast name {name!r} must be a new identifier, e.g. rain_3h_next_1h")
            continue
        horizon = bad.duration((*loc, "horizon"), fc.horizon, -1)
        fit = bad.duration((*loc, "fit"), fc.fit, -1)
        if horizon == -1 or fit == -1:
            continue
        if horizon <= 0 or fit <= 0:
            bad(loc, "horizon and fit must be longer than zero")
            continue
        if fc.of == VALUE and rule.measure.type == "value":
            pass
        elif fc.of in windows:
            if horizon > windows[fc.of]:
                bad((*loc, "horizon"), f"the horizon cannot exceed the window of {fc.of}")
                continue
        else:
            known = ", ".join(["value"] if rule.measure.type == "value" else list(windows))
            bad((*loc, "of"), f"cannot forecast {fc.of!r}; this rule can forecast {known}")
            continue
        forecasts[name] = Forecast(fc.of, horizon, fit)
        taken.add(name)
        measures.append(name)

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

    hold = bad.duration(("hold",), rule.hold)
    hold_exit = bad.duration(("hold_exit",), rule.hold_exit)

    area_k: tuple[int, float] = (0, 0.0)
    if rule.area is not None:
        area_k = _area_k(rule.area.k, bad)
    flap_within = 0
    if rule.flap is not None:
        flap_within = bad.duration(("flap", "within"), rule.flap.within)
        if flap_within <= 0:
            bad(("flap", "within"), "the flapping window must be longer than zero")

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
        hold_ms=hold,
        hold_exit_ms=hold_exit,
        version=version,
        file=doc.file,
        line=doc.line_of(prefix),
        profile=profile,
        description=rule.description,
        enabled=rule.enabled,
        trends_ms=trends,
        forecasts=forecasts,
        param_defaults=dict(rule.params),
        area_by=rule.area.by if rule.area is not None else None,
        area_k=area_k,
        flap_changes=rule.flap.changes if rule.flap is not None else 0,
        flap_within_ms=flap_within,
    )
    return spec, []


def _area_k(raw: int | str, bad: _Report) -> tuple[int, float]:
    if isinstance(raw, int):
        if raw < 1:
            bad(("area", "k"), "k must be at least 1")
        return raw, 0.0
    text = raw.strip()
    if text.endswith("%"):
        try:
            share = float(text[:-1]) / 100
        except ValueError:
            share = -1.0
        if 0 < share <= 1:
            return 0, share
    elif text.isdigit() and int(text) >= 1:
        return int(text), 0.0
    bad(("area", "k"), f"cannot read k {raw!r}; use a number of sensors (2) or a share ('50%')")
    return 0, 0.0


# which optional fields each fault detector takes (name in YAML -> required?)
_FAULT_FIELDS: dict[str, dict[str, bool]] = {
    "no_data": {"after": False, "feed_down": False},
    "stuck": {"for": True, "tolerance": False, "ignore": False, "min_readings": False,
              "clear_after": False},
    "spike": {"max_jump": True, "confirm": False, "clear_after": False},
    "out_of_range": {"min": False, "max": False, "clear_after": False},
    "drift": {"for": False, "tau": False, "radius_km": True, "neighbours": False,
              "min_neighbours": False, "min_level": False, "low": False, "high": False,
              "every": False, "clear_after": False},
}
_OPTIONAL = ("after", "feed_down", "for", "tolerance", "ignore", "min_readings", "max_jump",
             "confirm", "min", "max", "tau", "radius_km", "neighbours", "min_neighbours",
             "min_level", "low", "high", "every", "clear_after")


def compile_fault(
    rule: FaultIn, doc: LoadedYaml, prefix: PathKey, version: str, profile: str | None
) -> tuple[FaultSpec | None, list[Problem]]:
    bad = _Report(doc, prefix)
    _check_select(rule.select, bad, any_kind=True)
    allowed = _FAULT_FIELDS[rule.detector]
    given = rule.model_dump(by_alias=True, exclude_unset=True)
    for name in _OPTIONAL:
        if name in given and name not in allowed:
            bad((name,), f"{name} does not apply to detector {rule.detector} "
                f"(it takes {', '.join(allowed) or 'no options'})")
    for name, required in allowed.items():
        if required and given.get(name) is None:
            bad(("detector",), f"detector {rule.detector} needs `{name}`")
    level = _level(rule.level)
    if level is None:
        bad(("level",), f"unknown level {rule.level!r}; use blue, yellow, orange, red")

    params: dict[str, Threshold] = {}
    for name in ("tolerance", "max_jump", "min", "max"):
        raw = given.get(name)
        if raw is None:
            continue
        try:
            params[name] = Threshold.parse(raw)
        except ValueError as exc:
            bad((name,), str(exc))

    after_factor, after_ms = 0.0, 0
    if rule.detector == "no_data":
        raw_after = rule.after if rule.after is not None else "3x"
        m = _FACTOR_RE.match(raw_after) if isinstance(raw_after, str) else None
        if m:
            after_factor = float(m.group(1))
            if after_factor <= 0:
                bad(("after",), "the factor must be above zero")
        else:
            after_ms = bad.duration(("after",), raw_after, -1)
            if after_ms == 0:
                bad(("after",), "give a multiple of the kind's interval (3x) or a duration (20m)")
    duration = bad.duration(("for",), rule.for_)
    if rule.detector == "drift" and rule.for_ is None:
        duration = 3_600_000
    clear = bad.duration(("clear_after",), rule.clear_after, 1_800_000)
    tau = bad.duration(("tau",), rule.tau, 3 * 3_600_000)
    every = bad.duration(("every",), rule.every, 900_000)
    if rule.detector == "drift":
        if tau <= 0:
            bad(("tau",), "tau must be longer than zero")
        if rule.low is None and rule.high is None:
            bad(("detector",), "detector drift needs `low`, `high` or both (ratios to the "
                "neighbours' median)")
    if bad.problems:
        return None, bad.problems
    assert level is not None
    spec = FaultSpec(
        id=rule.id, name=rule.name or rule.id, detector=rule.detector, select=rule.select,
        level=level, version=version, file=doc.file, line=doc.line_of(prefix), profile=profile,
        description=rule.description, enabled=rule.enabled, clear_after_ms=clear, params=params,
        param_defaults=dict(rule.params), after_factor=after_factor, after_ms=after_ms,
        feed_fraction=rule.feed_down.fraction if rule.feed_down else 0.0,
        feed_min=rule.feed_down.min_sensors if rule.feed_down else 0,
        duration_ms=duration, ignore=tuple(rule.ignore or ()),
        min_readings=rule.min_readings or 3, confirm=rule.confirm or 3, tau_ms=tau,
        radius_km=rule.radius_km or 0.0, neighbours=rule.neighbours or 8,
        min_neighbours=rule.min_neighbours or 3, min_level=rule.min_level or 0.0,
        low=rule.low if rule.low is not None else 0.0,
        high=rule.high if rule.high is not None else math.inf, every_ms=every,
    )
    return spec, []
