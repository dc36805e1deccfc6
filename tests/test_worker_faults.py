"""Faults around sending email, each with real processes: a `python worker.py`, the aiosmtpd
server, Redis. In every case the email arrives once, and its record says how many attempts it
took (docs/email-and-jobs.md)."""
import logging
import time

from rq.job import JobStatus

from app.models import BackgroundJob, EmailMessage
from tests.support.processes import fresh, rq_job, wait_until, writing
from tests.test_maintenance import cpf_with_check_digits

FIRST_EMAIL = 1
JOB_ID = f"email-{FIRST_EMAIL}"


def _sent(db, email_id=FIRST_EMAIL, timeout=30.0):
    return wait_until(
        lambda: (m := fresh(db, EmailMessage, email_id)) is not None and m.status == "sent" and m,
        timeout, message=f"email {email_id} marked sent")


def _assert_delivered_once(app, db, smtp_server, cert_request, attempts):
    record = fresh(db, EmailMessage, FIRST_EMAIL)
    assert record.status == "sent" and record.transport == "smtp"
    assert record.attempts == attempts
    assert record.last_error is None
    # The job is over, so nothing else will send it: one message at the server is final.
    wait_until(lambda: rq_job(app, JOB_ID).get_status() == JobStatus.FINISHED,
               message="the email job finished")
    assert len(smtp_server.envelopes) == 1
    [msg] = smtp_server.messages
    assert msg["To"] == cert_request.holder.email
    assert msg["Message-ID"] == record.message_id
    assert cert_request.protocol in msg["Subject"]
    row = fresh(db, BackgroundJob, JOB_ID)
    assert (row.name, row.status, row.attempts, row.error) == ("send_email", "done", attempts, None)
    return record


def test_work_horse_killed_while_sending(app, db, factory, mailbox, smtp_server, worker):
    """SIGKILL on the work-horse in the middle of the SMTP conversation: the worker sees it,
    RQ retries the job, and the retry delivers it."""
    app.config["MAIL_RETRY_INTERVALS"] = [1] * 7
    hold = smtp_server.hold("rcpt")  # the horse stops mid-conversation, nothing accepted yet
    with writing(db):
        cert_request = factory.request()
    hold.wait_reached()
    record = fresh(db, EmailMessage, FIRST_EMAIL)
    assert (record.status, record.attempts) == ("sending", 1)

    worker.kill_horse()

    # The retry runs and is held in turn; its job row tells what happened to the first run.
    hold.wait_reached(arrivals=2)
    row = fresh(db, BackgroundJob, JOB_ID)
    assert row.status == "running"
    assert row.error == "work-horse terminated unexpectedly by signal 9"
    assert fresh(db, EmailMessage, FIRST_EMAIL).attempts == 2
    hold.release()

    _sent(db)
    _assert_delivered_once(app, db, smtp_server, cert_request, attempts=2)
    assert rq_job(app, JOB_ID).retries_left == 6  # one of RQ's retries was spent


def test_worker_and_horse_killed_then_new_worker(app, db, factory, mailbox, smtp_server,
                                                 start_worker):
    """The worker and its work-horse both SIGKILLed mid-send: nobody is left to notice. A new
    worker finds the job abandoned through RQ's StartedJobRegistry cleanup and retries it, well
    within two minutes."""
    app.config["MAIL_RETRY_INTERVALS"] = [1] * 7
    # The heartbeat interval bounds how long the dead worker's claim lasts (interval + 60 s);
    # the maintenance interval how soon the new worker looks.
    env = dict(SMTP_HOST="127.0.0.1", SMTP_PORT=smtp_server.port,
               RQ_JOB_MONITORING_INTERVAL=1, RQ_MAINTENANCE_INTERVAL=2)
    first = start_worker(**env)
    hold = smtp_server.hold("rcpt")
    with writing(db):
        cert_request = factory.request()
    hold.wait_reached()

    assert len(first.kill_all()) == 1  # the worker, then its one work-horse
    killed_at = time.monotonic()
    hold.release()  # the held conversation's client is dead: nothing is delivered
    assert rq_job(app, JOB_ID).get_status() == JobStatus.STARTED  # the dead worker's claim

    retry_hold = smtp_server.hold("rcpt")
    start_worker(args=["--no-cron"], **env)  # only RQ's own recovery can bring it back
    retry_hold.wait_reached(timeout=120)
    row = fresh(db, BackgroundJob, JOB_ID)
    assert (row.status, row.attempts) == ("running", 2)
    assert row.error == "abandoned: its worker stopped answering"
    retry_hold.release()

    _sent(db)
    recovered_in = time.monotonic() - killed_at
    assert recovered_in < 120, f"took {recovered_in:.0f} s"
    _assert_delivered_once(app, db, smtp_server, cert_request, attempts=2)
    assert rq_job(app, JOB_ID).retries_left == 6  # retried, not moved to the failed registry


def test_smtp_down_for_a_while(app, db, factory, mailbox, smtp_server, worker):
    """The SMTP server is down for two attempts and comes back on the same port before the
    third: the record counts three attempts, the server has the message once."""
    app.config["MAIL_RETRY_INTERVALS"] = [1, 4, 4, 4, 4, 4, 4]
    smtp_server.stop()
    with writing(db):
        cert_request = factory.request()

    def second_attempt_failed():
        record = fresh(db, EmailMessage, FIRST_EMAIL)
        row = fresh(db, BackgroundJob, JOB_ID)
        return (record.attempts == 2 and record.status == "queued" and row is not None
                and row.status == "queued"
                and rq_job(app, JOB_ID).get_status() == JobStatus.SCHEDULED)

    wait_until(second_attempt_failed, message="the second attempt failed and was rescheduled")
    record = fresh(db, EmailMessage, FIRST_EMAIL)
    assert record.last_error.startswith("ConnectionRefusedError")
    assert fresh(db, BackgroundJob, JOB_ID).error.startswith("ConnectionRefusedError")
    smtp_server.start()

    _sent(db)
    _assert_delivered_once(app, db, smtp_server, cert_request, attempts=3)


def test_redis_down_when_the_email_is_recorded(app, db, factory, mailbox, smtp_server,
                                                private_redis, start_worker, caplog):
    """Redis goes away while the worker is busy sending one email, and while a second request
    commits: that email is recorded but not enqueued. The worker's job in hand still completes;
    RQ's worker then quits on the lost connection and worker.py starts a new one. Redis comes
    back empty; the periodic sweep enqueues the second email and it is delivered. Only the cron,
    which must have lived through the outage, enqueues the sweep."""
    app.config["REDIS_URL"] = private_redis.url
    worker = start_worker(REDIS_URL=private_redis.url, SMTP_HOST="127.0.0.1",
                          SMTP_PORT=smtp_server.port, EMAIL_SWEEP_SECONDS=1,
                          EMAIL_SWEEP_MIN_AGE_SECONDS=0)
    hold = smtp_server.hold("rcpt")
    with writing(db):
        busy_request = factory.request()
    hold.wait_reached()  # the worker is in the middle of email 1

    private_redis.stop()
    # Alembic's fileConfig, run in-process by the `database` fixture, disables the loggers
    # that existed before it; this test reads the app's warning.
    logging.getLogger("app.services.email").disabled = False
    with caplog.at_level(logging.WARNING, logger="app.services.email"), writing(db):
        person = factory.person(cpf=cpf_with_check_digits("123456781"),
                                email="joao@cliente.example", name="João Pereira")
        cert_request = factory.request(person=person)
    assert "email 2 recorded but not enqueued" in caplog.text
    record = fresh(db, EmailMessage, 2)
    assert (record.status, record.attempts) == ("queued", 0)

    hold.release()
    wait_until(lambda: fresh(db, EmailMessage, 1).status == "sent",
               message="the email in hand sent while Redis is away")
    # Keep Redis down until the worker and its cron have both run into it.
    wait_until(lambda: "worker: stopped on an error; starting a new one" in worker.output()
               and "cron: Redis unreachable" in worker.output(),
               message="the worker and its cron noticing Redis is down")
    private_redis.start()  # empty: whatever was queued in it is gone

    _sent(db, email_id=2, timeout=45)
    assert [m["To"] for m in smtp_server.messages] == [busy_request.holder.email,
                                                       cert_request.holder.email]
    for email_id in (1, 2):
        record = fresh(db, EmailMessage, email_id)
        assert (record.status, record.attempts, record.transport) == ("sent", 1, "smtp")
    assert smtp_server.messages[1]["Message-ID"] == fresh(db, EmailMessage, 2).message_id
    wait_until(lambda: rq_job(app, "email-2").get_status() == JobStatus.FINISHED,
               message="the email job finished")
    assert len(smtp_server.envelopes) == 2
