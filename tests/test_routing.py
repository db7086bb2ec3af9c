"""Routing: who hears of a warning at each level, grouped per channel."""

from __future__ import annotations

from pathlib import Path

import pytest

from ews.levels import Level
from ews.regions import RegionFile, RegionRegistry
from ews.yamlfile import ConfigError
from notifiers.routing import Router, load_policy

COMM = "440106001001"


def _c(cid: str, role: str, channels: list[str] | None = None) -> dict[str, object]:
    d: dict[str, object] = {"id": cid, "name": cid, "role": role}
    if channels is not None:
        d["channels"] = channels
    return d


@pytest.fixture
def regions() -> RegionRegistry:
    doc = {"districts": [{
        "code": "440106", "name": "天河区",
        "contacts": [_c("D-duty", "duty_officer"), _c("D-lead", "leader"),
                     _c("D-led", "public", ["webhook"])],
        "streets": [{
            "code": "440106001", "name": "车陂街道",
            "contacts": [_c("S-duty", "duty_officer"), _c("S-grid", "grid_staff"),
                         _c("S-lead", "leader")],
            "communities": [
                {"code": COMM, "name": "东圃社区",
                 "contacts": [_c("C-duty", "duty_officer"), _c("C-lead", "leader"),
                              _c("C-grid", "grid_staff"), _c("C-grid2", "grid_staff", ["console"])]},
                {"code": "440106001002", "name": "车陂社区", "contacts": []},
            ],
        }],
    }]}
    return RegionRegistry.from_model(RegionFile.model_validate(doc))


def test_default_policy_recipients_per_level(regions: RegionRegistry) -> None:
    router = Router(regions)
    ids = {lv: [r.id for r in router.recipients(COMM, lv)] for lv in Level}
    assert ids[Level.NONE] == []
    assert ids[Level.BLUE] == ["C-duty", "C-grid", "C-grid2"]
    assert ids[Level.YELLOW] == ["C-duty", "C-grid", "C-grid2", "S-duty"]
    assert ids[Level.ORANGE] == ["C-duty", "C-grid", "C-grid2", "S-duty", "S-lead", "D-duty"]
    assert ids[Level.RED] == [
        "C-duty", "C-grid", "C-grid2", "S-duty", "S-lead", "D-duty", "D-lead",
        "D-led", "public:440106001001",
    ]


def test_public_and_internal_audiences_are_marked(regions: RegionRegistry) -> None:
    red = {r.id: r for r in Router(regions).recipients(COMM, Level.RED)}
    assert {i for i, r in red.items() if r.audience == "public"} == {"D-led", "public:440106001001"}
    assert red["public:440106001001"].channels == ("webhook",)
    assert (red["S-lead"].tier, red["S-lead"].region) == ("street", "440106001")


def test_plan_groups_recipients_per_channel(regions: RegionRegistry) -> None:
    plan = Router(regions).plan(COMM, Level.YELLOW, ["console", "webhook"])
    assert {ch: [r.id for r in rs] for ch, rs in plan.items()} == {
        "console": ["C-duty", "C-grid", "C-grid2", "S-duty"],
        "webhook": ["C-duty", "C-grid", "S-duty"],  # C-grid2 is reached on the console only
    }
    # channels that are not configured get no rows
    only_webhook = Router(regions).plan(COMM, Level.BLUE, ["webhook"])
    assert list(only_webhook) == ["webhook"]


def test_community_without_contacts_and_unknown_code(regions: RegionRegistry) -> None:
    router = Router(regions)
    assert [r.id for r in router.recipients("440106001002", Level.BLUE)] == []
    assert [r.id for r in router.recipients("440106001002", Level.YELLOW)] == ["S-duty"]
    assert router.recipients("999999999999", Level.RED) == []


def test_custom_policy_and_notify_on(tmp_path: Path, regions: RegionRegistry) -> None:
    p = tmp_path / "routing.yaml"
    p.write_text(
        "levels:\n"
        "  blue: []\n"
        "  yellow: [{tier: street, roles: [leader, duty_officer]}]\n"
        "  orange: [{tier: district, roles: [leader], channels: [console]}]\n"
        "  red: [{tier: community, roles: [grid_staff]}]\n"
        "notify_on: [open, resolve]\n",
        encoding="utf-8",
    )
    router = Router(regions, load_policy(p))
    assert router.recipients(COMM, Level.BLUE) == []
    # contact order in the node decides, not the order of roles in the policy
    assert [r.id for r in router.recipients(COMM, Level.YELLOW)] == ["S-duty", "S-lead"]
    orange = router.recipients(COMM, Level.ORANGE)
    assert [(r.id, r.channels) for r in orange] == [("D-lead", ("console",))]
    assert [router.notifies(t) for t in ("open", "raise", "lower", "resolve")] == [
        True, False, False, True
    ]


def test_bad_policy_names_file_line_and_field(tmp_path: Path) -> None:
    p = tmp_path / "routing.yaml"
    p.write_text(
        "levels:\n"
        "  blue: [{tier: community, roles: [duty_officer]}]\n"
        "  yellow: [{tier: street, roles: [captain]}]\n"
        "  orange: []\n"
        "  red: []\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as err:
        load_policy(p)
    (problem,) = err.value.problems
    assert (problem.file, problem.line) == (str(p), 3)
    assert problem.field.startswith("levels.yellow[0].roles")

    p.write_text("levels:\n  blue: []\n  yellow: []\n  red: []\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="orange"):
        load_policy(p)


def test_packaged_policy_has_drill_escalation_and_failure_audiences(regions: RegionRegistry) -> None:
    router = Router(regions)
    # a drill reaches the community's and the street's duty officers only, at any level
    for level in (Level.BLUE, Level.RED):
        assert [r.id for r in router.recipients(COMM, level, drill=True)] == ["C-duty", "S-duty"]
    assert [router.top_tier(COMM, lv) for lv in (Level.BLUE, Level.YELLOW, Level.ORANGE, Level.RED)] == [0, 1, 2, 2]
    assert router.top_tier(COMM, Level.RED, drill=True) == 1
    assert [r.id for r in router.escalation_recipients(COMM, 1)] == ["S-duty"]
    assert [r.id for r in router.escalation_recipients(COMM, 2)] == ["D-duty"]
    assert router.escalation_recipients(COMM, 3) == []
    assert [r.id for r in router.failure_recipients(COMM)] == ["D-duty"]


def test_bad_drill_section_names_file_line_and_field(tmp_path: Path) -> None:
    p = tmp_path / "routing.yaml"
    p.write_text(
        "levels: {blue: [], yellow: [], orange: [], red: []}\n"
        "drill:\n"
        "  - {tier: community, roles: [duty_officer]}\n"
        "  - {audience: public}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as err:
        load_policy(p)
    (problem,) = err.value.problems
    assert (problem.line, problem.field) == (4, "drill[1]")
    assert "public target names its channels" in problem.reason
