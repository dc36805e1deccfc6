"""Business days: weekends, Brazilian national and state holidays, the office's closures, and
the office's time zone, on known dates."""
import random
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from app.models import OfficeClosure
from app.services.calendar import BusinessCalendar

SAO_PAULO = ZoneInfo("America/Sao_Paulo")


def local(y, m, d, hour=12, minute=0):
    """A moment in the office's zone (Brazil has had no daylight saving since 2019)."""
    return datetime(y, m, d, hour, minute, tzinfo=SAO_PAULO)


def sp(*closed):
    return BusinessCalendar("SP", "America/Sao_Paulo", frozenset(closed))


def rj(*closed):
    return BusinessCalendar("RJ", "America/Sao_Paulo", frozenset(closed))


def test_weekends_are_not_business_days():
    cal = sp()
    assert cal.is_business_day(date(2025, 3, 14))  # Friday
    assert not cal.is_business_day(date(2025, 3, 15))  # Saturday
    assert not cal.is_business_day(date(2025, 3, 16))  # Sunday
    # Sent on Friday, looked at on Monday: one business day (Monday), not three days.
    assert cal.business_days_between(local(2025, 3, 14, 16), local(2025, 3, 17, 9)) == 1
    assert cal.business_days_between(local(2025, 3, 15), local(2025, 3, 16)) == 0
    # The day it was sent does not count; the same day is zero.
    assert cal.business_days_between(local(2025, 3, 17, 8), local(2025, 3, 17, 18)) == 0
    assert cal.business_days_between(local(2025, 3, 17), local(2025, 3, 20)) == 3
    # A full week is five business days; an end before the start is zero.
    assert cal.business_days_between(local(2025, 3, 10), local(2025, 3, 17)) == 5
    assert cal.business_days_between(local(2025, 3, 17), local(2025, 3, 10)) == 0


def test_national_holidays():
    cal = sp()
    assert not cal.is_business_day(date(2025, 4, 21))  # Tiradentes, a Monday
    assert not cal.is_business_day(date(2025, 4, 18))  # Sexta-feira Santa
    assert not cal.is_business_day(date(2025, 12, 25))  # Natal, a Thursday
    assert not cal.is_business_day(date(2025, 1, 1))
    assert not cal.is_business_day(date(2025, 11, 20))  # Consciência Negra, national since 2024
    # Thursday before Easter → Tuesday after Tiradentes: Friday and Monday are holidays.
    assert cal.business_days_between(local(2025, 4, 17), local(2025, 4, 22)) == 1
    # Christmas Eve → the Friday after: only Friday counts.
    assert cal.business_days_between(local(2025, 12, 24), local(2025, 12, 26)) == 1
    # Across the new year: 31/12 (Wed) → 2/1 (Fri); 1/1 is a holiday.
    assert cal.business_days_between(local(2025, 12, 31), local(2026, 1, 2)) == 1


def test_state_holidays_follow_the_office_state():
    # 9 de julho (Revolução Constitucionalista) is a holiday in São Paulo only.
    assert not sp().is_business_day(date(2025, 7, 9))
    assert rj().is_business_day(date(2025, 7, 9))
    assert sp().business_days_between(local(2025, 7, 8), local(2025, 7, 10)) == 1
    assert rj().business_days_between(local(2025, 7, 8), local(2025, 7, 10)) == 2
    # 23 de abril (São Jorge) is a holiday in Rio de Janeiro only.
    assert not rj().is_business_day(date(2025, 4, 23))
    assert sp().is_business_day(date(2025, 4, 23))
    assert rj().business_days_between(local(2025, 4, 22), local(2025, 4, 24)) == 1
    assert sp().business_days_between(local(2025, 4, 22), local(2025, 4, 24)) == 2


def test_a_state_the_library_does_not_know_gets_national_holidays():
    cal = BusinessCalendar("XX", "America/Sao_Paulo")
    assert not cal.is_business_day(date(2025, 4, 21))
    assert cal.is_business_day(date(2025, 7, 9))


def test_office_closures():
    cal = sp(date(2025, 3, 19), date(2025, 12, 25), date(2025, 3, 22))
    assert not cal.is_business_day(date(2025, 3, 19))  # a Wednesday the office closed
    assert cal.business_days_between(local(2025, 3, 18), local(2025, 3, 20)) == 1
    assert sp().business_days_between(local(2025, 3, 18), local(2025, 3, 20)) == 2
    # A closure on a holiday or a weekend takes nothing more.
    assert cal.business_days_between(local(2025, 12, 24), local(2025, 12, 26)) == 1
    assert cal.business_days_between(local(2025, 3, 21), local(2025, 3, 24)) == 1


def test_counted_in_the_office_time_zone():
    cal = sp()
    # 02:30 UTC on Tuesday is still Monday 23:30 in São Paulo.
    sent = datetime(2025, 3, 11, 2, 30, tzinfo=timezone.utc)
    assert cal.local_date(sent) == date(2025, 3, 10)
    assert cal.business_days_between(sent, datetime(2025, 3, 11, 15, tzinfo=timezone.utc)) == 1
    # And an end at 01:00 UTC on Thursday is Wednesday evening: one day after Tuesday, not two.
    assert cal.business_days_between(local(2025, 3, 11),
                                      datetime(2025, 3, 13, 1, tzinfo=timezone.utc)) == 1
    # The same instants counted in UTC would say otherwise.
    utc = BusinessCalendar("SP", "UTC")
    assert utc.business_days_between(sent, datetime(2025, 3, 11, 15, tzinfo=timezone.utc)) == 0


def test_a_whole_year_in_sao_paulo():
    # 2025: 261 weekdays; holidays on weekdays in SP: 1/1, 18/4, 21/4, 1/5, 9/7, 20/11, 25/12.
    assert sp().business_days_between(local(2024, 12, 31), local(2025, 12, 31)) == 254
    assert rj().business_days_between(local(2024, 12, 31), local(2025, 12, 31)) == 254 + 1 - 2


def test_counting_agrees_with_walking_day_by_day():
    cal = sp(date(2024, 12, 24), date(2025, 3, 3), date(2026, 2, 16), date(2026, 2, 17))
    rng = random.Random(2)
    for _ in range(300):
        start = date(2023, 1, 1) + timedelta(days=rng.randrange(4 * 365))
        end = start + timedelta(days=rng.randrange(400))
        walked = sum(cal.is_business_day(start + timedelta(days=i))
                     for i in range(1, (end - start).days + 1))
        assert cal.business_days_between(local(start.year, start.month, start.day),
                                          local(end.year, end.month, end.day)) == walked


def test_the_office_calendar_reads_its_state_zone_and_closures(app, db):
    from app.services.office import get_settings

    settings = get_settings()
    settings.uf = "RJ"
    db.session.add(OfficeClosure(day=date(2025, 3, 19), description="Dedetização"))
    db.session.commit()
    cal = BusinessCalendar.for_office()
    assert cal.uf == "RJ" and cal.tz == SAO_PAULO
    assert not cal.is_business_day(date(2025, 3, 19))
    assert not cal.is_business_day(date(2025, 4, 23))  # São Jorge, RJ
    assert cal.is_business_day(date(2025, 7, 9))  # 9 de julho is São Paulo's
