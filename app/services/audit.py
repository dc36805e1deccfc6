"""The audit trail: append-only events chained by SHA-256.

Appending locks the single `audit_chain_head` row (SELECT … FOR UPDATE on PostgreSQL; on SQLite
every transaction is BEGIN IMMEDIATE, see `app.db_setup`), so concurrent writers get consecutive
sequence numbers and each event's `prev_hash` is the hash of the one before it. The event is
written in the caller's transaction: it commits or rolls back with the change it describes.
"""
import hashlib
import json
from dataclasses import dataclass

from flask import has_request_context
from flask import request as http_request
from sqlalchemy import select

from ..extensions import db
from ..models import AuditChainHead, AuditEvent, utcnow

GENESIS_HASH = "0" * 64
HASHED_FIELDS = (
    "seq", "at", "actor_type", "actor_id", "actor_label", "action", "object_type", "object_id",
    "request_id", "from_state", "to_state", "reason", "ip", "user_agent", "details", "prev_hash",
)


@dataclass(frozen=True)
class Actor:
    type: str  # staff | client | system
    id: int | None = None
    label: str | None = None


SYSTEM = Actor("system", None, "sistema")


def staff_actor(user) -> Actor:
    return Actor("staff", user.id, user.email)


def client_actor(cert_request) -> Actor:
    return Actor("client", cert_request.holder_id, f"titular {cert_request.protocol}")


def current_actor() -> Actor:
    """The logged-in staff user when there is one, otherwise the system."""
    if has_request_context():
        from flask_login import current_user

        if current_user and current_user.is_authenticated:
            return staff_actor(current_user)
    return SYSTEM


def client_ip() -> str | None:
    if not has_request_context():
        return None
    return http_request.remote_addr


def event_hash(event: AuditEvent) -> str:
    payload = {}
    for name in HASHED_FIELDS:
        value = getattr(event, name)
        if name == "at":
            value = value.isoformat(timespec="microseconds")
        payload[name] = value
    canonical = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _lock_head() -> AuditChainHead:
    stmt = select(AuditChainHead).where(AuditChainHead.id == 1)
    if db.session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    head = db.session.execute(stmt).scalar_one_or_none()
    if head is None:
        raise RuntimeError("audit chain head missing: run `flask db upgrade`")
    return head


def record(action, *, actor: Actor | None = None, obj=None, cert_request=None, from_state=None,
           to_state=None, reason=None, details=None) -> AuditEvent:
    """Append one event to the chain in the current transaction and return it.

    `obj` is any model instance (its table name and id are recorded); `cert_request` ties the
    event to a request's trail. Nothing secret may be passed in `details` or `reason`.
    """
    actor = actor or current_actor()
    head = _lock_head()
    if obj is not None and getattr(obj, "id", None) is None:
        db.session.flush()
    ua = None
    if has_request_context():
        ua = (http_request.user_agent.string or "")[:400] or None
    event = AuditEvent(
        seq=head.last_seq + 1,
        at=utcnow(),
        actor_type=actor.type,
        actor_id=actor.id,
        actor_label=actor.label,
        action=action,
        object_type=obj.__tablename__ if obj is not None else None,
        object_id=str(obj.id) if obj is not None else None,
        request_id=cert_request.id if cert_request is not None else None,
        from_state=from_state,
        to_state=to_state,
        reason=reason,
        ip=client_ip(),
        user_agent=ua,
        details=json.dumps(details, sort_keys=True, ensure_ascii=False, default=str)
        if details else None,
        prev_hash=head.last_hash,
    )
    event.hash = event_hash(event)
    head.last_seq = event.seq
    head.last_hash = event.hash
    db.session.add(event)
    db.session.flush()
    return event


def verify_chain(batch_size: int = 2000) -> list[str]:
    """Recompute the whole chain; return a description of each break found (empty: intact)."""
    problems = []
    prev_hash = GENESIS_HASH
    expected_seq = 1
    last_id = 0
    while True:
        rows = db.session.execute(
            select(AuditEvent).where(AuditEvent.seq >= expected_seq)
            .order_by(AuditEvent.seq).limit(batch_size)
        ).scalars().all()
        if not rows:
            break
        for event in rows:
            if event.seq != expected_seq:
                problems.append(f"missing events {expected_seq}..{event.seq - 1}")
                prev_hash = event.prev_hash
            if event.prev_hash != prev_hash:
                problems.append(f"event {event.seq}: previous hash does not match event {event.seq - 1}")
            if event_hash(event) != event.hash:
                problems.append(f"event {event.seq}: contents changed after it was written")
            prev_hash = event.hash
            expected_seq = event.seq + 1
            last_id = event.seq
        db.session.expunge_all()
    head = db.session.get(AuditChainHead, 1)
    if head is not None and head.last_seq != last_id:
        problems.append(f"chain head says {head.last_seq} events, found {last_id}")
    elif head is not None and head.last_seq and head.last_hash != prev_hash:
        problems.append("chain head hash does not match the last event")
    return problems
