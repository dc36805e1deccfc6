"""Audit epochs: checkpoints signed by the office seal, an edited row found and named inside a
closed epoch, and a purged epoch that leaves the rest of the chain verifiable."""
import base64
from contextlib import contextmanager
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import DBAPIError

from app.models import AuditChainHead, AuditEvent, utcnow
from app.models.audit import AuditCheckpoint
from app.services import audit, retention
from tests.support.dossier import install_ca

EVENTS = AuditEvent.__table__
CHECKPOINTS = AuditCheckpoint.__table__
AUDIT_TABLES = ("audit_event", "audit_chain_head", "audit_checkpoint")


@pytest.fixture
def seal(app):
    install_ca(app)


def _append(count, reason="evento"):
    from app.extensions import db

    seqs = [audit.record("request.transition", actor=audit.Actor("staff", 7, "agente@ar.example"),
                         from_state="documents_submitted", to_state="pendency",
                         reason=f"{reason} {i}", details={"i": i}).seq for i in range(count)]
    db.session.commit()
    return seqs


def _close(db):
    checkpoint = audit.close_epoch()
    db.session.commit()
    return checkpoint


@contextmanager
def attacker(db):
    """Direct database access with the audit triggers out of the way (see test_audit.py)."""
    db.session.commit()
    with db.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SET LOCAL session_replication_role = replica"))
            yield conn
        else:
            names = ", ".join(f"'{t}'" for t in AUDIT_TABLES)
            triggers = conn.execute(text(
                f"SELECT name, sql FROM sqlite_master WHERE type = 'trigger' "
                f"AND tbl_name IN ({names})")).all()
            for name, _ in triggers:
                conn.execute(text(f"DROP TRIGGER {name}"))
            yield conn
            for _, sql in triggers:
                conn.execute(text(sql))


def _breaks():
    return [(b.kind, b.seq, b.epoch) for b in audit.verify_chain()]


def _purge_time(checkpoint, years=6):
    return retention.add_years(checkpoint.closed_at, years) + timedelta(days=1)


# --- closing epochs ----------------------------------------------------------------------------

def test_a_closed_epoch_is_a_checkpoint_signed_by_the_office_seal(app, db, seal):
    _append(3)
    first = _close(db)
    close_event = db.session.execute(select(AuditEvent).where(
        AuditEvent.seq == first.last_seq)).scalar_one()
    assert close_event.action == "audit.epoch_close"
    assert (first.epoch, first.first_seq) == (1, 1)
    assert first.last_hash == close_event.hash and first.purged_at is None
    # The signature verifies with the seal certificate over the documented payload.
    cert = x509.load_der_x509_certificate(first.signer_certificate_der)
    assert "(selo)" in cert.subject.rfc4514_string()
    payload = audit.checkpoint_payload(first.epoch, first.first_seq, first.last_seq,
                                       first.last_hash, first.closed_at)
    cert.public_key().verify(first.signature, payload, padding.PKCS1v15(), hashes.SHA256())
    issuer = x509.load_der_x509_certificate(base64.b64decode(first.signer_chain_der[0]))
    cert.verify_directly_issued_by(issuer)

    seqs = _append(2)
    second = _close(db)
    assert (second.epoch, second.first_seq) == (2, first.last_seq + 1)
    assert second.first_seq == seqs[0] and second.last_seq == seqs[-1] + 1
    check = audit.check_chain()
    assert check.intact and check.checkpoints == 2 and check.anchor_seq == 0


def test_epoch_due_by_age_or_by_count(app, db, seal):
    assert not retention.epoch_due()  # nothing open
    _append(3)
    assert not retention.epoch_due()
    assert retention.epoch_due(utcnow() + timedelta(days=30, minutes=1))
    app.config["AUDIT_EPOCH_DAYS"] = 60
    assert not retention.epoch_due(utcnow() + timedelta(days=31))
    app.config["AUDIT_EPOCH_EVENTS"] = 2
    assert retention.epoch_due()
    _close(db)
    assert not retention.epoch_due(utcnow() + timedelta(days=400))


def test_the_job_closes_the_epoch_when_due(app, db, seal):
    from app.jobs.retention import run_retention

    _append(2)
    assert run_retention()["epoch_closed"] is None
    summary = run_retention(utcnow() + timedelta(days=31))
    assert summary["epoch_closed"] == 1
    assert db.session.execute(select(func.count(AuditCheckpoint.id))).scalar_one() == 1
    assert audit.verify_chain() == []


def test_without_a_seal_the_epoch_stays_open(app, db):
    from app.jobs.retention import run_retention

    app.config["CA_BACKEND"] = "cmp"  # no built-in CA issues a seal; none was imported
    _append(2)
    assert run_retention(utcnow() + timedelta(days=31))["epoch_closed"] is None
    assert db.session.execute(select(func.count(AuditCheckpoint.id))).scalar_one() == 0


def test_cli_close_epoch(app, db, seal, runner):
    from app.jobs.retention import close_epoch_command

    _append(2)
    result = runner.invoke(close_epoch_command)
    assert result.exit_code == 0, result.output
    assert "Época 1 fechada: eventos nº 1 a" in result.output
    assert db.session.execute(select(func.count(AuditCheckpoint.id))).scalar_one() == 1


# --- an edited audit row -----------------------------------------------------------------------

def test_an_edited_audit_row_in_a_closed_epoch_is_detected_and_named(app, db, seal, runner):
    seqs = _append(4)
    checkpoint = _close(db)
    _append(2)
    with attacker(db) as conn:
        conn.execute(update(EVENTS).where(EVENTS.c.seq == seqs[1]).values(reason="alterado"))
    assert _breaks() == [("changed", seqs[1], None)]
    [problem] = audit.verify_chain()
    assert str(problem) == f"Evento nº {seqs[1]}: o conteúdo foi alterado depois de gravado."
    result = runner.invoke(args=["audit", "verify"])
    assert result.exit_code == 1
    assert f"Evento nº {seqs[1]}: o conteúdo foi alterado depois de gravado." in result.output

    # Rewriting the epoch's last event with a recomputed hash (and the next link) is still
    # caught: the signed checkpoint names the event it closed.
    last = db.session.execute(select(AuditEvent).where(
        AuditEvent.seq == checkpoint.last_seq)).scalar_one()
    last.details = '{"epoch": 9}'
    forged = audit.event_hash(last)
    db.session.rollback()
    with attacker(db) as conn:
        conn.execute(update(EVENTS).where(EVENTS.c.seq == seqs[1]).values(reason="evento 1"))
        conn.execute(update(EVENTS).where(EVENTS.c.seq == checkpoint.last_seq)
                     .values(details='{"epoch": 9}', hash=forged))
        conn.execute(update(EVENTS).where(EVENTS.c.seq == checkpoint.last_seq + 1)
                     .values(prev_hash=forged))
    kinds = _breaks()
    assert ("checkpoint_hash", checkpoint.last_seq, 1) in kinds
    problem = next(b for b in audit.verify_chain() if b.kind == "checkpoint_hash")
    assert str(problem) == (f"Fechamento da época 1: não confere com o evento nº "
                            f"{checkpoint.last_seq} (o evento foi alterado ou apagado).")


def test_an_edited_or_forged_checkpoint_is_found(app, db, seal):
    _append(2)
    checkpoint = _close(db)
    _append(1)
    with attacker(db) as conn:
        conn.execute(update(CHECKPOINTS).where(CHECKPOINTS.c.id == checkpoint.id)
                     .values(last_seq=checkpoint.last_seq - 1))
    assert ("checkpoint_signature", None, 1) in _breaks()
    assert str(next(b for b in audit.verify_chain() if b.kind == "checkpoint_signature")) == (
        "Fechamento da época 1: a assinatura do escritório não confere (o fechamento foi "
        "alterado).")

    # Re-signed by a key of the attacker's own, with a self-made certificate.
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "AR Teste (selo)")])
    now = utcnow()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=9))
            .sign(key, hashes.SHA256()))
    payload = audit.checkpoint_payload(1, 1, checkpoint.last_seq - 1, checkpoint.last_hash,
                                       checkpoint.closed_at)
    with attacker(db) as conn:
        conn.execute(update(CHECKPOINTS).where(CHECKPOINTS.c.id == checkpoint.id).values(
            signature=key.sign(payload, padding.PKCS1v15(), hashes.SHA256()),
            signer_certificate_der=cert.public_bytes(serialization.Encoding.DER),
            signer_chain_der=[]))
    kinds = [k for k, _, _ in _breaks()]
    assert "checkpoint_untrusted" in kinds and "checkpoint_signature" not in kinds
    assert "checkpoint_hash" in kinds  # and it no longer closes on the event it names


def test_the_database_lets_a_checkpoint_only_be_marked_purged_once(app, db, seal):
    _append(1)
    checkpoint = _close(db)
    with pytest.raises(DBAPIError, match="append-only"):
        db.session.execute(update(CHECKPOINTS).where(CHECKPOINTS.c.id == checkpoint.id)
                           .values(last_hash="0" * 64))
    db.session.rollback()
    db.session.execute(update(CHECKPOINTS).where(CHECKPOINTS.c.id == checkpoint.id)
                       .values(purged_at=utcnow()))
    db.session.rollback()  # allowed (and undone: nothing was deleted)
    if db.engine.dialect.name == "postgresql":
        with pytest.raises(DBAPIError, match="append-only"):
            db.session.execute(delete(CHECKPOINTS))
        db.session.rollback()


@pytest.mark.parametrize("with_setting", [False, True])
def test_postgresql_refuses_deleting_events_outside_a_purge(app, db, seal, with_setting):
    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no DELETE trigger on audit_event (see migration 0007)")
    _append(2)
    checkpoint = _close(db)
    if with_setting:  # the setting alone is not enough: the epoch must be marked purged
        db.session.execute(text("SELECT set_config('videoar.audit_purge_upto', :v, true)"),
                           {"v": str(checkpoint.last_seq)})
    with pytest.raises(DBAPIError, match="append-only"):
        db.session.execute(delete(EVENTS).where(EVENTS.c.seq == 1))
    db.session.rollback()
    # Marked purged but without the setting: still refused.
    db.session.execute(update(CHECKPOINTS).values(purged_at=utcnow()))
    with pytest.raises(DBAPIError, match="append-only"):
        db.session.execute(delete(EVENTS).where(EVENTS.c.seq == 1))
    db.session.rollback()
    # Both, but beyond the closed epoch: refused.
    _append(1)
    db.session.execute(update(CHECKPOINTS).values(purged_at=utcnow()))
    db.session.execute(text("SELECT set_config('videoar.audit_purge_upto', :v, true)"),
                       {"v": str(checkpoint.last_seq + 1)})
    with pytest.raises(DBAPIError, match="append-only"):
        db.session.execute(delete(EVENTS).where(EVENTS.c.seq == checkpoint.last_seq + 1))
    db.session.rollback()
    assert audit.verify_chain() == []


# --- purging whole epochs ----------------------------------------------------------------------

def test_a_purged_epoch_leaves_the_rest_verifiable(app, db, seal, runner):
    _append(3)
    first = _close(db)
    kept = _append(2)
    second = _close(db)
    assert retention.expired_epochs(_purge_time(first) - timedelta(days=2)) == []
    assert [c.epoch for c in retention.expired_epochs(_purge_time(first))] == [1, 2]
    assert retention.purge_epoch(second.id, _purge_time(second)) is None  # epoch 1 first

    assert retention.purge_epoch(first.id, _purge_time(first)) == first.last_seq
    remaining = db.session.execute(select(AuditEvent.seq).order_by(AuditEvent.seq)
                                   ).scalars().all()
    assert remaining[0] == first.last_seq + 1 == kept[0]
    purge_event = db.session.execute(select(AuditEvent).where(
        AuditEvent.action == "audit.epoch_purge")).scalar_one()
    assert purge_event.seq == remaining[-1]
    assert db.session.get(AuditCheckpoint, first.id).purged_at is not None
    check = audit.check_chain()
    assert check.breaks == [] and check.anchor_seq == first.last_seq
    assert check.events == len(remaining)
    result = runner.invoke(args=["audit", "verify"])
    assert result.exit_code == 0, result.output

    # The first kept event must still link to the purged checkpoint's hash.
    with attacker(db) as conn:
        conn.execute(delete(EVENTS).where(EVENTS.c.seq == kept[0]))
    assert _breaks() == [("missing", kept[0], None)]


def test_an_epoch_dropped_without_its_recorded_purge_is_found(app, db, seal):
    _append(2)
    first = _close(db)
    _append(2)
    # Someone marks the epoch purged and deletes its events by hand: the chain after it still
    # links, but no "audit.epoch_purge" event vouches for it.
    with attacker(db) as conn:
        conn.execute(update(CHECKPOINTS).where(CHECKPOINTS.c.id == first.id)
                     .values(purged_at=utcnow()))
        conn.execute(delete(EVENTS).where(EVENTS.c.seq <= first.last_seq))
    assert _breaks() == [("purge_unrecorded", None, 1)]
    assert str(audit.verify_chain()[0]) == (
        "Época 1: marcada como expurgada, mas o expurgo não está registrado na cadeia.")


def test_a_tampered_epoch_is_not_purged(app, db, seal):
    seqs = _append(3)
    first = _close(db)
    with attacker(db) as conn:
        conn.execute(update(EVENTS).where(EVENTS.c.seq == seqs[0]).values(ip="192.0.2.1"))
    with pytest.raises(retention.EpochRefused) as refused:
        retention.purge_epoch(first.id, _purge_time(first))
    db.session.rollback()
    assert refused.value.epoch == 1
    assert db.session.execute(select(func.count(AuditEvent.id)).where(
        AuditEvent.seq <= first.last_seq)).scalar_one() == first.last_seq
    report = retention.run(_purge_time(first))
    assert report.epochs == {} and list(report.refused_epochs) == [1]
    assert db.session.get(AuditCheckpoint, first.id).purged_at is None


def test_the_job_purges_audit_epochs_past_the_retention(app, db, seal):
    from app.jobs.retention import run_retention

    _append(2)
    first = _close(db)
    _append(1)
    app.config["RETENTION_AUDIT_YEARS"] = 7
    summary = run_retention(_purge_time(first, 6))
    assert summary["epochs_purged"] == {}
    assert summary["epoch_closed"] == 2  # its first event is years old by then
    summary = run_retention(_purge_time(first, 7))
    # Epoch 2 was signed moments after epoch 1: seven years on, both are due.
    assert list(summary["epochs_purged"]) == [1, 2]
    assert summary["epochs_purged"][1] == first.last_seq
    assert audit.verify_chain() == []
    head = db.session.get(AuditChainHead, 1)
    assert head.last_seq > first.last_seq
