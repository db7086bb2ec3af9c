"""Which rule profiles are in force: chosen by hand, and by date (汛期 / non-flood season).

Profiles apply in this order, later ones replacing earlier rules of the same id: the
configuration's `rules_profile` (a regional variant such as guangdong), the calendar entries
whose date range holds today (a season), then the profiles chosen by hand for a special event.
Date ranges are month-day, inclusive at both ends, in Beijing time, and may wrap over the new
year (11-01 .. 02-28).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date, datetime, timedelta, timezone

BEIJING = timezone(timedelta(hours=8))
_MD = re.compile(r"^(\d{2})-(\d{2})$")


def month_day(text: str) -> tuple[int, int]:
    m = _MD.fullmatch(text)
    if not m:
        raise ValueError(f"{text!r} is not a month-day like 04-15")
    month, day = int(m.group(1)), int(m.group(2))
    date(2024, month, day)  # a leap year accepts 02-29; raises ValueError for 02-30, 13-01
    return month, day


def in_range(today: date, start: str, end: str) -> bool:
    a, b, d = month_day(start), month_day(end), (today.month, today.day)
    return a <= d <= b if a <= b else d >= a or d <= b


def beijing_today(now_s: float) -> date:
    return datetime.fromtimestamp(now_s, BEIJING).date()


def active_profiles(regional: str | None, calendar: Sequence[tuple[str, str, str]], manual: Sequence[str],
                    today: date) -> list[str]:
    """`calendar` holds (profile, from, to) entries."""
    out = [regional] if regional else []
    out += [p for p, a, b in calendar if in_range(today, a, b)]
    out += list(manual)
    return list(dict.fromkeys(out))
