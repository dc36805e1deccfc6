"""Email jobs."""
from sqlalchemy import select

from . import job_context


def send_email_job(email_id: int):
    from ..services import email

    with job_context("send_email"):
        return email.send(email_id)


def sweep_unsent_emails(older_than_seconds: int = 60):
    """Enqueue again every message still `queued` whose job is gone (Redis restarted empty, or
    it was down when the message was recorded). Safe to run often: enqueueing is idempotent."""
    from datetime import timedelta

    from ..extensions import db
    from ..models import EmailMessage, utcnow
    from ..services import email

    with job_context("sweep_unsent_emails"):
        limit = utcnow() - timedelta(seconds=older_than_seconds)
        ids = db.session.execute(
            select(EmailMessage.id).where(EmailMessage.status.in_(("queued", "sending")),
                                          EmailMessage.created_at < limit)
        ).scalars().all()
        for email_id in ids:
            email.enqueue_send(email_id)
        return len(ids)
