"""The audit trail: append-only events chained by SHA-256.

Appending starts by advancing the single `audit_chain_head` row with one UPDATE … RETURNING,
which takes that row's write lock before anything about the chain is read: PostgreSQL makes
every other appender wait for our commit and then hands it the row as we left it (READ
COMMITTED re-reads an updated row), and on SQLite the UPDATE takes the database's write lock
(waiting out the busy timeout) without having read the head first, so even a deferred
transaction cannot append on top of a stale snapshot. Concurrent writers therefore get
consecutive sequence numbers and each event's `prev_hash` is the hash of the one before it.
The event is written in the caller's transaction: it commits or rolls back with the change it
describes.

The database itself refuses edits (migration 0002: triggers on PostgreSQL and SQLite, deletes
too on PostgreSQL). Someone who can drop those triggers can still change rows; `check_chain`
then names the first event whose contents, link or position no longer add up.

The chain is cut into epochs (docs/retention.md). `close_epoch` appends an "audit.epoch_close"
event and signs, with the office seal, a checkpoint over the events since the previous one
(`AuditCheckpoint`: first and last sequence number, the last event's hash, the time). An
epoch past the audit retention is purged whole (app.services.retention), its checkpoint kept
and marked purged; `check_chain` then starts right after the newest purged epoch, from that
checkpoint's hash, checks that the purge itself is recorded in the chain it still reads, and
verifies every checkpoint's signature and that each kept one matches the event it closes.
"""
import base64
import hashlib
import json
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from flask import has_request_context
from flask import request as http_request
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import String, select, type_coerce, update

from ..db_setup import sqlite_immediate
from ..extensions import db
from ..models import AuditChainHead, AuditEvent, utcnow
from ..models.audit import AuditCheckpoint
from . import ServiceError

GENESIS_HASH = "0" * 64
EPOCH_CLOSE_ACTION = "audit.epoch_close"
EPOCH_PURGE_ACTION = "audit.epoch_purge"
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


def _as_utc(value) -> datetime:
    """A stored timestamp as aware UTC, however the driver hands it back (SQLite: text)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise ValueError(f"not a timestamp: {value!r}")
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def _hash_values(values: Mapping) -> str:
    payload = {}
    for name in HASHED_FIELDS:
        value = values[name]
        if name == "at":
            value = _as_utc(value).isoformat(timespec="microseconds")
        payload[name] = value
    canonical = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def event_hash(event: AuditEvent) -> str:
    """SHA-256 of the event's canonical JSON: every hashed field, `prev_hash` included."""
    return _hash_values({name: getattr(event, name) for name in HASHED_FIELDS})


_head = AuditChainHead.__table__
_events = AuditEvent.__table__


def _advance_head() -> tuple[int, str]:
    """Take the next sequence number under the head row's lock; return it and the hash of
    the event before it. Core statements on purpose: an `AuditChainHead` already in the
    session's identity map would not be refreshed by a later SELECT … FOR UPDATE."""
    row = db.session.execute(
        update(_head).where(_head.c.id == 1).values(last_seq=_head.c.last_seq + 1)
        .returning(_head.c.last_seq, _head.c.last_hash)
    ).first()
    if row is None:
        raise RuntimeError("audit chain head missing: run `flask db upgrade`")
    return row.last_seq, row.last_hash


def record(action, *, actor: Actor | None = None, obj=None, cert_request=None, from_state=None,
           to_state=None, reason=None, details=None) -> AuditEvent:
    """Append one event to the chain in the current transaction and return it.

    `obj` is any model instance (its table name and id are recorded); `cert_request` ties the
    event to a request's trail. Nothing secret may be passed in `details` or `reason`.
    The chain head stays locked until the caller's transaction ends: commit soon.
    """
    actor = actor or current_actor()
    if obj is not None and getattr(obj, "id", None) is None:
        db.session.flush()
    ua = None
    if has_request_context():
        ua = (http_request.user_agent.string or "")[:400] or None
    seq, prev_hash = _advance_head()
    event = AuditEvent(
        seq=seq,
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
        prev_hash=prev_hash,
    )
    event.hash = event_hash(event)
    db.session.execute(update(_head).where(_head.c.id == 1).values(last_hash=event.hash))
    db.session.add(event)
    db.session.flush()
    return event


@dataclass(frozen=True)
class ChainBreak:
    """One place where the stored chain no longer adds up. `str()` says it in the user's
    language (the CLI and the admin page show it as is)."""

    # changed | unlinked | missing | missing_tail | beyond_head | head_hash | head_missing |
    # unreadable | checkpoint_signature | checkpoint_untrusted | checkpoint_hash |
    # checkpoint_order | purge_unrecorded
    kind: str
    seq: int | None = None
    last: int | None = None  # end of a range of missing events
    row_id: int | None = None
    epoch: int | None = None  # the checkpoint's epoch (checkpoint_* and purge_unrecorded)

    def __str__(self) -> str:
        if self.kind == "changed":
            return _("Evento nº %(seq)d: o conteúdo foi alterado depois de gravado.",
                     seq=self.seq)
        if self.kind == "unlinked":
            return _("Evento nº %(seq)d: não se encadeia ao evento nº %(prev)d (o hash anterior "
                     "não confere).", seq=self.seq, prev=self.seq - 1)
        if self.kind == "missing":
            if self.seq == self.last:
                return _("Evento nº %(seq)d: ausente (apagado).", seq=self.seq)
            return _("Eventos nº %(first)d a %(last)d: ausentes (apagados).", first=self.seq,
                     last=self.last)
        if self.kind == "missing_tail":
            if self.seq == self.last:
                return _("Evento nº %(seq)d: ausente (apagado); era o último registrado no topo "
                         "da cadeia.", seq=self.seq)
            return _("Eventos nº %(first)d a %(last)d: ausentes (apagados); o topo da cadeia "
                     "registra %(last)d eventos.", first=self.seq, last=self.last)
        if self.kind == "beyond_head":
            return _("Evento nº %(seq)d: está além do topo da cadeia (inserido depois ou topo "
                     "alterado).", seq=self.seq)
        if self.kind == "head_hash":
            return _("O hash do topo da cadeia não confere com o do último evento (nº %(seq)d).",
                     seq=self.seq)
        if self.kind == "head_missing":
            return _("O registro do topo da cadeia de auditoria não existe.")
        if self.kind == "checkpoint_signature":
            return _("Fechamento da época %(epoch)d: a assinatura do escritório não confere "
                     "(o fechamento foi alterado).", epoch=self.epoch)
        if self.kind == "checkpoint_untrusted":
            return _("Fechamento da época %(epoch)d: assinado por um certificado que não é o "
                     "selo do escritório emitido por uma AC confiável.", epoch=self.epoch)
        if self.kind == "checkpoint_hash":
            return _("Fechamento da época %(epoch)d: não confere com o evento nº %(seq)d (o "
                     "evento foi alterado ou apagado).", epoch=self.epoch, seq=self.seq)
        if self.kind == "checkpoint_order":
            return _("Fechamento da época %(epoch)d: fora de sequência (não continua a época "
                     "anterior ou foi apagado).", epoch=self.epoch)
        if self.kind == "purge_unrecorded":
            return _("Época %(epoch)d: marcada como expurgada, mas o expurgo não está "
                     "registrado na cadeia.", epoch=self.epoch)
        return _("Registro de auditoria id %(id)d: ilegível (dados corrompidos).", id=self.row_id)


@dataclass
class ChainCheck:
    """What `check_chain` read: how many events, the last sequence number, the breaks, and
    where it started (`anchor_seq`: the last event of the newest purged epoch, 0 if none)."""

    events: int = 0
    last_seq: int = 0
    breaks: list[ChainBreak] = field(default_factory=list)
    anchor_seq: int = 0
    checkpoints: int = 0

    @property
    def intact(self) -> bool:
        return not self.breaks


@contextmanager
def _snapshot():
    """A connection of its own reading one consistent snapshot, without the session's locks:
    REPEATABLE READ on PostgreSQL; on SQLite a deferred transaction (a WAL read snapshot that
    does not hold up writers)."""
    engine = db.engine
    if engine.dialect.name == "sqlite":
        if engine.url.database in (None, "", ":memory:"):
            # Each connection to :memory: is another database: read through the session.
            yield db.session.connection()
            return
        token = sqlite_immediate.set(False)
        try:
            with engine.connect() as conn:
                yield conn
        finally:
            sqlite_immediate.reset(token)
    else:
        with engine.connect().execution_options(isolation_level="REPEATABLE READ",
                                                postgresql_readonly=True) as conn:
            yield conn


_checkpoints = AuditCheckpoint.__table__


def checkpoint_payload(epoch: int, first_seq: int, last_seq: int, last_hash: str,
                       closed_at) -> bytes:
    """The bytes a checkpoint's signature covers: canonical JSON (sorted keys, no spaces,
    UTF-8) of epoch, first_seq, last_seq, last_hash and closed_at (ISO 8601 UTC with
    microseconds)."""
    payload = {"epoch": epoch, "first_seq": first_seq, "last_seq": last_seq,
               "last_hash": last_hash,
               "closed_at": _as_utc(closed_at).isoformat(timespec="microseconds")}
    return json.dumps(payload, sort_keys=True, ensure_ascii=False,
                      separators=(",", ":")).encode("utf-8")


def _trusted_roots() -> set[bytes]:
    """DER of the roots a seal certificate must chain to; empty when none is configured (then
    only the signature and the links of the stored chain are checked)."""
    from . import ca as ca_service

    try:
        return set(ca_service.trust_roots_der())
    except Exception:  # a CA that cannot be opened must not stop the audit check
        return set()


def _checkpoint_breaks(cp, roots: set[bytes]) -> list[ChainBreak]:
    """Check one checkpoint's signature and its signer's chain (a row of audit_checkpoint)."""
    try:
        cert = x509.load_der_x509_certificate(bytes(cp.signer_certificate_der))
        payload = checkpoint_payload(cp.epoch, cp.first_seq, cp.last_seq, cp.last_hash,
                                     cp.closed_at)
        cert.public_key().verify(bytes(cp.signature), payload, padding.PKCS1v15(),
                                 hashes.SHA256())
    except (InvalidSignature, ValueError, TypeError, AttributeError):
        return [ChainBreak("checkpoint_signature", epoch=cp.epoch)]
    try:
        chain = [x509.load_der_x509_certificate(base64.b64decode(c))
                 for c in (cp.signer_chain_der or [])]
        certs = [cert, *chain]
        for child, issuer in zip(certs, certs[1:]):
            child.verify_directly_issued_by(issuer)
        closed_at = _as_utc(cp.closed_at)
        if not cert.not_valid_before_utc <= closed_at <= cert.not_valid_after_utc:
            raise ValueError("signer certificate not valid when the checkpoint was signed")
        if roots and not roots & {c.public_bytes(serialization.Encoding.DER) for c in certs}:
            raise ValueError("signer certificate does not chain to a trusted root")
    except (InvalidSignature, ValueError, TypeError):
        return [ChainBreak("checkpoint_untrusted", epoch=cp.epoch)]
    return []


def _check_checkpoints(checkpoints, check: ChainCheck):
    """Signatures and order of the checkpoints; returns the newest purged one (or None)."""
    roots = _trusted_roots() if checkpoints else set()
    anchor = None
    previous = None
    for cp in checkpoints:
        check.breaks.extend(_checkpoint_breaks(cp, roots))
        expected_epoch = previous.epoch + 1 if previous else 1
        expected_first = previous.last_seq + 1 if previous else 1
        if (cp.epoch != expected_epoch or cp.first_seq != expected_first
                or cp.last_seq < cp.first_seq
                # Epochs are purged oldest first: a purged one after a kept one is not ours.
                or (cp.purged_at is not None and previous is not None
                    and previous.purged_at is None)):
            check.breaks.append(ChainBreak("checkpoint_order", epoch=cp.epoch))
        if cp.purged_at is not None:
            anchor = cp
        previous = cp
    return anchor


def _attests_purge(values, anchor) -> bool:
    """Whether an event is the recorded purge of the epoch `anchor`."""
    if values["action"] != EPOCH_PURGE_ACTION or not values["details"]:
        return False
    try:
        details = json.loads(values["details"])
    except (TypeError, ValueError):
        return False
    return (isinstance(details, dict) and details.get("epoch") == anchor.epoch
            and details.get("last_seq") == anchor.last_seq
            and details.get("last_hash") == anchor.last_hash)


def check_chain() -> ChainCheck:
    """Recompute the chain and compare it with the checkpoints and the head row.

    Reads a snapshot on a connection of its own (the caller's session is untouched, so its
    cached objects cannot hide a change), streaming the events in `seq` order. An edited
    event is named by its own number; a deleted one by the gap it leaves; deleted last events
    by the head; a row too damaged to read is named by its id instead of stopping the check.

    With checkpoints: every checkpoint's signature is verified (and its signer's chain, up to
    a trusted root when one is configured), epochs must follow one another, each kept
    checkpoint's `last_hash` must be the hash of the event at its `last_seq`, and the check
    starts right after the newest purged epoch, from its `last_hash` (the genesis hash when
    nothing was purged), whose purge must be recorded by an "audit.epoch_purge" event among
    the events read.
    """
    check = ChainCheck()
    columns = [_events.c.id, _events.c.hash] + [_events.c[name] for name in HASHED_FIELDS
                                                  if name != "at"]
    # The timestamp as the driver gives it, parsed per row: one mangled value must not
    # abort the whole read.
    columns.append(type_coerce(_events.c.at, String).label("at"))
    with _snapshot() as conn:
        head = conn.execute(select(_head.c.last_seq, _head.c.last_hash)
                            .where(_head.c.id == 1)).first()
        checkpoints = conn.execute(select(_checkpoints).order_by(_checkpoints.c.epoch)).all()
        check.checkpoints = len(checkpoints)
        anchor = _check_checkpoints(checkpoints, check)
        anchor_seq = anchor.last_seq if anchor is not None else 0
        check.anchor_seq = check.last_seq = anchor_seq
        kept = {cp.last_seq: cp for cp in checkpoints
                if cp.purged_at is None and cp.last_seq > anchor_seq}
        matched = set()
        purge_recorded = False
        rows = conn.execute(select(*columns).order_by(_events.c.seq, _events.c.id)
                            .execution_options(stream_results=True, max_row_buffer=1000))
        prev_hash = anchor.last_hash if anchor is not None else GENESIS_HASH
        expected = anchor_seq + 1
        for row in rows:
            values = row._mapping
            seq = values["seq"]
            if isinstance(seq, int) and 1 <= seq <= anchor_seq:
                continue  # left over from a purged epoch: no longer part of the chain
            check.events += 1
            if not isinstance(seq, int) or seq < expected:
                check.breaks.append(ChainBreak("unreadable", row_id=values["id"]))
                continue
            if seq > expected:
                check.breaks.append(ChainBreak("missing", seq=expected, last=seq - 1))
            elif values["prev_hash"] != prev_hash:
                check.breaks.append(ChainBreak("unlinked", seq=seq))
            try:
                changed = _hash_values(values) != values["hash"]
            except (TypeError, ValueError):
                changed = True
            if changed:
                check.breaks.append(ChainBreak("changed", seq=seq))
            checkpoint = kept.get(seq)
            if checkpoint is not None:
                matched.add(seq)
                if values["hash"] != checkpoint.last_hash:
                    check.breaks.append(ChainBreak("checkpoint_hash", seq=seq,
                                                   epoch=checkpoint.epoch))
            if anchor is not None and not purge_recorded:
                purge_recorded = _attests_purge(values, anchor)
            prev_hash = values["hash"]
            expected = seq + 1
            check.last_seq = seq
        rows.close()
    for seq, checkpoint in kept.items():
        if seq not in matched:
            check.breaks.append(ChainBreak("checkpoint_hash", seq=seq, epoch=checkpoint.epoch))
    if anchor is not None and not purge_recorded:
        check.breaks.append(ChainBreak("purge_unrecorded", epoch=anchor.epoch))
    if head is None:
        check.breaks.append(ChainBreak("head_missing"))
    elif head.last_seq > check.last_seq:
        check.breaks.append(ChainBreak("missing_tail", seq=check.last_seq + 1,
                                       last=head.last_seq))
    elif head.last_seq < check.last_seq:
        check.breaks.append(ChainBreak("beyond_head", seq=head.last_seq + 1))
    elif head.last_seq and head.last_hash != prev_hash:
        check.breaks.append(ChainBreak("head_hash", seq=check.last_seq))
    return check


def verify_chain() -> list[ChainBreak]:
    """The breaks in the chain (empty: intact). See `check_chain`."""
    return check_chain().breaks


# --- epochs -----------------------------------------------------------------------------------

class EpochNotClosed(ServiceError):
    pass


def latest_checkpoint() -> AuditCheckpoint | None:
    return db.session.execute(select(AuditCheckpoint).order_by(AuditCheckpoint.epoch.desc())
                              .limit(1).execution_options(populate_existing=True)).scalar()


def open_epoch() -> tuple[int, int]:
    """(first sequence number of the open epoch, how many events it holds so far)."""
    previous = latest_checkpoint()
    first = previous.last_seq + 1 if previous is not None else 1
    last = db.session.execute(select(_head.c.last_seq).where(_head.c.id == 1)).scalar() or 0
    return first, max(0, last - first + 1)


def close_epoch(*, actor: Actor | None = None) -> AuditCheckpoint:
    """Close the open epoch: append an "audit.epoch_close" event (its last event) and add a
    checkpoint over it signed with the office seal, in the caller's transaction.

    The seal comes from `ca.credential_for("seal")` (in homologação the built-in CA issues a
    missing one; that is audited too, inside the epoch being closed). The chain head stays
    locked until the caller commits, so no event slips in between the last one and the
    checkpoint. Raises `ca.CaUnavailable` without a seal and EpochNotClosed when another
    process closed an epoch at the same moment.
    """
    from . import ca as ca_service

    actor = actor or SYSTEM
    credential = ca_service.credential_for("seal", actor=actor)
    key, cert, chain = ca_service.credential_parts(credential)
    previous = latest_checkpoint()
    epoch = previous.epoch + 1 if previous is not None else 1
    first_seq = previous.last_seq + 1 if previous is not None else 1
    event = record(EPOCH_CLOSE_ACTION, actor=actor,
                   details={"epoch": epoch, "first_seq": first_seq})
    # Read again under the head's lock: a checkpoint another closer committed meanwhile.
    again = latest_checkpoint()
    if (again.epoch if again is not None else 0) != epoch - 1:
        raise EpochNotClosed(_l("Outra época acabou de ser fechada; tente de novo."))
    closed_at = utcnow()
    signature = key.sign(checkpoint_payload(epoch, first_seq, event.seq, event.hash, closed_at),
                         padding.PKCS1v15(), hashes.SHA256())
    checkpoint = AuditCheckpoint(
        epoch=epoch, first_seq=first_seq, last_seq=event.seq, last_hash=event.hash,
        closed_at=closed_at, signature=signature,
        signer_certificate_der=cert.public_bytes(serialization.Encoding.DER),
        signer_chain_der=[base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode()
                          for c in chain],
    )
    db.session.add(checkpoint)
    db.session.flush()
    return checkpoint


def epoch_breaks(checkpoint: AuditCheckpoint) -> list[ChainBreak]:
    """The breaks inside one closed epoch, read in the caller's transaction: its signature,
    its events from the previous checkpoint's hash (the genesis hash for the first) to its
    own `last_hash`. Retention purges an epoch only when this is empty."""
    check = ChainCheck()
    check.breaks.extend(_checkpoint_breaks(checkpoint, _trusted_roots()))
    previous = db.session.execute(select(AuditCheckpoint).where(
        AuditCheckpoint.epoch == checkpoint.epoch - 1)).scalar()
    if checkpoint.epoch > 1 and (previous is None
                                 or previous.last_seq + 1 != checkpoint.first_seq):
        check.breaks.append(ChainBreak("checkpoint_order", epoch=checkpoint.epoch))
        return check.breaks
    prev_hash = previous.last_hash if previous is not None else GENESIS_HASH
    expected = checkpoint.first_seq
    columns = [_events.c.id, _events.c.hash] + [_events.c[name] for name in HASHED_FIELDS
                                                  if name != "at"]
    columns.append(type_coerce(_events.c.at, String).label("at"))
    rows = db.session.execute(select(*columns).where(
        _events.c.seq >= checkpoint.first_seq, _events.c.seq <= checkpoint.last_seq)
        .order_by(_events.c.seq))
    for row in rows:
        values = row._mapping
        seq = values["seq"]
        if seq != expected:
            check.breaks.append(ChainBreak("missing", seq=expected, last=seq - 1))
        elif values["prev_hash"] != prev_hash:
            check.breaks.append(ChainBreak("unlinked", seq=seq))
        try:
            if _hash_values(values) != values["hash"]:
                check.breaks.append(ChainBreak("changed", seq=seq))
        except (TypeError, ValueError):
            check.breaks.append(ChainBreak("changed", seq=seq))
        prev_hash = values["hash"]
        expected = seq + 1
    if expected <= checkpoint.last_seq:
        check.breaks.append(ChainBreak("missing", seq=expected, last=checkpoint.last_seq))
    elif prev_hash != checkpoint.last_hash:
        check.breaks.append(ChainBreak("checkpoint_hash", seq=checkpoint.last_seq,
                                       epoch=checkpoint.epoch))
    return check.breaks
