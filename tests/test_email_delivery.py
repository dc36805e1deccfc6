"""Sending email through a real worker: the outbox, the record checked before sending, the
server's refusals, and the one window where a duplicate is still possible."""
from email import message_from_bytes, policy
from pathlib import Path

from rq.job import JobStatus

from app.models import AuditEvent, BackgroundJob, EmailMessage
from app.services import email
from tests.support.processes import count_rows, fresh, rq_job, wait_until, writing


def _status(db, status, email_id=1, timeout=30.0):
    return wait_until(
        lambda: (m := fresh(db, EmailMessage, email_id)) is not None and m.status == status and m,
        timeout, message=f"email {email_id} {status}")


def _job_finished(app, job_id="email-1"):
    wait_until(lambda: rq_job(app, job_id).get_status() == JobStatus.FINISHED,
               message=f"job {job_id} finished")
    return rq_job(app, job_id)


def test_outbox_without_smtp(app, db, factory, mailbox, start_worker):
    """With SMTP_HOST empty the worker writes each message to instance/outbox, where the
    admin reads it."""
    start_worker()  # SMTP_HOST is empty in the test environment
    with writing(db):
        cert_request = factory.request()
    record = _status(db, "sent")
    assert (record.transport, record.attempts) == ("outbox", 1)
    path = Path(app.config["INSTANCE_DIR"]) / "outbox" / "00000001.eml"
    msg = message_from_bytes(path.read_bytes(), policy=policy.default)
    assert msg["Message-ID"] == record.message_id
    assert msg["To"] == cert_request.holder.email
    assert msg["Subject"] == f"Importe seus documentos — protocolo {cert_request.protocol}"
    assert cert_request.protocol in msg.get_body(("plain",)).get_content()


def test_a_retried_job_checks_the_record_first(app, db, factory, mailbox, smtp_server, worker):
    """Running the job of a message already sent (a retry, a second enqueue) sends nothing."""
    with writing(db):
        factory.request()
    _status(db, "sent")
    smtp_server.wait_for(1)
    _job_finished(app)

    email.enqueue_send(1)
    job = _job_finished(app)
    assert job.return_value() == "already-sent"
    assert len(smtp_server.envelopes) == 1
    record = fresh(db, EmailMessage, 1)
    assert (record.status, record.attempts) == ("sent", 1)
    assert count_rows(db, AuditEvent, action="email.sent", object_id="1") == 1
    assert fresh(db, BackgroundJob, "email-1").attempts == 2  # the job ran twice, sent once


def test_enqueueing_twice_runs_once(app, db, factory, mailbox, smtp_server, worker):
    """A message whose job still waits is not queued a second time."""
    hold = smtp_server.hold("rcpt")
    with writing(db):
        factory.request()
    hold.wait_reached()  # the job is running
    assert email.enqueue_send(1).get_status() == JobStatus.STARTED
    hold.release()
    _status(db, "sent")
    _job_finished(app)
    assert len(smtp_server.envelopes) == 1
    assert fresh(db, BackgroundJob, "email-1").attempts == 1


def test_permanent_refusal_is_not_retried(app, db, factory, mailbox, smtp_server, worker):
    app.config["MAIL_RETRY_INTERVALS"] = [1] * 7
    smtp_server.rcpt_reply = "550 5.1.1 Mailbox unavailable"
    with writing(db):
        factory.request()
    record = _status(db, "failed")
    assert record.attempts == 1
    assert record.last_error.startswith("SMTPRecipientsRefused")
    assert "550" in record.last_error
    job = _job_finished(app)
    assert job.return_value() == "failed" and job.retries_left == 7
    assert count_rows(db, AuditEvent, action="email.failed", object_id="1") == 1
    assert smtp_server.envelopes == []


def test_odd_goodbye_after_acceptance_does_not_resend(app, db, factory, mailbox, smtp_server,
                                                     worker):
    """The server accepted the message, then answered QUIT with an error: the message counts
    as sent, and the job is not retried."""
    app.config["MAIL_RETRY_INTERVALS"] = [1] * 7
    smtp_server.quit_reply = "421 4.3.0 Going away"
    with writing(db):
        factory.request()
    record = _status(db, "sent")
    assert record.attempts == 1
    assert _job_finished(app).retries_left == 7
    assert len(smtp_server.envelopes) == 1


def test_the_duplicate_window(app, db, factory, mailbox, smtp_server, worker):
    """The window docs/email-and-jobs.md admits: the server has accepted the message but the
    work-horse dies before the record says so. The retry sends it again, with the same
    Message-ID, so the receiving side can drop the copy."""
    app.config["MAIL_RETRY_INTERVALS"] = [1] * 7
    hold = smtp_server.hold("data")  # stored, but the client is not told yet
    with writing(db):
        factory.request()
    hold.wait_reached()
    worker.kill_horse()
    hold.release()

    record = _status(db, "sent")
    _job_finished(app)
    assert record.attempts == 2
    first, second = smtp_server.messages
    assert first["Message-ID"] == second["Message-ID"] == record.message_id
    for header in ("From", "To", "Subject", "Date"):
        assert first[header] == second[header]
    assert first.get_body(("plain",)).get_content() == second.get_body(("plain",)).get_content()


def test_no_transaction_open_while_the_server_answers(app, db, factory, mailbox, smtp_server,
                                                      worker):
    """While the SMTP server takes its time, others can write: the job holds no transaction
    (on SQLite it would hold the write lock, and a web request would fail "database is
    locked" once the busy timeout ran out)."""
    hold = smtp_server.hold("rcpt")
    with writing(db):
        factory.request()
    hold.wait_reached()
    with writing(db):
        factory.staff(roles=("agent",))
    assert fresh(db, EmailMessage, 1).status == "sending"
    hold.release()
    _status(db, "sent")
