"""Rules: the set in force with its version, and reloading it.

Reloading goes through the pipeline (`Pipeline.reload_rules`, the same path as the file
watcher): a set with any problem is refused with file, line and reason and the rules in force
stay; a good one replaces the engine between two batches with its state carried over.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from ews import metrics
from ews.api.deps import Caller, State, authorize, now_ms
from ews.api.errors import ApiError, responses
from ews.api.schemas import ReloadOut, RulesOut
from ews.yamlfile import ConfigError

router = APIRouter(prefix="/api/v1/rules", tags=["rules"])


def _threshold_text(t: Any) -> str | float:
    if getattr(t, "const", None) is not None:
        return float(t.const)
    text = f"${t.param}"
    if getattr(t, "op", ""):
        text += f" {t.op} {t.operand:g}"
    return text


def _rule_json(r: Any, subjects: dict[str, int]) -> dict[str, Any]:
    return {
        "id": r.id, "name": r.name, "kind": r.kind, "version": r.version, "file": r.file, "line": r.line,
        "profile": r.profile, "enabled": r.enabled, "description": r.description,
        "select": r.select.model_dump(exclude_none=True), "measure_type": r.measure_type,
        "windows_h": {m: ms / 3_600_000 for m, ms in r.windows_ms.items()},
        "conditions": {m: {lv.key: _threshold_text(t) for lv, t in by.items()} for m, by in r.conditions.items()},
        "hold_s": r.hold_ms / 1000, "subjects": subjects.get(r.id, 0),
    }


def _fault_json(f: Any, subjects: dict[str, int]) -> dict[str, Any]:
    return {"id": f.id, "name": f.name, "kind": f.kind, "version": f.version, "file": f.file, "line": f.line,
            "profile": f.profile, "detector": getattr(f, "detector", None),
            "level": f.level.key if hasattr(f.level, "key") else str(f.level), "subjects": subjects.get(f.id, 0)}


@router.get("", response_model=RulesOut, responses=responses(401))
def rules_in_force(st: State, p: Caller) -> dict[str, Any]:
    rs, engine = st.ctx.ruleset(), st.ctx.engine()
    subjects = {b.spec.id: int(b.n_subjects) for b in engine.bindings}
    subjects.update({fb.spec.id: int(fb.n_subjects) for fb in getattr(engine, "fault_bindings", [])})
    return {
        "version": rs.version, "profiles": list(rs.profiles), "files": list(rs.files),
        "rules": [_rule_json(r, subjects) for r in rs.rules],
        "faults": [_fault_json(f, subjects) for f in rs.faults],
        "bind_problems": list(engine.bind_problems),
    }


@router.post("/reload", response_model=ReloadOut, responses=responses(401, 403, 422))
def reload(st: State, p: Caller) -> dict[str, Any]:
    """Re-read the rule files (admin, with a token covering every region). A set with any
    problem is refused as a whole with file, line and reason; the rules in force stay."""
    authorize(st, p, "rules_reload", None, target="rules")
    before = st.ctx.ruleset().version
    try:
        out = st.ctx.reload_rules(p.name)
    except ConfigError as exc:
        metrics.RULES_RELOADS.labels("refused").inc()
        problems = [{"file": pr.file, "line": pr.line, "field": pr.field, "reason": pr.reason} for pr in exc.problems]
        st.ctx.store.audit(now_ms(), p.name, "rules.reload_refused", None, {"version": before, "problems": problems})
        raise ApiError(422, "rules_invalid", f"the rules were not reloaded: {exc.problems[0]}",
                       problems=problems) from None
    metrics.RULES_RELOADS.labels("ok").inc()
    after = st.ctx.ruleset().version
    st.ctx.store.audit(now_ms(), p.name, "rules.reload", None, {"version_before": before, "version_after": after})
    return {**out, "version_before": before, "version_after": after, "changed": before != after,
            "rules": len(st.ctx.ruleset().rules)}
