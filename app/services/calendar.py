"""Business days in the office's calendar: Brazilian national holidays and those of the
office's state (the `holidays` library), plus the office's own closures, counted in the
office's time zone."""
from bisect import bisect_right
from datetime import date, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays
from sqlalchemy import select

from ..extensions import db
from ..models import OfficeClosure


@lru_cache(maxsize=256)
def _holidays(uf: str | None, year: int) -> frozenset[date]:
    """National holidays, plus the state's when `uf` is one the library knows."""
    subdiv = uf if uf in holidays.Brazil.subdivisions else None
    return frozenset(holidays.Brazil(subdiv=subdiv, years=year).keys())


def closures() -> frozenset[date]:
    return frozenset(db.session.execute(select(OfficeClosure.day)).scalars())


def _weekdays_after(first: date, last: date) -> int:
    """Monday-to-Friday days in (first, last]."""
    days = (last - first).days
    weeks, rest = divmod(days, 7)
    count = weeks * 5
    weekday = first.weekday()
    for i in range(1, rest + 1):
        if (weekday + i) % 7 < 5:
            count += 1
    return count


class BusinessCalendar:
    """The office's working days. Build one per request (`for_office`) and reuse it: the
    holidays of each year are computed once per process, closures read once per calendar."""

    def __init__(self, uf: str | None, tz: str, extra_closed: frozenset[date] = frozenset()):
        self.uf = uf
        self.tz = ZoneInfo(tz)
        self.extra_closed = frozenset(extra_closed)
        self._closed_weekdays: dict[int, list[date]] = {}

    @classmethod
    def for_office(cls):
        from .office import get_settings

        settings = get_settings()
        return cls(settings.uf, settings.time_zone, closures())

    def local_date(self, moment: datetime) -> date:
        return moment.astimezone(self.tz).date()

    def is_business_day(self, day: date) -> bool:
        return (day.weekday() < 5 and day not in _holidays(self.uf, day.year)
                and day not in self.extra_closed)

    def _closed_in_year(self, year: int) -> list[date]:
        """Sorted weekdays of `year` on which the office is closed (holiday or closure)."""
        closed = self._closed_weekdays.get(year)
        if closed is None:
            days = _holidays(self.uf, year) | {d for d in self.extra_closed if d.year == year}
            closed = self._closed_weekdays[year] = sorted(d for d in days if d.weekday() < 5)
        return closed

    def _closed_after(self, first: date, last: date) -> int:
        """Closed weekdays in (first, last]."""
        count = 0
        for year in range(first.year, last.year + 1):
            closed = self._closed_in_year(year)
            count += bisect_right(closed, last) - bisect_right(closed, first)
        return count

    def business_days_between(self, start: datetime, end: datetime) -> int:
        """Whole business days elapsed from `start` to `end`, in the office's zone.

        The day of `start` does not count; each business day after it up to the day of `end`
        does: a request sent on Friday afternoon has waited 1 business day on Monday.
        """
        first = self.local_date(start)
        last = self.local_date(end)
        if last <= first:
            return 0
        return _weekdays_after(first, last) - self._closed_after(first, last)
