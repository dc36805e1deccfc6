from ..extensions import db
from .types import UTCDateTime, utcnow


class AuditEvent(db.Model):
    """An append-only audit record, chained to the previous one by SHA-256.

    `hash` covers every other column and `prev_hash`, so an edited or deleted row breaks the
    chain at that point (`flask audit verify`). The database refuses UPDATE (and, on
    PostgreSQL, DELETE) of these rows: triggers of migration 0002.
    """

    __tablename__ = "audit_event"

    id = db.Column(db.Integer, primary_key=True)
    seq = db.Column(db.Integer, nullable=False, unique=True)
    at = db.Column(UTCDateTime, nullable=False, default=utcnow)
    actor_type = db.Column(db.String(10), nullable=False)  # staff | client | system
    actor_id = db.Column(db.Integer)
    actor_label = db.Column(db.String(254))
    action = db.Column(db.String(60), nullable=False, index=True)
    object_type = db.Column(db.String(40))
    object_id = db.Column(db.String(40))
    request_id = db.Column(db.Integer, index=True)
    from_state = db.Column(db.String(30))
    to_state = db.Column(db.String(30))
    reason = db.Column(db.Text)
    ip = db.Column(db.String(45))
    user_agent = db.Column(db.String(400))
    details = db.Column(db.Text)  # canonical JSON
    prev_hash = db.Column(db.String(64), nullable=False)
    hash = db.Column(db.String(64), nullable=False)


class AuditChainHead(db.Model):
    """One row holding the chain's last sequence number and hash; locked while appending.
    A trigger (migration 0002) lets `last_seq` only move forward one event at a time."""

    __tablename__ = "audit_chain_head"

    id = db.Column(db.Integer, primary_key=True)
    last_seq = db.Column(db.Integer, nullable=False, default=0)
    last_hash = db.Column(db.String(64), nullable=False)


class AuditCheckpoint(db.Model):
    """The close of one epoch of the audit chain, signed by the office seal.

    Covers events `first_seq`..`last_seq`; `last_hash` is the hash of event `last_seq`, and
    `signature` is RSA PKCS#1 v1.5 with SHA-256 over the canonical JSON of epoch, first_seq,
    last_seq, last_hash and closed_at (`app.services.audit.checkpoint_payload`). Once an epoch
    is purged (`purged_at`), its events are gone and the chain is checked from `last_hash` on.
    The database lets `purged_at` be set once and refuses any other change (migration 0007).
    """

    __tablename__ = "audit_checkpoint"

    id = db.Column(db.Integer, primary_key=True)
    epoch = db.Column(db.Integer, nullable=False, unique=True)
    first_seq = db.Column(db.Integer, nullable=False)
    last_seq = db.Column(db.Integer, nullable=False, unique=True)
    last_hash = db.Column(db.String(64), nullable=False)
    closed_at = db.Column(UTCDateTime, nullable=False, index=True)
    signature = db.Column(db.LargeBinary, nullable=False)
    signer_certificate_der = db.Column(db.LargeBinary, nullable=False)
    signer_chain_der = db.Column(db.JSON, nullable=False)  # base64 DER, issuer first
    purged_at = db.Column(UTCDateTime)
