"""Reminders and expiry of requests waiting on the client (`remind_and_expire`), on both
databases. Idle time is made by moving the request's timestamps into the past."""
import threading
from datetime import timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select, update

from app.jobs.maintenance import remind_and_expire
from app.models import AuditEvent, CertificateRequest, utcnow
from app.services import audit, links
from app.services.office import get_settings


def cpf_with_check_digits(nine: str) -> str:
    digits = [int(c) for c in nine]
    for length in (9, 10):
        total = sum(d * w for d, w in zip(digits, range(length + 1, 1, -1)))
        digits.append((total * 10 % 11) % 10)
    return "".join(map(str, digits))


def idle_request(factory, db, days, n=1, **times):
    """A request in documents_pending whose last change was `days` ago."""
    person = factory.person(cpf=cpf_with_check_digits(f"{123456780 + n:09d}"),
                            email=f"cliente{n}@cliente.example", name=f"Cliente Número {n}")
    cert_request = factory.request(person=person)
    past = utcnow() - timedelta(days=days)
    db.session.execute(update(CertificateRequest).where(CertificateRequest.id == cert_request.id)
                       .values(state_changed_at=past, **times))
    db.session.commit()
    return db.session.get(CertificateRequest, cert_request.id)


def events(db, cert_request, action):
    return db.session.execute(
        select(AuditEvent).where(AuditEvent.request_id == cert_request.id,
                                 AuditEvent.action == action).order_by(AuditEvent.seq)
    ).scalars().all()


def test_reminder_once_per_idle_spell(app, db, factory, mailbox):
    settings = get_settings()
    settings.reminder_after_days, settings.expire_after_days = 5, 30
    db.session.commit()
    cert_request = idle_request(factory, db, days=6)
    fresh_request = idle_request(factory, db, days=4, n=2)

    assert remind_and_expire() == {"reminded": 1, "expired": 0}
    assert remind_and_expire() == {"reminded": 0, "expired": 0}  # not one per run

    [reminder] = mailbox.messages("documents_reminder")
    assert reminder.request_id == cert_request.id
    assert reminder.to_address == cert_request.holder.email
    assert reminder.subject == f"Lembrete: importe seus documentos — protocolo {cert_request.protocol}"
    link = links.current_link(cert_request, "documents")
    assert links.url_for_link(link) in reminder.body_text
    assert links.url_for_link(link) in reminder.body_html
    expires = (cert_request.state_changed_at + timedelta(days=30)).astimezone(
        ZoneInfo("America/Sao_Paulo"))
    assert (f"Se os documentos não forem enviados até {expires:%d/%m/%Y %H:%M} "
            f"(horário de America/Sao_Paulo), a solicitação expira") in reminder.body_text
    assert f"até {expires:%d/%m/%Y %H:%M} (horário de America/Sao_Paulo)" in reminder.body_html
    assert f"protocolo {cert_request.protocol}" in reminder.body_html
    [event] = events(db, cert_request, "request.reminder")
    assert event.actor_type == "system"
    assert cert_request.reminder_sent_at is not None
    assert fresh_request.reminder_sent_at is None and cert_request.state == "documents_pending"

    # The client acted after the reminder, then went quiet again for 6 days: a new reminder.
    db.session.execute(update(CertificateRequest).where(CertificateRequest.id == cert_request.id)
                       .values(reminder_sent_at=utcnow() - timedelta(days=10),
                               last_client_activity_at=utcnow() - timedelta(days=6)))
    db.session.commit()
    assert remind_and_expire() == {"reminded": 1, "expired": 0}
    assert remind_and_expire() == {"reminded": 0, "expired": 0}
    assert len(mailbox.messages("documents_reminder")) == 2
    assert len(events(db, cert_request, "request.reminder")) == 2
    assert audit.verify_chain() == []


def test_reminder_replaces_an_expired_link(app, db, factory, mailbox):
    cert_request = idle_request(factory, db, days=6)
    old = links.current_link(cert_request, "documents")
    old.expires_at = utcnow() - timedelta(hours=1)
    db.session.commit()

    remind_and_expire()

    new = links.current_link(cert_request, "documents")
    assert new.id != old.id and new.expires_at > utcnow()
    assert db.session.get(type(old), old.id).revoked_at is not None
    [reminder] = mailbox.messages("documents_reminder")
    assert links.url_for_link(new) in reminder.body_text
    assert links.url_for_link(old) not in reminder.body_text


def test_expiry(app, db, factory, mailbox):
    settings = get_settings()
    settings.reminder_after_days, settings.expire_after_days = 5, 30
    db.session.commit()
    cert_request = idle_request(factory, db, days=31, reminder_sent_at=utcnow() - timedelta(days=26))
    # A pendency counts too; one the client touched recently does not expire.
    in_pendency = idle_request(factory, db, days=40, n=2)
    db.session.execute(update(CertificateRequest).where(CertificateRequest.id == in_pendency.id)
                       .values(state="pendency"))
    active = idle_request(factory, db, days=40, n=3,
                          last_client_activity_at=utcnow() - timedelta(days=2))
    # Waiting on the office, not on the client: never reminded nor expired by this job.
    submitted = idle_request(factory, db, days=60, n=4)
    db.session.execute(update(CertificateRequest).where(CertificateRequest.id == submitted.id)
                       .values(state="documents_submitted"))
    db.session.commit()

    assert remind_and_expire() == {"reminded": 0, "expired": 2}
    assert remind_and_expire() == {"reminded": 0, "expired": 0}

    for r in (cert_request, in_pendency):
        db.session.refresh(r)
        assert r.state == "expired"
        assert r.links and all(link.revoked_at is not None for link in r.links)
        [event] = [e for e in events(db, r, "request.transition") if e.to_state == "expired"]
        assert event.actor_type == "system"
        assert event.reason == "sem ação do cliente por 30 dias"
        assert '"links_revoked": 1' in event.details
    assert events(db, in_pendency, "request.transition")[-1].from_state == "pendency"
    db.session.refresh(active)
    db.session.refresh(submitted)
    assert (active.state, submitted.state) == ("documents_pending", "documents_submitted")
    assert links.current_link(active, "documents") is not None

    expired_mails = mailbox.messages("request_expired")
    assert sorted(m.request_id for m in expired_mails) == sorted([cert_request.id, in_pendency.id])
    mail = next(m for m in expired_mails if m.request_id == cert_request.id)
    assert mail.to_address == cert_request.holder.email
    assert mail.subject == f"Solicitação expirada — protocolo {cert_request.protocol}"
    assert (f"protocolo {cert_request.protocol}, expirou porque os documentos não foram "
            "enviados a tempo") in mail.body_text
    assert "fale conosco para abrir uma nova solicitação" in mail.body_html
    assert mailbox.messages("documents_reminder") == []
    assert audit.verify_chain() == []


def test_days_are_settings(app, db, factory, mailbox):
    cert_request = idle_request(factory, db, days=3)
    assert remind_and_expire() == {"reminded": 0, "expired": 0}
    settings = get_settings()
    settings.reminder_after_days, settings.expire_after_days = 1, 2
    db.session.commit()
    assert remind_and_expire() == {"reminded": 0, "expired": 1}
    db.session.refresh(cert_request)
    assert cert_request.state == "expired"


def test_concurrent_runs_remind_once(app, db, factory, mailbox):
    """Two runs at once (two cron schedulers by mistake) lock each request and read it again:
    each idle request gets one reminder."""
    requests = [idle_request(factory, db, days=6, n=n) for n in range(1, 9)]
    results, errors = [], []
    barrier = threading.Barrier(2)

    def run():
        try:
            with app.app_context():
                barrier.wait(10)
                results.append(remind_and_expire())
        except Exception as exc:  # reported below, with the other thread's result
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    db.session.rollback()  # read what the threads committed
    assert errors == []
    assert sum(r["reminded"] for r in results) == len(requests)
    assert len(mailbox.messages("documents_reminder")) == len(requests)
    for r in requests:
        assert len(events(db, r, "request.reminder")) == 1
    assert audit.verify_chain() == []

