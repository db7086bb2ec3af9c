"""The region tree 区 → 街道 → 社区 with open warnings counted by level at every node.

A node counts the open warnings whose region lies in its subtree; its `level` is the highest
of them, which is the colour the dashboard paints it.
"""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any

from fastapi import APIRouter, Query

from ews.api.auth import ALL_REGIONS
from ews.api.deps import AppState, Caller, State, authorize, region_code
from ews.api.errors import not_found, responses
from ews.api.schemas import RegionsOut
from ews.levels import HAZARD_LEVELS, Level

router = APIRouter(prefix="/api/v1/regions", tags=["regions"])


def _tree(st: AppState, code: str, counts: dict[str, Counter[int]], unacked: Counter[str],
          sensors: Counter[str]) -> dict[str, Any]:
    node = st.ctx.regions.get(code)
    c = counts.get(code, Counter())
    top = max((lv for lv in c if c[lv] > 0), default=0)
    return {
        "code": node.code, "name": node.name, "tier": node.tier, "level": Level(top).key,
        "counts": {lv.key: int(c.get(int(lv), 0)) for lv in HAZARD_LEVELS},
        "unacknowledged": int(unacked.get(code, 0)), "sensors": int(sensors.get(code, 0)),
        "children": [_tree(st, ch, counts, unacked, sensors) for ch in node.children],
    }


def _prefixes(code: str) -> list[str]:
    return [code[:n] for n in (6, 9, 12) if n <= len(code)]


@router.get("", response_model=RegionsOut, responses=responses(401, 403, 404, 422))
def region_tree(
    st: State, p: Caller,
    root: Annotated[str | None, Query(description="region code to start from; default: the token's region")] = None,
) -> dict[str, Any]:
    code = region_code(root, "root")
    if code is not None:
        if code not in st.ctx.regions:
            raise not_found("region", code)
        authorize(st, p, "read", code)  # a tree shows siblings: only inside the token's region
    counts: dict[str, Counter[int]] = {}
    unacked: Counter[str] = Counter()
    for region, level, acknowledged in st.queries.open_levels():
        for prefix in _prefixes(region):
            counts.setdefault(prefix, Counter())[level] += 1
            if not acknowledged:
                unacked[prefix] += 1
    sensors: Counter[str] = Counter()
    for s in st.ctx.sensors.sensors:
        for prefix in _prefixes(s.community):
            sensors[prefix] += 1
    if code is not None:
        roots = [code]
    elif p.region == ALL_REGIONS:
        roots = [n.code for n in st.ctx.regions.nodes.values() if n.tier == "district"]
    elif p.region in st.ctx.regions:
        roots = [p.region]
    else:
        roots = []
    return {"regions": [_tree(st, r, counts, unacked, sensors) for r in roots]}
