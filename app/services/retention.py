"""Retention: how long the office keeps a request's dossier and the audit trail, and the purge
of what has expired. See docs/retention.md.

    retention.expired_requests(now)    # what may go, and by which rule
    retention.purge_request(id, now)   # one request: rows, files, recordings (audited)
    retention.expired_epochs(now)      # closed audit epochs past the audit retention
    retention.purge_epoch(id, now)     # one epoch's events (audited; the checkpoint stays)
    retention.run(now)                 # all of it, as the periodic job does

The clocks (settings, read with their defaults when absent):

* a request that reached issuance: its documents, captures, recordings, consent, termos and
  rows are kept RETENTION_DOCUMENT_YEARS (10) after the later of its certificates' expiry
  (`not_after`) and revocation (`revoked_at`), so the clock never starts early;
* a request that never reached issuance (cancelled or expired): RETENTION_UNISSUED_DAYS (180)
  after it reached that state (`state_changed_at`);
* audit events: whole epochs, RETENTION_AUDIT_YEARS (6) after the epoch's checkpoint was
  signed, oldest first, only when the epoch's own chain and signature still check.

Blobs are content-addressed and shared: a purge removes a blob only when no row of any table
references it any more (every column that is a foreign key to `stored_file` or is named
`…sha256`), and an earlier termo version (found through the request's audit events) only
when no other request's audit events name it. Each blob goes in a transaction of its own with
its `stored_file` row locked and its references counted again, as
`documents.release_unreferenced` does.
"""
import json
import logging
import re
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from flask import current_app
from sqlalchemy import delete, exists, func, select, text, union_all

from ..extensions import db
from ..models import (AuditEvent, CertificateRequest, Company, Conference, IssuedCertificate,
                      Person, RecordingSegment, StoredFile, utcnow)
from ..models.audit import AuditCheckpoint
from . import audit
from .recording import recordings_root
from .storage import get_storage

log = logging.getLogger(__name__)

UNISSUED_STATES = ("cancelled", "expired")
DEFAULTS = {
    "RETENTION_DOCUMENT_YEARS": 10,
    "RETENTION_AUDIT_YEARS": 6,
    "RETENTION_UNISSUED_DAYS": 180,
    "AUDIT_EPOCH_DAYS": 30,
    "AUDIT_EPOCH_EVENTS": 100_000,
}
_SHA256 = re.compile(r"[0-9a-f]{64}")


def setting(name: str) -> int:
    return int(current_app.config.get(name, DEFAULTS[name]))


def add_years(moment: datetime, years: int) -> datetime:
    """`moment` moved by whole calendar years; 29 February becomes 1 March (never earlier)."""
    try:
        return moment.replace(year=moment.year + years)
    except ValueError:
        return moment.replace(year=moment.year + years, month=3, day=1)


# --- what expired ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Expiry:
    """When a request's dossier may go. rule: "certificate" (counted from the later of its
    certificates' expiry and revocation) or "unissued" (from when it was cancelled/expired)."""

    rule: str
    clock_from: datetime
    purge_from: datetime


@dataclass(frozen=True)
class ExpiredRequest:
    request_id: int
    protocol: str
    expiry: Expiry


def request_expiry(cert_request) -> Expiry | None:
    """When `cert_request` may be purged; None while it is live (not issued and not in a
    final state, or an issued one whose certificate is still valid: the purge date is then in
    the future, not None)."""
    certificates = db.session.execute(select(IssuedCertificate).where(
        IssuedCertificate.request_id == cert_request.id)).scalars().all()
    if certificates:
        end = max(max(c.not_after, c.revoked_at or c.not_after) for c in certificates)
        return Expiry("certificate", end, add_years(end, setting("RETENTION_DOCUMENT_YEARS")))
    if cert_request.state in UNISSUED_STATES:
        start = cert_request.state_changed_at
        return Expiry("unissued", start,
                      start + timedelta(days=setting("RETENTION_UNISSUED_DAYS")))
    return None


def expired_requests(now: datetime | None = None) -> list[ExpiredRequest]:
    """The requests whose retention ended by `now`, oldest rule first, by id."""
    now = now or utcnow()
    # A day of slack: the exact date (calendar years) is checked per request below.
    certificate_cutoff = add_years(now, -setting("RETENTION_DOCUMENT_YEARS")) + timedelta(days=1)
    issued = select(IssuedCertificate.request_id).group_by(IssuedCertificate.request_id).having(
        func.max(IssuedCertificate.not_after) <= certificate_cutoff)
    unissued = select(CertificateRequest.id).where(
        CertificateRequest.state.in_(UNISSUED_STATES),
        CertificateRequest.state_changed_at
        <= now - timedelta(days=setting("RETENTION_UNISSUED_DAYS")),
        ~exists().where(IssuedCertificate.request_id == CertificateRequest.id))
    ids = sorted(set(db.session.execute(issued).scalars()) |
                 set(db.session.execute(unissued).scalars()))
    found = []
    for request_id in ids:
        cert_request = db.session.get(CertificateRequest, request_id)
        expiry = request_expiry(cert_request)
        if expiry is not None and expiry.purge_from <= now:
            found.append(ExpiredRequest(request_id, cert_request.protocol, expiry))
    return found


# --- references between rows and blobs ---------------------------------------------------------

def _blob_columns(table) -> list:
    """The columns of `table` that may hold a stored blob's digest."""
    if table.name == StoredFile.__tablename__:
        return []
    return [c for c in table.columns
            if any(fk.column.table.name == StoredFile.__tablename__ for fk in c.foreign_keys)
            or c.name.endswith("sha256")]


def referenced_blobs(candidates) -> set[str]:
    """Which of `candidates` some row of any table still references."""
    candidates = set(candidates)
    if not candidates:
        return set()
    selects = [select(column.label("sha")).where(column.in_(candidates))
               for table in db.metadata.sorted_tables for column in _blob_columns(table)]
    refs = union_all(*selects).subquery()
    return set(db.session.execute(select(func.distinct(refs.c.sha))).scalars())


def _named_by_other_requests(sha: str, request_id: int) -> bool:
    """Whether an audit event of another request (or of none) names the blob: an earlier
    termo version of another request is referenced only there."""
    return db.session.execute(select(exists().where(
        AuditEvent.details.like(f'%"{sha}"%'),
        (AuditEvent.request_id != request_id) | AuditEvent.request_id.is_(None)))).scalar()


def _children(table) -> list:
    """(child table, foreign key) for every table referencing `table`."""
    return [(child, fk) for child in db.metadata.sorted_tables
            for fk in child.foreign_keys if fk.column.table is table]


def _still_referenced(table, pk_value) -> bool:
    for child, fk in _children(table):
        if db.session.execute(select(exists().where(fk.parent == pk_value))).scalar():
            return True
    return False


# --- purging a request -------------------------------------------------------------------------

@dataclass
class RequestPurge:
    """What the purge of one request removed."""

    request_id: int
    protocol: str
    rule: str
    rows: dict[str, int] = field(default_factory=dict)
    blobs: list[str] = field(default_factory=list)  # digests whose file was deleted
    kept_blobs: list[str] = field(default_factory=list)  # still referenced elsewhere
    recording_files: int = 0


def _purge_rows(table, where, purge: RequestPurge, blob_candidates: set, path=()) -> None:
    """Delete the rows of `table` matching `where` after every row that references them
    (found through the foreign keys, so tables added later are covered), collecting the blob
    digests they held."""
    if table.name in path:
        return
    for child, fk in _children(table):
        _purge_rows(child, fk.parent.in_(select(fk.column).where(where)), purge,
                    blob_candidates, path + (table.name,))
    for column in _blob_columns(table):
        blob_candidates.update(
            v for v in db.session.execute(select(column).where(where, column.is_not(None)))
            .scalars() if isinstance(v, str) and _SHA256.fullmatch(v))
    deleted = db.session.execute(delete(table).where(where)).rowcount
    if deleted:
        purge.rows[table.name] = purge.rows.get(table.name, 0) + deleted


def _termo_versions(request_id: int) -> set[str]:
    """Blobs the request's audit events name (every termo version is recorded there)."""
    found = set()
    rows = db.session.execute(select(AuditEvent.details).where(
        AuditEvent.request_id == request_id, AuditEvent.details.like('%"sha256"%'))).scalars()
    for details in rows:
        try:
            value = json.loads(details).get("sha256")
        except (TypeError, ValueError, AttributeError):
            continue
        if isinstance(value, str) and _SHA256.fullmatch(value):
            found.add(value)
    return found


def _delete_if_unreferenced(table, pk_value, purge: RequestPurge) -> None:
    if pk_value is None or _still_referenced(table, pk_value):
        return
    deleted = db.session.execute(delete(table).where(
        next(iter(table.primary_key.columns)) == pk_value)).rowcount
    if deleted:
        purge.rows[table.name] = purge.rows.get(table.name, 0) + deleted


def _recording_paths(conference_ids, segment_paths) -> list[Path]:
    """The recording directories of the conferences and any segment file outside them, all
    inside RECORDINGS_ROOT."""
    root = recordings_root(current_app.config).resolve()
    paths = [root / str(int(cid)) for cid in conference_ids]
    for relative in segment_paths:
        path = (root / relative).resolve()
        if path.is_relative_to(root) and path != root and not any(
                path.is_relative_to(d) for d in paths):
            paths.append(path)
    return paths


def _remove_recording_files(paths) -> int:
    removed = 0
    for path in paths:
        if path.is_dir():
            removed += sum(1 for p in path.rglob("*") if p.is_file())
            shutil.rmtree(path, ignore_errors=True)
        elif path.is_file():
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def purge_request(request_id: int, now: datetime | None = None, *,
                  actor: audit.Actor | None = None) -> RequestPurge | None:
    """Purge one expired request and commit: every row that belongs to it (documents, pages,
    pendencies, conferences with their connections, captures, consent and segments, second
    checks, certificates, termos, links, messages, jobs), its holder and company when no other
    row references them, its recording files, and the blobs no remaining row references.

    The request row is locked and its expiry computed again first: None (nothing done) when
    it is gone or not expired at `now`. The purge is audited ("retention.request_purge", with
    the rule, the row counts and the digests going) in the transaction that deletes the rows;
    then each blob goes in its own transaction (`_release_blobs`) and the recording files
    last, so a crash in between leaves files behind, never a row without its file.
    """
    now = now or utcnow()
    cert_request = db.session.execute(
        select(CertificateRequest).where(CertificateRequest.id == request_id)
        .with_for_update().execution_options(populate_existing=True)).scalar_one_or_none()
    if cert_request is None:
        return None
    expiry = request_expiry(cert_request)
    if expiry is None or expiry.purge_from > now:
        return None
    purge = RequestPurge(request_id, cert_request.protocol, expiry.rule)
    conference_ids = db.session.execute(select(Conference.id).where(
        Conference.request_id == request_id)).scalars().all()
    segment_paths = db.session.execute(select(RecordingSegment.path).where(
        RecordingSegment.conference_id.in_(conference_ids))).scalars().all()
    recording_paths = _recording_paths(conference_ids, segment_paths)
    termo_versions = _termo_versions(request_id)
    holder_id, company_id = cert_request.holder_id, cert_request.company_id

    candidates: set[str] = set()
    requests_table = CertificateRequest.__table__
    _purge_rows(requests_table, requests_table.c.id == request_id, purge, candidates)
    responsible_id = db.session.execute(select(Company.responsible_id).where(
        Company.id == company_id)).scalar() if company_id is not None else None
    _delete_if_unreferenced(Company.__table__, company_id, purge)
    _delete_if_unreferenced(Person.__table__, holder_id, purge)
    if responsible_id not in (None, holder_id):
        _delete_if_unreferenced(Person.__table__, responsible_id, purge)

    candidates |= {sha for sha in termo_versions - candidates
                   if not _named_by_other_requests(sha, request_id)}
    # Only digests of stored blobs (a segment's or a certificate's digest is not one).
    stored = set(db.session.execute(select(StoredFile.sha256).where(
        StoredFile.sha256.in_(candidates))).scalars()) if candidates else set()
    referenced = referenced_blobs(stored)
    going = sorted(stored - referenced)
    purge.kept_blobs = sorted(stored & referenced)
    audit.record("retention.request_purge", actor=actor or audit.SYSTEM, obj=cert_request,
                 cert_request=cert_request,
                 details={"protocol": purge.protocol, "rule": expiry.rule,
                          "clock_from": expiry.clock_from.isoformat(),
                          "rows": purge.rows, "blobs": going,
                          "kept_blobs": len(purge.kept_blobs),
                          "recording_dirs": len(recording_paths)})
    db.session.commit()
    purge.blobs = _release_blobs(going)
    purge.recording_files = _remove_recording_files(recording_paths)
    return purge


def _release_blobs(candidates) -> list[str]:
    """Delete the blobs of `candidates` that no row references, each with its `stored_file`
    row locked and its references counted again (a concurrent upload of the same content
    re-checks that the file exists). Returns the digests deleted."""
    gone = []
    storage = get_storage()
    for sha in sorted(set(candidates)):
        stmt = select(StoredFile).where(StoredFile.sha256 == sha)
        if db.session.get_bind().dialect.name == "postgresql":
            stmt = stmt.with_for_update()
        row = db.session.execute(stmt).scalar_one_or_none()
        if row is None or referenced_blobs({sha}):
            db.session.rollback()
            continue
        db.session.delete(row)
        db.session.flush()
        storage.delete(sha)
        db.session.commit()
        gone.append(sha)
    return gone


# --- audit epochs ------------------------------------------------------------------------------

def epoch_due(now: datetime | None = None) -> bool:
    """Whether the open epoch should be closed: it holds more than AUDIT_EPOCH_EVENTS events,
    or its first event is AUDIT_EPOCH_DAYS old."""
    now = now or utcnow()
    first_seq, count = audit.open_epoch()
    if count == 0:
        return False
    if count > setting("AUDIT_EPOCH_EVENTS"):
        return True
    first_at = db.session.execute(select(AuditEvent.at).where(AuditEvent.seq == first_seq)
                                  ).scalar()
    return first_at is None or now - first_at >= timedelta(days=setting("AUDIT_EPOCH_DAYS"))


def expired_epochs(now: datetime | None = None) -> list[AuditCheckpoint]:
    """The kept epochs whose checkpoint is RETENTION_AUDIT_YEARS old by `now`, oldest first
    and without gaps (an epoch goes only after every earlier one)."""
    now = now or utcnow()
    years = setting("RETENTION_AUDIT_YEARS")
    due = []
    for checkpoint in db.session.execute(select(AuditCheckpoint).where(
            AuditCheckpoint.purged_at.is_(None)).order_by(AuditCheckpoint.epoch)).scalars():
        if add_years(checkpoint.closed_at, years) > now:
            break
        due.append(checkpoint)
    return due


class EpochRefused(Exception):
    """An epoch that is due but must not be purged: its chain or signature no longer checks."""

    def __init__(self, epoch: int, breaks):
        super().__init__(f"epoch {epoch}: " + "; ".join(str(b) for b in breaks))
        self.epoch = epoch
        self.breaks = breaks


def purge_epoch(checkpoint_id: int, now: datetime | None = None, *,
                actor: audit.Actor | None = None) -> int | None:
    """Delete the events of one expired epoch and commit; returns how many went (None when
    the epoch is not due, already purged or an earlier one is still kept).

    The checkpoint is marked purged first; on PostgreSQL the transaction then sets
    `videoar.audit_purge_upto` to the epoch's last sequence number, which with that mark is
    what the trigger of migration 0007 requires to let these DELETEs through. The purge is
    recorded as an "audit.epoch_purge" event naming the epoch, its range and last hash:
    `check_chain` requires it to anchor there. Raises EpochRefused when the epoch's events
    or signature no longer check (evidence of tampering is never purged).
    """
    now = now or utcnow()
    checkpoint = db.session.execute(
        select(AuditCheckpoint).where(AuditCheckpoint.id == checkpoint_id)
        .with_for_update().execution_options(populate_existing=True)).scalar_one_or_none()
    if (checkpoint is None or checkpoint.purged_at is not None
            or add_years(checkpoint.closed_at, setting("RETENTION_AUDIT_YEARS")) > now):
        return None
    earlier_kept = db.session.execute(select(exists().where(
        AuditCheckpoint.epoch < checkpoint.epoch, AuditCheckpoint.purged_at.is_(None)))).scalar()
    if earlier_kept:
        return None
    breaks = audit.epoch_breaks(checkpoint)
    if breaks:
        raise EpochRefused(checkpoint.epoch, breaks)
    checkpoint.purged_at = utcnow()
    db.session.flush()
    postgresql = db.session.get_bind().dialect.name == "postgresql"
    events = AuditEvent.__table__
    if postgresql:
        db.session.execute(text("SELECT set_config('videoar.audit_purge_upto', :upto, true)"),
                           {"upto": str(checkpoint.last_seq)})
    deleted = db.session.execute(delete(events).where(
        events.c.seq >= checkpoint.first_seq, events.c.seq <= checkpoint.last_seq)).rowcount
    if postgresql:
        db.session.execute(text("SELECT set_config('videoar.audit_purge_upto', '', true)"))
    audit.record(audit.EPOCH_PURGE_ACTION, actor=actor or audit.SYSTEM, obj=checkpoint,
                 details={"epoch": checkpoint.epoch, "first_seq": checkpoint.first_seq,
                          "last_seq": checkpoint.last_seq, "last_hash": checkpoint.last_hash,
                          "closed_at": checkpoint.closed_at.isoformat(), "events": deleted})
    db.session.commit()
    return deleted


# --- everything, as the job runs it ----------------------------------------------------------

@dataclass
class RetentionReport:
    requests: list[RequestPurge] = field(default_factory=list)
    epochs: dict[int, int] = field(default_factory=dict)  # epoch → events deleted
    refused_epochs: dict[int, list[str]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


@dataclass
class RetentionPlan:
    """What a run at `now` would do (`flask retention run --dry-run`)."""

    epoch_due: bool
    requests: list[ExpiredRequest]
    epochs: list[AuditCheckpoint]


def plan(now: datetime | None = None) -> RetentionPlan:
    now = now or utcnow()
    result = RetentionPlan(epoch_due(now), expired_requests(now), expired_epochs(now))
    db.session.rollback()
    return result


def run(now: datetime | None = None, *, actor: audit.Actor | None = None) -> RetentionReport:
    """Purge every expired request, then every expired audit epoch, each in its own
    transaction. One that fails is rolled back, logged and named in `errors`; the others go
    on."""
    now = now or utcnow()
    report = RetentionReport()
    expired = expired_requests(now)
    db.session.rollback()
    for item in expired:
        try:
            purge = purge_request(item.request_id, now, actor=actor)
        except Exception as exc:
            db.session.rollback()
            log.exception("retention: purging request %s failed", item.protocol)
            report.errors.append(f"request {item.protocol}: {type(exc).__name__}: {exc}")
            continue
        if purge is not None:
            report.requests.append(purge)
    checkpoint_ids = [c.id for c in expired_epochs(now)]
    db.session.rollback()
    for checkpoint_id in checkpoint_ids:
        try:
            deleted = purge_epoch(checkpoint_id, now, actor=actor)
        except EpochRefused as exc:
            db.session.rollback()
            log.warning("retention: %s", exc)
            report.refused_epochs[exc.epoch] = [str(b) for b in exc.breaks]
            break  # later epochs wait for this one: they are purged oldest first
        except Exception as exc:
            db.session.rollback()
            log.exception("retention: purging audit epoch (checkpoint %s) failed",
                          checkpoint_id)
            report.errors.append(f"checkpoint {checkpoint_id}: {type(exc).__name__}: {exc}")
            break
        if deleted is None:
            break
        epoch = db.session.get(AuditCheckpoint, checkpoint_id).epoch
        report.epochs[epoch] = deleted
        db.session.rollback()
    return report
