"""SMS messages: every one recorded before it is queued, as emails are (models/jobs.py)."""
from ..extensions import db
from .types import UTCDateTime, utcnow


class SmsMessage(db.Model):
    """An SMS to one number (E.164), sent by the `send_sms` job (app/services/sms.py).

    `state` is `queued` until the gateway accepts it (`sent`, with the gateway's id in
    `provider_message_id`) or refuses it for good (`failed`). An attempt under way shows as
    `queued` with `attempts` already counted. The job reads `state` before sending, so a
    retried or re-enqueued job never sends a message already sent.
    """

    __tablename__ = "sms_message"

    STATES = ("queued", "sent", "failed")

    id = db.Column(db.Integer, primary_key=True)
    to = db.Column(db.String(16), nullable=False)  # E.164: "+" and at most 15 digits
    body = db.Column(db.Text, nullable=False)
    kind = db.Column(db.String(40), nullable=False)
    request_id = db.Column(db.Integer, db.ForeignKey("certificate_request.id"), index=True)
    state = db.Column(db.String(10), nullable=False, default="queued", index=True)
    attempts = db.Column(db.Integer, nullable=False, default=0)
    last_error = db.Column(db.Text)
    provider_message_id = db.Column(db.String(200))
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)
    sent_at = db.Column(UTCDateTime)

    request = db.relationship("CertificateRequest")
