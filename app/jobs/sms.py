"""SMS jobs: sending one recorded message, and the periodic sweep of unsent ones
(the same two as app/jobs/email.py; docs/sms.md)."""
from sqlalchemy import select

from . import job_context


def send_sms_job(sms_id: int):
    """RQ job `sms-<id>` (enqueued by `sms.enqueue_send`). Its only argument is the id: the
    number and the text stay in the database, out of Redis and out of the worker's log."""
    from ..services import sms

    with job_context("send_sms"):
        return sms.send(sms_id)


def sweep_unsent_sms(older_than_seconds: int | None = None):
    """Enqueue again every SMS still `queued` whose job is gone (Redis was down when it was
    recorded, or restarted empty). Safe to run often and from more than one place: a message
    whose job still waits, is scheduled for a retry or runs is left alone, and enqueueing is
    locked per message. Returns how many messages it looked at.

    `older_than_seconds` (default SMS_SWEEP_MIN_AGE_SECONDS, 60) leaves young messages to the
    enqueue that follows their commit."""
    from datetime import timedelta

    from flask import current_app

    from ..extensions import db
    from ..models import utcnow
    from ..models.sms import SmsMessage
    from ..services import sms

    with job_context("sweep_unsent_sms"):
        if older_than_seconds is None:
            older_than_seconds = sms.setting(current_app, "SMS_SWEEP_MIN_AGE_SECONDS", 60)
        limit = utcnow() - timedelta(seconds=older_than_seconds)
        ids = db.session.execute(
            select(SmsMessage.id).where(SmsMessage.state == "queued",
                                        SmsMessage.created_at <= limit)
            .order_by(SmsMessage.id)
        ).scalars().all()
        db.session.commit()  # do not hold a transaction (SQLite: the write lock) while enqueueing
        for sms_id in ids:
            sms.enqueue_send(sms_id)
        return len(ids)
