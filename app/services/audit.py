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
"""
import hashlib
import json
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone

from flask import has_request_context
from flask import request as http_request
from flask_babel import gettext as _
from sqlalchemy import String, select, type_coerce, update

from ..db_setup import sqlite_immediate
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
    # unreadable
    kind: str
    seq: int | None = None
    last: int | None = None  # end of a range of missing events
    row_id: int | None = None

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
        return _("Registro de auditoria id %(id)d: ilegível (dados corrompidos).", id=self.row_id)


@dataclass
class ChainCheck:
    """What `check_chain` read: how many events, the last sequence number, the breaks."""

    events: int = 0
    last_seq: int = 0
    breaks: list[ChainBreak] = field(default_factory=list)

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


def check_chain() -> ChainCheck:
    """Recompute the whole chain from the genesis hash and compare it with the head row.

    Reads a snapshot on a connection of its own (the caller's session is untouched, so its
    cached objects cannot hide a change), streaming the events in `seq` order. An edited
    event is named by its own number; a deleted one by the gap it leaves; deleted last events
    by the head; a row too damaged to read is named by its id instead of stopping the check.
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
        rows = conn.execute(select(*columns).order_by(_events.c.seq, _events.c.id)
                            .execution_options(stream_results=True, max_row_buffer=1000))
        prev_hash = GENESIS_HASH
        expected = 1
        for row in rows:
            values = row._mapping
            check.events += 1
            seq = values["seq"]
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
            prev_hash = values["hash"]
            expected = seq + 1
            check.last_seq = seq
        rows.close()
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
