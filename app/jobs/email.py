"""Email jobs: sending one recorded message, and the periodic sweep of unsent ones."""
from sqlalchemy import select

from . import job_context


def send_email_job(email_id: int):
    from ..services import email

    with job_context("send_email"):
        return email.send(email_id)


def sweep_unsent_emails(older_than_seconds: int | None = None):
    """Enqueue again every message still `queued` or `sending` whose job is gone (Redis was
    down when the message was recorded, or restarted empty). Safe to run often and from more
    than one place: a message whose job still waits or runs is left alone, and enqueueing is
    locked per message. Returns how many messages it looked at.

    `older_than_seconds` (default EMAIL_SWEEP_MIN_AGE_SECONDS) leaves young messages to the
    enqueue that follows their commit."""
    from datetime import timedelta

    from flask import current_app

    from ..extensions import db
    from ..models import EmailMessage, utcnow
    from ..services import email

    with job_context("sweep_unsent_emails"):
        if older_than_seconds is None:
            older_than_seconds = current_app.config["EMAIL_SWEEP_MIN_AGE_SECONDS"]
        limit = utcnow() - timedelta(seconds=older_than_seconds)
        ids = db.session.execute(
            select(EmailMessage.id).where(EmailMessage.status.in_(("queued", "sending")),
                                          EmailMessage.created_at <= limit)
            .order_by(EmailMessage.id)
        ).scalars().all()
        db.session.commit()  # do not hold a transaction (SQLite: the write lock) while enqueueing
        for email_id in ids:
            email.enqueue_send(email_id)
        return len(ids)
