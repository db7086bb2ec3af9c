"""Duty roster (值班表): a warning reaches whoever is on shift now, else the registry's contacts."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ews.levels import Level
from ews.regions import RegionRegistry
from ews.sensors import SensorRegistry
from ews.store import Store
from ews.yamlfile import ConfigError
from notifiers.roster import Roster
from notifiers.routing import Router
from tests.test_lifecycle import Clock, change, make_service, sent_to

BJ = timezone(timedelta(hours=8))
ROSTER = """\
people:
  - {id: P-ZHANG, name: 张伟, phone: 138-0000-1001, channels: [console, webhook]}
  - {id: P-LI, name: 李娜, phone: 138-0000-1002, channels: [console]}
  - {id: P-WANG, name: 王强, channels: [webhook]}
shifts:
  # the district duty desk: days and nights for three days
  - {node: '440106', role: duty_officer, daily: '08:00-20:00', first_day: 2024-11-27, last_day: 2024-11-29,
     contacts: [P-ZHANG]}
  - {node: '440106', role: duty_officer, daily: '20:00-08:00', first_day: 2024-11-27, last_day: 2024-11-29,
     contacts: [P-LI]}
  # street A: one afternoon covered by a named person and by the street's leader
  - {node: '440106001', role: duty_officer, start: '2024-11-28 12:00', end: '2024-11-28 14:00',
     contacts: [P-WANG, leader-440106001]}
"""


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=BJ).timestamp() * 1000)


@pytest.fixture
def roster(tmp_path: Path, mini_regions: RegionRegistry) -> Roster:
    p = tmp_path / "roster.yaml"
    p.write_text(ROSTER, encoding="utf-8")
    return Roster.load(p, mini_regions)


def test_orange_reaches_whoever_is_on_shift(
    tmp_path: Path, roster: Roster, mini_regions: RegionRegistry, mini_sensors: SensorRegistry
) -> None:
    at = ms("2024-11-28 13:40")
    clock = Clock(at)
    store = Store(tmp_path / "ews.sqlite")
    svc = make_service(store, mini_regions, mini_sensors, clock, channels=("console", "webhook"),
                       router=Router(mini_regions, roster=roster, clock=clock))
    svc.apply([change(Level.NONE, Level.ORANGE, 62.0, at)])
    community = ["duty_officer-440106001001", "grid_staff-440106001001"]
    # street A's duty officer role is held by P-WANG and the leader this afternoon (the
    # leader once, though also the street's leader); the district desk is P-ZHANG's day shift
    assert sent_to(store) == [
        ("transition", "open", [*community, "leader-440106001", "P-ZHANG"]),          # console
        ("transition", "open", [*community, "P-WANG", "leader-440106001", "P-ZHANG"]),  # webhook
    ]
    row = store.outbox()[1]
    vias = {r["id"]: (r["via"], r["role"]) for r in row["recipients"]}
    assert vias["P-WANG"] == ("roster", "duty_officer")
    assert vias["leader-440106001"] == ("roster", "duty_officer")
    assert vias["duty_officer-440106001001"] == ("registry", "duty_officer")


@pytest.mark.parametrize(("when", "district", "street"), [
    ("2024-11-28 07:59", ["P-LI"], ["duty_officer-440106001"]),          # the night shift from the 27th
    ("2024-11-28 08:00", ["P-ZHANG"], ["duty_officer-440106001"]),
    ("2024-11-28 13:59", ["P-ZHANG"], ["P-WANG", "leader-440106001"]),
    ("2024-11-28 14:00", ["P-ZHANG"], ["duty_officer-440106001"]),       # a gap: the registry stands in
    ("2024-11-29 23:30", ["P-LI"], ["duty_officer-440106001"]),
    ("2024-11-30 07:59", ["P-LI"], ["duty_officer-440106001"]),          # the last night ends in the morning
    ("2024-11-30 08:00", ["duty_officer-440106"], ["duty_officer-440106001"]),  # the roster has ended
])
def test_who_holds_the_duty_role_when(
    roster: Roster, mini_regions: RegionRegistry, when: str, district: list[str], street: list[str]
) -> None:
    router = Router(mini_regions, roster=roster)
    got = [r.id for r in router.recipients("440106001001", Level.ORANGE, at_ms=ms(when))]
    community = ["duty_officer-440106001001", "grid_staff-440106001001"]
    leader = [] if "leader-440106001" in street else ["leader-440106001"]
    assert got == community + street + leader + district


def test_escalation_goes_to_the_duty_officer_on_shift(
    tmp_path: Path, roster: Roster, mini_regions: RegionRegistry
) -> None:
    router = Router(mini_regions, roster=roster)
    assert [r.id for r in router.escalation_recipients("440106001001", 2, at_ms=ms("2024-11-28 21:00"))] == ["P-LI"]
    assert [r.id for r in router.failure_recipients("440106001001", at_ms=ms("2024-11-28 09:00"))] == ["P-ZHANG"]


@pytest.mark.parametrize(("old", "new", "where", "reason"), [
    ("[P-WANG, leader-440106001]", "[P-WANG, nobody]", "shifts[2].contacts[1]", "nobody is neither"),
    ("node: '440106001'", "node: '440106009'", "shifts[2].node", "not in the region registry"),
    ("start: '2024-11-28 12:00'", "start: '2024-11-28 15:00'", "shifts[2]", "start before its end"),
    ("daily: '08:00-20:00'", "daily: '8 to 20'", "shifts[0].daily", "08:00-20:00"),
    ("node: '440106001', role: duty_officer", "node: '440106001', role: captain", "shifts[2].role",
     "'duty_officer', 'leader'"),
])
def test_bad_roster_names_file_line_and_field(
    tmp_path: Path, mini_regions: RegionRegistry, old: str, new: str, where: str, reason: str
) -> None:
    assert ROSTER.count(old) == 1
    text = ROSTER.replace(old, new)
    line = next(n for n, t in enumerate(text.splitlines(), 1) if new in t)
    p = tmp_path / "roster.yaml"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        Roster.load(p, mini_regions)
    (problem,) = err.value.problems
    assert (problem.file, problem.line, problem.field) == (str(p), line, where)
    assert reason in str(problem)
