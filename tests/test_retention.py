"""Retention: what expires when, and a purge that removes the expired request's rows, files and
recordings but never a blob another request still uses."""
import json
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from app.models import (AccessLink, AuditEvent, CertificateRequest, Conference,
                        ConferenceCapture, ConferenceConsent, DocumentPage, IssuedCertificate,
                        Person, RecordingSegment, RequestDocument, StoredFile, Termo, utcnow)
from app.services import audit, retention, workflow
from app.services.recording import recordings_root
from app.services.storage import get_storage
from tests.support.dossier import _stored, call_done
from tests.support.documents import jpeg


def _count(db, model, **where):
    stmt = select(func.count()).select_from(model)
    for name, value in where.items():
        stmt = stmt.where(getattr(model, name) == value)
    return db.session.execute(stmt).scalar_one()


def _recording_files(app, conference):
    """The segment files the media process would have left for `conference`."""
    root = recordings_root(app.config)
    paths = []
    for segment in conference.segments:
        path = root / segment.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\x1a\x45\xdf\xa3" + segment.path.encode())
        paths.append(path)
    return paths


def _own_document(db, cert_request, text):
    """An identity document page whose image only this request has."""
    sha = _stored(db, jpeg(900, 600, text=text), "image/jpeg")
    document = RequestDocument(request_id=cert_request.id, kind="identity", status="approved")
    db.session.add(document)
    db.session.flush()
    db.session.add(DocumentPage(document_id=document.id, position=1, kind="image",
                                mime="image/jpeg", original_sha256=sha))
    db.session.commit()
    return sha


def _cancelled_after_call(db, factory, agent, person):
    cert_request = factory.request(person=person, agent=agent)
    conference = call_done(db, cert_request, agent)
    workflow.transition(cert_request, "cancelled", reason="desistiu")
    db.session.commit()
    return cert_request, conference


def test_an_unissued_request_is_purged_after_its_period_with_its_files(app, db, factory, agent,
                                                                       mailbox):
    cert_request, conference = _cancelled_after_call(db, factory, agent, factory.person())
    own = _own_document(db, cert_request, "RG SÓ DESTA")
    files = _recording_files(app, conference)
    blobs = {c.file_sha256 for c in conference.captures} | {conference.recording_sha256, own}
    storage = get_storage()
    assert all(storage.exists(sha) for sha in blobs)
    request_id, protocol, person_id = cert_request.id, cert_request.protocol, cert_request.holder_id
    cancelled_at = cert_request.state_changed_at
    conference_id = conference.id

    assert retention.expired_requests(cancelled_at + timedelta(days=179)) == []
    assert retention.purge_request(request_id, cancelled_at + timedelta(days=179)) is None
    app.config["RETENTION_UNISSUED_DAYS"] = 30
    [expired] = retention.expired_requests(cancelled_at + timedelta(days=31))
    assert (expired.request_id, expired.expiry.rule) == (request_id, "unissued")

    purge = retention.purge_request(request_id, cancelled_at + timedelta(days=31))
    assert purge.protocol == protocol and sorted(purge.blobs) == sorted(blobs)
    assert purge.recording_files == len(files) == 4
    db.session.expire_all()
    assert db.session.get(CertificateRequest, request_id) is None
    for model in (Conference, AccessLink, RequestDocument):
        assert _count(db, model, request_id=request_id) == 0
    for model in (ConferenceCapture, ConferenceConsent, RecordingSegment):
        assert _count(db, model, conference_id=conference_id) == 0
    assert _count(db, DocumentPage) == 0
    assert db.session.get(Person, person_id) is None  # no other request of hers
    assert not any(storage.exists(sha) for sha in blobs)
    assert _count(db, StoredFile) == 0
    assert not any(p.exists() for p in files)
    assert not (recordings_root(app.config) / str(conference_id)).exists()

    # The purge is audited and the chain still holds.
    event = db.session.execute(select(AuditEvent).where(
        AuditEvent.action == "retention.request_purge")).scalar_one()
    details = json.loads(event.details)
    assert event.request_id == request_id and details["protocol"] == protocol
    assert details["rule"] == "unissued" and details["rows"]["conference"] == 1
    assert sorted(details["blobs"]) == sorted(blobs)
    assert audit.verify_chain() == []


def test_a_purge_that_would_remove_a_file_shared_with_a_live_request(app, db, factory, agent,
                                                                    mailbox):
    person = factory.person()
    expired, expired_conf = _cancelled_after_call(db, factory, agent, person)
    only_expired = _own_document(db, expired, "SÓ DA CANCELADA")
    # The same person asks again; the same face photo, still and recording end up stored once
    # and referenced by both requests' rows.
    live = factory.request(person=person, agent=agent)
    live_conf = call_done(db, live, agent)
    shared = {c.file_sha256 for c in expired_conf.captures} | {expired_conf.recording_sha256}
    assert shared == {c.file_sha256 for c in live_conf.captures} | {live_conf.recording_sha256}
    live_rows = {model: _count(db, model, conference_id=live_conf.id)
                 for model in (ConferenceCapture, ConferenceConsent, RecordingSegment)}
    storage = get_storage()
    expired_id, expired_conf_id = expired.id, expired_conf.id

    purge = retention.purge_request(expired_id, expired.state_changed_at + timedelta(days=181))
    assert purge is not None
    assert purge.blobs == [only_expired]
    assert sorted(purge.kept_blobs) == sorted(shared)
    db.session.expire_all()
    # Only the expired request's rows went …
    assert db.session.get(CertificateRequest, expired_id) is None
    assert _count(db, Conference, request_id=expired_id) == 0
    assert _count(db, ConferenceCapture, conference_id=expired_conf_id) == 0
    assert not storage.exists(only_expired)
    # … the live request, its person and the shared files stay, and still open.
    assert db.session.get(CertificateRequest, live.id).state == "conference_done"
    assert db.session.get(Person, person.id) is not None
    assert {model: _count(db, model, conference_id=live_conf.id)
            for model in live_rows} == live_rows
    for sha in shared:
        assert db.session.get(StoredFile, sha) is not None
        with storage.open(sha) as f:
            assert f.read(1)
    details = json.loads(db.session.execute(select(AuditEvent.details).where(
        AuditEvent.action == "retention.request_purge")).scalar_one())
    assert details["blobs"] == [only_expired] and details["kept_blobs"] == len(shared)
    assert retention.expired_requests(utcnow() + timedelta(days=3650)) == []  # live: never


def _issued(db, cert_request, agent, *, not_after, revoked_at=None):
    """Take a request through issuance with a certificate row, a termo and its versions."""
    call_done(db, cert_request, agent)
    workflow.transition(cert_request, "approved")
    workflow.transition(cert_request, "issued")
    certificate = IssuedCertificate(
        request_id=cert_request.id, serial=f"{cert_request.id:x}ab", subject="CN=MARIA",
        not_before=not_after - timedelta(days=365), not_after=not_after,
        fingerprint_sha256="f" * 64, der=b"0", chain_der=[], ca_label="AC Teste",
        homologation=True, key_storage="software", revoked_at=revoked_at)
    db.session.add(certificate)
    db.session.flush()
    first = _stored(db, b"%PDF-1.7 termo v1 " + cert_request.protocol.encode(), "application/pdf")
    latest = _stored(db, b"%PDF-1.7 termo v2 " + cert_request.protocol.encode(), "application/pdf")
    termo = Termo(request_id=cert_request.id, certificate_id=certificate.id, state="sealed",
                  sha256=latest)
    db.session.add(termo)
    db.session.flush()
    # As the termo service does: each version's digest is in the audit trail only.
    audit.record("termo.agent_signed", obj=termo, cert_request=cert_request,
                 details={"sha256": first})
    audit.record("termo.sealed", obj=termo, cert_request=cert_request, details={"sha256": latest})
    db.session.commit()
    return certificate, first, latest


def test_an_issued_request_is_kept_ten_years_after_its_certificate_ends(app, db, factory,
                                                                      agent, mailbox):
    expires = utcnow() - timedelta(days=30)
    cert_request = factory.request(agent=agent)
    certificate, first, latest = _issued(db, cert_request, agent, not_after=expires)
    # Revoked after it expired (kept from the later of the two).
    certificate.revoked_at = expires + timedelta(days=40)
    db.session.commit()
    later = retention.add_years(expires + timedelta(days=40), 10)

    assert retention.expired_requests(retention.add_years(expires, 10) + timedelta(days=1)) == []
    [item] = retention.expired_requests(later)
    assert item.expiry.rule == "certificate" and item.expiry.clock_from == certificate.revoked_at
    app.config["RETENTION_DOCUMENT_YEARS"] = 12
    assert retention.expired_requests(later) == []
    assert retention.purge_request(cert_request.id, later) is None
    app.config["RETENTION_DOCUMENT_YEARS"] = 10

    purge = retention.purge_request(cert_request.id, later)
    assert purge.rule == "certificate"
    assert first in purge.blobs and latest in purge.blobs  # every termo version
    db.session.expire_all()
    assert _count(db, IssuedCertificate) == 0 and _count(db, Termo) == 0
    assert not get_storage().exists(first) and not get_storage().exists(latest)
    assert audit.verify_chain() == []


def test_live_and_valid_requests_are_not_purged(app, db, factory, agent, mailbox):
    open_request = factory.request(agent=agent)
    open_request.state_changed_at = utcnow() - timedelta(days=4000)  # idle, but not final
    valid = factory.request(person=factory.person(cpf="11144477735"), agent=agent)
    _issued(db, valid, agent, not_after=utcnow() + timedelta(days=365))
    far = utcnow() + timedelta(days=365 * 10)
    assert retention.expired_requests(far) == []
    assert retention.purge_request(open_request.id, far) is None
    assert retention.purge_request(valid.id, far) is None
    assert _count(db, CertificateRequest) == 2


def test_a_termo_version_another_request_names_is_kept(app, db, factory, agent, mailbox):
    expires = utcnow() - timedelta(days=1)
    cert_request = factory.request(agent=agent)
    _, first, _ = _issued(db, cert_request, agent, not_after=expires)
    other = factory.request(person=factory.person(cpf="11144477735"), agent=agent)
    audit.record("termo.agent_signed", cert_request=other, details={"sha256": first})
    db.session.commit()
    purge = retention.purge_request(cert_request.id, retention.add_years(expires, 10)
                                    + timedelta(days=1))
    assert first not in purge.blobs and get_storage().exists(first)


def test_the_job_and_the_dry_run(app, db, factory, agent, mailbox, runner):
    from app.jobs.retention import retention_cli, run_retention

    cert_request, _ = _cancelled_after_call(db, factory, agent, factory.person())
    protocol = cert_request.protocol
    app.config["RETENTION_UNISSUED_DAYS"] = 0
    result = runner.invoke(retention_cli, ["run", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert f"Solicitação {protocol} seria expurgada" in result.output
    assert _count(db, CertificateRequest) == 1

    summary = run_retention()
    assert summary["requests_purged"] == [protocol] and summary["blobs_deleted"] == 3
    assert _count(db, CertificateRequest) == 0
    result = runner.invoke(retention_cli, ["run", "--dry-run"])
    assert "Nada a fechar nem a expurgar." in result.output


def test_a_failing_purge_fails_the_job_after_the_others(app, db, factory, agent, mailbox,
                                                        monkeypatch):
    from app.jobs.retention import run_retention

    first, _ = _cancelled_after_call(db, factory, agent, factory.person())
    second, _ = _cancelled_after_call(db, factory, agent,
                                      factory.person(cpf="11144477735"))
    app.config["RETENTION_UNISSUED_DAYS"] = 0
    real = retention._termo_versions
    first_id, second_id = first.id, second.id

    def broken(request_id):
        if request_id == first_id:
            raise OSError("disco indisponível")
        return real(request_id)

    monkeypatch.setattr(retention, "_termo_versions", broken)
    with pytest.raises(RuntimeError, match="disco indisponível"):
        run_retention()
    db.session.expire_all()
    assert db.session.get(CertificateRequest, first_id) is not None
    assert db.session.get(CertificateRequest, second_id) is None
