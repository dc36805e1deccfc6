from ..extensions import db
from .types import UTCDateTime, utcnow


class EmailMessage(db.Model):
    """Every email the system sends, recorded before it is queued.

    The send job checks `status` before talking to SMTP, so a retried job does not send twice,
    and the stable `message_id` lets a receiving server drop the one duplicate still possible.
    """

    __tablename__ = "email_message"

    STATUSES = ("queued", "sending", "sent", "failed")

    id = db.Column(db.Integer, primary_key=True)
    message_id = db.Column(db.String(200), nullable=False, unique=True)
    kind = db.Column(db.String(40), nullable=False)
    request_id = db.Column(db.Integer, db.ForeignKey("certificate_request.id"), index=True)
    to_address = db.Column(db.String(254), nullable=False)
    subject = db.Column(db.String(300), nullable=False)
    body_text = db.Column(db.Text, nullable=False)
    body_html = db.Column(db.Text, nullable=False)
    transport = db.Column(db.String(10))  # smtp | outbox, set when delivered
    status = db.Column(db.String(10), nullable=False, default="queued", index=True)
    attempts = db.Column(db.Integer, nullable=False, default=0)
    last_error = db.Column(db.Text)
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)
    sent_at = db.Column(UTCDateTime)
    job_id = db.Column(db.String(64))

    request = db.relationship("CertificateRequest")


class BackgroundJob(db.Model):
    """A row per RQ job (its id is the RQ job id), so the UI can show progress and retries."""

    __tablename__ = "background_job"

    id = db.Column(db.String(64), primary_key=True)
    name = db.Column(db.String(80), nullable=False)
    description = db.Column(db.String(300))
    request_id = db.Column(db.Integer, db.ForeignKey("certificate_request.id"), index=True)
    status = db.Column(db.String(12), nullable=False, default="queued")  # queued|running|done|failed
    attempts = db.Column(db.Integer, nullable=False, default=0)
    error = db.Column(db.Text)
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)
    started_at = db.Column(UTCDateTime)
    finished_at = db.Column(UTCDateTime)
