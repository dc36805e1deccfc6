"""Background jobs in a real `python worker.py`: each job's `BackgroundJob` row through its
retries, the periodic jobs run by RQ's CronScheduler, and a second worker by mistake."""
import os
import signal
import subprocess

from rq.job import JobStatus

from app.jobs.email import sweep_unsent_emails
from app.models import AuditEvent, BackgroundJob, EmailMessage
from tests.support.processes import (count_rows, fresh, pid_alive, rq_job, wait_until,
                                     writing)
from tests.test_maintenance import idle_request


def test_failing_job_row_through_its_retries(app, db, factory, mailbox, smtp_server,
                                             start_worker):
    """A job that fails on every attempt: between attempts its row is `queued` with the
    error, after the last one `failed`, with the count of attempts."""
    app.config["MAIL_MAX_ATTEMPTS"] = 2  # one RQ retry
    app.config["MAIL_RETRY_INTERVALS"] = [3]
    smtp_server.stop()
    start_worker(SMTP_HOST="127.0.0.1", SMTP_PORT=smtp_server.port, MAIL_MAX_ATTEMPTS=2)
    with writing(db):
        factory.request()

    def waiting_for_retry():
        row = fresh(db, BackgroundJob, "email-1")
        return row is not None and row.attempts == 1 and row.status == "queued" and row

    row = wait_until(waiting_for_retry, message="the first attempt failed, retry pending")
    assert row.error.startswith("ConnectionRefusedError") and row.finished_at is None
    assert (fresh(db, EmailMessage, 1).status, fresh(db, EmailMessage, 1).attempts) == ("queued", 1)

    row = wait_until(lambda: (r := fresh(db, BackgroundJob, "email-1")).status == "failed" and r,
                     message="the job row failed")
    assert row.attempts == 2 and row.name == "send_email"
    assert row.error.startswith("ConnectionRefusedError") and row.finished_at is not None
    record = fresh(db, EmailMessage, 1)
    assert (record.status, record.attempts) == ("failed", 2)
    assert record.last_error.startswith("ConnectionRefusedError")
    assert count_rows(db, AuditEvent, action="email.failed", object_id="1") == 1
    wait_until(lambda: rq_job(app, "email-1").get_status() == JobStatus.FAILED,
               message="RQ moved the job to failed")
    # Given up for good: the sweep leaves it alone.
    assert sweep_unsent_emails(older_than_seconds=0) == 0
    assert smtp_server.envelopes == []


def test_cron_runs_the_periodic_jobs(app, db, factory, mailbox, smtp_server, start_worker):
    """The worker's CronScheduler enqueues both periodic jobs again and again; the idle request
    gets its reminder by email once, however many runs."""
    with writing(db):
        cert_request = idle_request(factory, db, days=6)
    start_worker(SMTP_HOST="127.0.0.1", SMTP_PORT=smtp_server.port,
                 EMAIL_SWEEP_SECONDS=1, REMIND_AND_EXPIRE_SECONDS=1)

    def runs(name):
        return count_rows(db, BackgroundJob, name=name, status="done")

    wait_until(lambda: runs("remind_and_expire") >= 3 and runs("sweep_unsent_emails") >= 3,
               message="three runs of each periodic job")
    # Both the invitation and the reminder arrive, each once.
    wait_until(lambda: count_rows(db, EmailMessage, status="sent") == 2,
               message="both emails sent")
    subjects = sorted(m["Subject"] for m in smtp_server.messages)
    assert subjects == [f"Importe seus documentos — protocolo {cert_request.protocol}",
                        f"Lembrete: importe seus documentos — protocolo {cert_request.protocol}"]
    assert count_rows(db, AuditEvent, action="request.reminder") == 1
    assert count_rows(db, BackgroundJob, name="remind_and_expire", status="failed") == 0


def test_two_workers_with_cron_do_no_harm(app, db, factory, mailbox, smtp_server, start_worker):
    """Two workers both started without --no-cron (the mistake docs/email-and-jobs.md warns
    about): the periodic jobs run twice as often, but each request is reminded or expired once
    and each email arrives once."""
    with writing(db):
        idle = [idle_request(factory, db, days=6, n=n) for n in range(1, 4)]
        stale = idle_request(factory, db, days=31, n=4)
    env = dict(SMTP_HOST="127.0.0.1", SMTP_PORT=smtp_server.port, REMIND_AND_EXPIRE_SECONDS=1)
    start_worker(**env)
    start_worker(**env)

    wait_until(lambda: count_rows(db, BackgroundJob, name="remind_and_expire", status="done") >= 6,
               timeout=45, message="six runs of remind_and_expire")
    expected = len(idle) + 1 + len(idle) + 1  # invitations, reminders, one expiry notice
    wait_until(lambda: count_rows(db, EmailMessage, status="sent") == expected,
               message="every email sent")
    assert count_rows(db, EmailMessage) == expected
    assert count_rows(db, EmailMessage, kind="documents_reminder") == len(idle)
    assert count_rows(db, EmailMessage, kind="request_expired") == 1
    assert count_rows(db, AuditEvent, action="request.reminder") == len(idle)
    assert count_rows(db, AuditEvent, action="request.transition", to_state="expired") == 1
    assert fresh(db, type(stale), stale.id).state == "expired"
    assert len(smtp_server.envelopes) == expected
    message_ids = [m["Message-ID"] for m in smtp_server.messages]
    assert len(set(message_ids)) == expected


def test_cron_stops_when_its_worker_is_killed(app, start_worker):
    """A worker killed alone (not its process group) leaves its cron child orphaned; the child
    notices and stops, so the replacement worker's cron is the only one."""
    worker = start_worker(EMAIL_SWEEP_SECONDS=1)

    def cron_pid():
        out = subprocess.run(["ps", "-ww", "-o", "pid=,args=", "--ppid", str(worker.proc.pid)],
                             capture_output=True, text=True).stdout
        pids = [int(line.split()[0]) for line in out.splitlines() if "spawn_main" in line]
        return pids[0] if pids else None

    pid = wait_until(cron_pid, message="the cron child")
    wait_until(lambda: "Enqueued job sweep_unsent_emails" in worker.output(),
               message="the cron at work")
    os.kill(worker.proc.pid, signal.SIGKILL)
    worker.proc.wait(10)
    wait_until(lambda: not pid_alive(pid), timeout=15, message="the orphaned cron gone")
    assert f"cron: worker {worker.proc.pid} is gone; stopping" in worker.output()



def test_sigterm_stops_the_worker_and_its_children(app, db, factory, mailbox, smtp_server,
                                                   start_worker):
    """SIGTERM to the worker alone (a supervisor's stop) ends it, its scheduler and its cron,
    even though worker.py starts a new RQ worker when one gives up on an error."""
    worker = start_worker(SMTP_HOST="127.0.0.1", SMTP_PORT=smtp_server.port)
    with writing(db):
        factory.request()
    smtp_server.wait_for(1)
    wait_until(lambda: len(worker._children()) >= 3, message="the scheduler and cron children")
    children = [pid for pid, _ in worker._children()]

    assert worker.terminate(timeout=20, whole_group=False) == 0
    for pid in children:
        wait_until(lambda: not pid_alive(pid), timeout=10, message=f"child {pid} gone")
    assert "starting a new one" not in worker.output()
