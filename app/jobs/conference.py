"""Periodic upkeep of the videoconference rooms."""
from . import job_context


def mark_no_shows():
    """End the scheduled rooms whose 30 minutes passed without the client (and without the
    agent starting the call): each becomes a no-show, its request goes back to scheduling and
    the client is emailed (`services.scheduling.mark_no_show`). Returns how many.

    Each room is handled in its own transaction with its rows locked and read again, so two
    runs at once (two cron schedulers) act once per room.
    """
    from ..extensions import db
    from ..services import scheduling

    with job_context("mark_no_shows"):
        ids = scheduling.no_show_candidates()
        db.session.commit()
        done = 0
        for conference_id in ids:
            if scheduling.mark_no_show(conference_id):
                done += 1
            db.session.commit()
        return done
