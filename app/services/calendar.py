"""Business days in the office's calendar: Brazilian national and state holidays (the
`holidays` library) plus the office's own closures."""
from datetime import date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays
from sqlalchemy import select

from ..extensions import db
from ..models import OfficeClosure


@lru_cache(maxsize=64)
def _holidays(uf: str, year: int) -> frozenset[date]:
    return frozenset(holidays.Brazil(subdiv=uf, years=year).keys())


def closures() -> frozenset[date]:
    return frozenset(db.session.execute(select(OfficeClosure.day)).scalars())


class BusinessCalendar:
    def __init__(self, uf: str, tz: str, extra_closed: frozenset[date] = frozenset()):
        self.uf = uf
        self.tz = ZoneInfo(tz)
        self.extra_closed = extra_closed

    @classmethod
    def for_office(cls):
        from .office import get_settings

        settings = get_settings()
        return cls(settings.uf, settings.time_zone, closures())

    def is_business_day(self, day: date) -> bool:
        return (day.weekday() < 5 and day not in _holidays(self.uf, day.year)
                and day not in self.extra_closed)

    def business_days_between(self, start: datetime, end: datetime) -> int:
        """Whole business days elapsed from `start` to `end`, in the office's zone.

        The day of `start` does not count; each business day after it up to `end` does.
        """
        first = start.astimezone(self.tz).date()
        last = end.astimezone(self.tz).date()
        if last <= first:
            return 0
        count = 0
        day = first + timedelta(days=1)
        while day <= last:
            if self.is_business_day(day):
                count += 1
            day += timedelta(days=1)
        return count
