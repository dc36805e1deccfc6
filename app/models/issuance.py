"""After the call: the second check, the certificate, the termo, the signing credentials and
the certificate revocation lists.

The holder's private key never reaches the server: an `IssuedCertificate` holds only the
certificate the CA returned. The keys the office signs with (each agent's, the office seal's,
the local timestamp authority's) are `SigningCredential`s, kept as PKCS#8 encrypted with a
passphrase from the environment.
"""
from ..extensions import db
from .types import UTCDateTime, utcnow


class SecondCheck(db.Model):
    """One decision of a verifier on a request's dossier: approved or returned to the agent."""

    __tablename__ = "second_check"

    DECISIONS = ("approved", "returned")

    id = db.Column(db.Integer, primary_key=True)
    request_id = db.Column(db.Integer, db.ForeignKey("certificate_request.id"), nullable=False,
                           index=True)
    # The call the decision was about: a redone call needs a new decision.
    conference_id = db.Column(db.Integer, db.ForeignKey("conference.id"))
    verifier_id = db.Column(db.Integer, db.ForeignKey("staff_user.id"), nullable=False)
    decision = db.Column(db.String(10), nullable=False)
    reason = db.Column(db.Text)
    # Approval before the recording reached "concluído" needs an audited reason.
    recording_override = db.Column(db.Text)
    decided_at = db.Column(UTCDateTime, nullable=False, default=utcnow)

    request = db.relationship("CertificateRequest", backref=db.backref(
        "second_checks", order_by="SecondCheck.id"))
    verifier = db.relationship("StaffUser")
    conference = db.relationship("Conference")


class IssuedCertificate(db.Model):
    """A certificate the CA issued for a request (the public part only)."""

    __tablename__ = "issued_certificate"

    REVOCATION_REASONS = ("key_compromise", "loss", "theft", "superseded",
                          "cessation_of_operation", "unspecified")

    id = db.Column(db.Integer, primary_key=True)
    request_id = db.Column(db.Integer, db.ForeignKey("certificate_request.id"), nullable=False,
                           index=True)
    serial = db.Column(db.String(64), nullable=False, unique=True)  # lower-case hex
    subject = db.Column(db.String(500), nullable=False)
    not_before = db.Column(UTCDateTime, nullable=False)
    not_after = db.Column(UTCDateTime, nullable=False, index=True)
    fingerprint_sha256 = db.Column(db.String(64), nullable=False)
    der = db.Column(db.LargeBinary, nullable=False)
    chain_der = db.Column(db.JSON, nullable=False)  # base64 DER, issuing CA first
    ca_label = db.Column(db.String(120), nullable=False)
    homologation = db.Column(db.Boolean, nullable=False)
    # software (A1, key made in the holder's browser) | token (A3, CSR uploaded)
    key_storage = db.Column(db.String(20), nullable=False)
    issued_at = db.Column(UTCDateTime, nullable=False, default=utcnow)
    revoked_at = db.Column(UTCDateTime, index=True)
    revocation_reason = db.Column(db.String(30))
    revoked_by = db.Column(db.String(200))  # "titular" or the staff member's name

    request = db.relationship("CertificateRequest", backref=db.backref(
        "certificates", order_by="IssuedCertificate.id"))


class IssuanceAttempt(db.Model):
    """Wrong revocation passwords typed on the issuance or revocation pages of a request,
    counted per request so that trying from many addresses does not help."""

    __tablename__ = "issuance_attempt"

    id = db.Column(db.Integer, primary_key=True)
    request_id = db.Column(db.Integer, db.ForeignKey("certificate_request.id"), nullable=False,
                           unique=True)
    failed = db.Column(db.Integer, nullable=False, default=0)
    locked_until = db.Column(UTCDateTime)
    # Set once the holder typed the right password on the issuance page: the CSR step needs it.
    unlocked_at = db.Column(UTCDateTime)


class Termo(db.Model):
    """The termo de titularidade of an issued certificate and how far its signing went.

    draft → agent_signed → holder_signed (or holder_accepted, A3 with the password) → sealed.
    `sha256` is always the latest PDF; every earlier version stays in the storage and in the
    audit trail.
    """

    __tablename__ = "termo"

    STATES = ("agent_signed", "holder_signed", "holder_accepted", "sealed")

    id = db.Column(db.Integer, primary_key=True)
    request_id = db.Column(db.Integer, db.ForeignKey("certificate_request.id"), nullable=False,
                           index=True)
    certificate_id = db.Column(db.Integer, db.ForeignKey("issued_certificate.id"), nullable=False,
                               unique=True)
    state = db.Column(db.String(20), nullable=False)
    sha256 = db.Column(db.String(64), db.ForeignKey("stored_file.sha256"), nullable=False)
    # The holder's pending PAdES signature (app.pki.pades.ExternalSigning.to_json()).
    pending_signature = db.Column(db.JSON)
    holder_accepted_at = db.Column(UTCDateTime)
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)
    updated_at = db.Column(UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow)

    request = db.relationship("CertificateRequest", backref=db.backref(
        "termos", order_by="Termo.id"))
    certificate = db.relationship("IssuedCertificate", backref=db.backref("termo", uselist=False))
    file = db.relationship("StoredFile")


class SigningCredential(db.Model):
    """A certificate and its encrypted private key the office signs with: an agent's own
    (counter-signature of termos), the office seal, or the local timestamp authority."""

    __tablename__ = "signing_credential"

    PURPOSES = ("agent", "seal", "tsa")

    id = db.Column(db.Integer, primary_key=True)
    purpose = db.Column(db.String(10), nullable=False, index=True)
    staff_user_id = db.Column(db.Integer, db.ForeignKey("staff_user.id"), index=True)
    subject = db.Column(db.String(500), nullable=False)
    not_after = db.Column(UTCDateTime, nullable=False)
    certificate_der = db.Column(db.LargeBinary, nullable=False)
    chain_der = db.Column(db.JSON, nullable=False)  # base64 DER, issuer first
    encrypted_key = db.Column(db.LargeBinary, nullable=False)  # PKCS#8 PEM, encrypted
    active = db.Column(db.Boolean, nullable=False, default=True)
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)

    staff_user = db.relationship("StaffUser")


class RevocationList(db.Model):
    """Each CRL the built-in CA signed; the newest is served."""

    __tablename__ = "revocation_list"

    id = db.Column(db.Integer, primary_key=True)
    issuer = db.Column(db.String(20), nullable=False)  # "emissora" | "raiz"
    number = db.Column(db.Integer, nullable=False)
    this_update = db.Column(UTCDateTime, nullable=False)
    next_update = db.Column(UTCDateTime, nullable=False)
    der = db.Column(db.LargeBinary, nullable=False)

    __table_args__ = (db.UniqueConstraint("issuer", "number"),)
