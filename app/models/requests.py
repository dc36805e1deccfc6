from ..extensions import db
from .types import UTCDateTime, utcnow


class CertificateRequest(db.Model):
    """One certificate request, from creation to issuance. Its state changes only through
    `app.services.workflow`."""

    __tablename__ = "certificate_request"

    id = db.Column(db.Integer, primary_key=True)
    protocol = db.Column(db.String(10), nullable=False, unique=True)
    product_id = db.Column(db.Integer, db.ForeignKey("product.id"), nullable=False)
    holder_id = db.Column(db.Integer, db.ForeignKey("person.id"), nullable=False)
    company_id = db.Column(db.Integer, db.ForeignKey("company.id"))
    state = db.Column(db.String(30), nullable=False, index=True)
    origin = db.Column(db.String(20), nullable=False)  # "agent" or "public"
    assigned_agent_id = db.Column(db.Integer, db.ForeignKey("staff_user.id"), index=True)
    created_by_id = db.Column(db.Integer, db.ForeignKey("staff_user.id"))
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)
    state_changed_at = db.Column(UTCDateTime, nullable=False, default=utcnow, index=True)
    # Last thing the client did (opened a link, uploaded): drives reminders and expiry.
    last_client_activity_at = db.Column(UTCDateTime)
    reminder_sent_at = db.Column(UTCDateTime)
    # The revocation/installation password the client created in the call: an argon2 hash only.
    revocation_password_hash = db.Column(db.String(200))
    revocation_password_set_at = db.Column(UTCDateTime)

    product = db.relationship("Product")
    holder = db.relationship("Person", back_populates="requests", foreign_keys=[holder_id])
    company = db.relationship("Company")
    assigned_agent = db.relationship("StaffUser", foreign_keys=[assigned_agent_id])
    created_by = db.relationship("StaffUser", foreign_keys=[created_by_id])
    links = db.relationship("AccessLink", back_populates="request", order_by="AccessLink.id")

    __table_args__ = (db.Index("ix_certificate_request_state_changed", "state", "state_changed_at"),)


class AccessLink(db.Model):
    """A private link to a client's pages, bound to one request and one purpose.

    The token is HMAC(SECRET_KEY, nonce): the database alone does not reveal it, the server can
    show it again to staff, and lookups go by its SHA-256.
    """

    __tablename__ = "access_link"

    PURPOSES = ("documents", "conference", "issuance")

    id = db.Column(db.Integer, primary_key=True)
    request_id = db.Column(db.Integer, db.ForeignKey("certificate_request.id"), nullable=False, index=True)
    purpose = db.Column(db.String(20), nullable=False)
    nonce = db.Column(db.String(64), nullable=False)
    token_digest = db.Column(db.String(64), nullable=False, unique=True)
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)
    expires_at = db.Column(UTCDateTime, nullable=False)
    revoked_at = db.Column(UTCDateTime)
    last_used_at = db.Column(UTCDateTime)

    request = db.relationship("CertificateRequest", back_populates="links")
