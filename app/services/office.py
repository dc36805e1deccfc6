"""The office's settings row and its time zone."""
from datetime import datetime
from zoneinfo import ZoneInfo

from flask import current_app, g

from ..extensions import db
from ..models import OfficeSettings


def get_settings() -> OfficeSettings:
    """The one settings row, created with the configured defaults the first time."""
    settings = g.get("_office_settings") if _has_g() else None
    if settings is not None:
        return settings
    settings = db.session.get(OfficeSettings, 1)
    if settings is None:
        settings = OfficeSettings(id=1, time_zone=current_app.config["OFFICE_TIMEZONE"])
        db.session.add(settings)
        db.session.flush()
    if _has_g():
        g._office_settings = settings
    return settings


def _has_g():
    from flask import has_app_context

    return has_app_context()


def office_tz() -> ZoneInfo:
    return ZoneInfo(get_settings().time_zone)


def local_time(value: datetime) -> datetime:
    return value.astimezone(office_tz())
