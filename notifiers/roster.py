"""The duty roster (值班表): who holds a role at a region node at a given time.

The region registry names each node's standing contacts (often the duty room's own phone);
the roster says which person is on duty now. A node and role the roster covers are reached
through whoever's shift it is; where the roster has a gap, or does not cover a node and role
at all, the registry's contacts stand in, so a warning never goes nowhere because a
spreadsheet was late. Times in the file are Beijing time (Asia/Shanghai, UTC+8 all year).

    people:                       # people who are not contacts in the region registry
      - {id: P-ZHANG, name: 张伟, phone: 138-0000-1001, channels: [console, webhook]}
    shifts:
      - {node: '440106', role: duty_officer, start: '2024-07-01 08:00',
         end: '2024-07-01 20:00', contacts: [P-ZHANG]}
      - {node: '440106001', role: duty_officer, daily: '20:00-08:00',
         first_day: 2024-07-01, last_day: 2024-07-31, contacts: [TH-S01-DUTY]}
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ews.regions import Contact, RegionRegistry, Role
from ews.yamlfile import ConfigError, Problem, load_yaml, validate_doc
from notifiers.templates import BEIJING

log = logging.getLogger(__name__)

_DAILY_RE = re.compile(r"^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$")


def _beijing(v: Any) -> Any:
    """'2024-07-01 08:00' (or a YAML timestamp) as an aware datetime; naive means Beijing."""
    if isinstance(v, str):
        try:
            v = datetime.fromisoformat(v.strip())
        except ValueError:
            raise ValueError(f"not a date and time like '2024-07-01 08:00': {v!r}") from None
    if isinstance(v, date) and not isinstance(v, datetime):
        v = datetime.combine(v, time())
    if isinstance(v, datetime) and v.tzinfo is None:
        v = v.replace(tzinfo=BEIJING)
    return v


class Person(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    name: str
    phone: str | None = None
    email: str | None = None
    wecom: str | None = None
    channels: list[str] = Field(default_factory=lambda: ["console", "webhook"])


class Shift(BaseModel):
    model_config = ConfigDict(extra="forbid")
    node: str
    role: Role
    contacts: list[str] = Field(min_length=1)
    # a single stretch of time ...
    start: datetime | None = None
    end: datetime | None = None
    # ... or the same hours every day from first_day to last_day (an end before the start
    # runs into the next morning)
    daily: str | None = None
    first_day: date | None = None
    last_day: date | None = None

    @field_validator("start", "end", mode="before")
    @classmethod
    def _times(cls, v: Any) -> Any:
        return _beijing(v)

    @field_validator("daily")
    @classmethod
    def _daily(cls, v: str | None) -> str | None:
        if v is not None:
            m = _DAILY_RE.match(v.strip())
            if not m or int(m[1]) > 23 or int(m[3]) > 24 or int(m[2]) > 59 or int(m[4]) > 59:
                raise ValueError(f"daily hours look like '08:00-20:00', not {v!r}")
        return v

    @model_validator(mode="after")
    def _shape(self) -> Shift:
        once = self.start is not None or self.end is not None
        daily = self.daily is not None or self.first_day is not None or self.last_day is not None
        if once == daily:
            raise ValueError("a shift has either start and end, or daily with first_day and last_day")
        if once:
            if self.start is None or self.end is None or not self.start < self.end:
                raise ValueError("a shift needs a start before its end")
        elif self.daily is None or self.first_day is None or self.last_day is None:
            raise ValueError("a daily shift needs daily, first_day and last_day")
        elif self.last_day < self.first_day:
            raise ValueError("last_day is before first_day")
        return self

    def covers(self, at: datetime) -> bool:
        """`at` is an aware datetime in Beijing time."""
        if self.start is not None and self.end is not None:
            return self.start <= at < self.end
        assert self.daily is not None and self.first_day is not None and self.last_day is not None
        m = _DAILY_RE.match(self.daily.strip())
        assert m is not None
        begin = timedelta(hours=int(m[1]), minutes=int(m[2]))
        finish = timedelta(hours=int(m[3]), minutes=int(m[4]))
        if finish <= begin:
            finish += timedelta(days=1)
        today = at.date()
        # a night shift that began yesterday may still be running
        for day in (today - timedelta(days=1), today):
            if self.first_day <= day <= self.last_day:
                midnight = datetime.combine(day, time(), BEIJING)
                if midnight + begin <= at < midnight + finish:
                    return True
        return False


class RosterFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    people: list[Person] = Field(default_factory=list)
    shifts: list[Shift] = Field(default_factory=list)


@dataclass(frozen=True)
class _Entry:
    shift: Shift
    contacts: tuple[Contact, ...]


class Roster:
    def __init__(self, entries: dict[tuple[str, str], list[_Entry]]):
        self._entries = entries
        self._gaps_logged: set[tuple[str, str, int]] = set()

    @classmethod
    def empty(cls) -> Roster:
        return cls({})

    @classmethod
    def load(cls, path: str | Path, regions: RegionRegistry) -> Roster:
        doc = load_yaml(path)
        if doc.data is None:
            raise ConfigError([Problem(doc.file, None, "", "file is empty")])
        f = validate_doc(RosterFile, doc)
        known: dict[str, Contact] = {}
        for node in regions.nodes.values():
            for c in node.contacts:
                known.setdefault(c.id, c)
        people = {p.id: p for p in f.people}
        problems: list[Problem] = []
        entries: dict[tuple[str, str], list[_Entry]] = {}
        for i, s in enumerate(f.shifts):
            if s.node not in regions:
                problems.append(Problem(doc.file, doc.line_of(("shifts", i, "node")),
                                        f"shifts[{i}].node", f"region {s.node} is not in the region registry"))
                continue
            contacts = []
            for j, cid in enumerate(s.contacts):
                if cid in people:
                    p = people[cid]
                    contacts.append(Contact(id=p.id, name=p.name, role=s.role, phone=p.phone,
                                            email=p.email, wecom=p.wecom, channels=list(p.channels)))
                elif cid in known:
                    contacts.append(known[cid].model_copy(update={"role": s.role}))
                else:
                    problems.append(Problem(
                        doc.file, doc.line_of(("shifts", i, "contacts", j)), f"shifts[{i}].contacts[{j}]",
                        f"{cid} is neither in people nor a contact in the region registry",
                    ))
            entries.setdefault((s.node, s.role), []).append(_Entry(s, tuple(contacts)))
        if problems:
            raise ConfigError(problems)
        return cls(entries)

    def contacts(self) -> list[tuple[str, Contact]]:
        """(node, contact) of every shift, each contact once per node."""
        seen: dict[tuple[str, str], Contact] = {}
        for (node, _), entries in self._entries.items():
            for e in entries:
                for c in e.contacts:
                    seen.setdefault((node, c.id), c)
        return [(node, c) for (node, _), c in seen.items()]

    def covers(self, node: str, role: str) -> bool:
        return (node, role) in self._entries

    def on_duty(self, node: str, role: str, at_ms: int) -> list[Contact] | None:
        """Contacts on shift for `role` at `node` at `at_ms`, each once; None when the roster
        does not say (no shift for this node and role, or a gap between shifts)."""
        entries = self._entries.get((node, role))
        if not entries:
            return None
        at = datetime.fromtimestamp(at_ms / 1000, BEIJING)
        out: dict[str, Contact] = {}
        for e in entries:
            if e.shift.covers(at):
                for c in e.contacts:
                    out.setdefault(c.id, c)
        if not out:
            hour = at_ms // 3_600_000
            if (node, role, hour) not in self._gaps_logged:
                self._gaps_logged.add((node, role, hour))
                log.warning("duty roster has nobody as %s at %s at %s; using the registry's contacts",
                            role, node, at.strftime("%Y-%m-%d %H:%M"))
            return None
        return list(out.values())
