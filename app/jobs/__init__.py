"""Background jobs run by RQ workers (`worker.py`).

Each job function runs inside `job_context`, which gives it an app context of its own and keeps
a `BackgroundJob` row (id = RQ job id) with its status and attempts, so the UI can show it and a
retry after a crash keeps its history.
"""
import logging
import os
from contextlib import contextmanager

from flask import current_app, has_app_context
from redis import Redis
from rq import Queue, get_current_job

log = logging.getLogger(__name__)

_app = None
_app_pid = None


def redis_connection(url: str | None = None) -> Redis:
    url = url or current_app.config["REDIS_URL"]
    return Redis.from_url(url, socket_connect_timeout=5, socket_timeout=30,
                          health_check_interval=30)


def get_queue(name: str = "default") -> Queue:
    return Queue(name, connection=redis_connection())


def enqueue(func: str, *args, queue: str = "default", job_id: str | None = None,
            name: str | None = None, description: str | None = None, retry=None,
            job_timeout: int = 300, **kwargs):
    """Enqueue `func` (a dotted path) on `queue`. A job with the same id still waiting or
    running is left alone, so enqueueing twice does not run the work twice."""
    q = get_queue(queue)
    options = dict(args=args, kwargs=kwargs or None, job_id=job_id,
                   description=description or name, retry=retry, job_timeout=job_timeout,
                   result_ttl=24 * 3600, failure_ttl=30 * 24 * 3600,
                   meta={"name": name or func.rpartition(".")[2]})
    if job_id is None:
        return q.enqueue(func, **options)
    from rq.exceptions import NoSuchJobError
    from rq.job import Job, JobStatus

    # Check-then-enqueue under a lock: two processes enqueueing the same id at once (the
    # commit hook and the sweep, or two sweeps) would otherwise both push it, and two workers
    # could run it side by side.
    with q.connection.lock(f"videoar:enqueue-lock:{job_id}", timeout=30, blocking_timeout=10):
        try:
            existing = Job.fetch(job_id, connection=q.connection)
            if existing.get_status(refresh=True) in (JobStatus.QUEUED, JobStatus.STARTED,
                                                     JobStatus.SCHEDULED, JobStatus.DEFERRED):
                return existing
        except NoSuchJobError:
            pass
        return q.enqueue(func, **options)


def set_app(app):
    """Called by the worker before it forks work-horses."""
    global _app, _app_pid
    _app, _app_pid = app, os.getpid()


def _worker_app():
    global _app, _app_pid
    if _app is None:
        from app import create_app

        _app, _app_pid = create_app(), os.getpid()
    elif _app_pid != os.getpid():
        # A forked work-horse must not reuse the parent's database connections.
        from ..extensions import db

        with _app.app_context():
            for engine in db.engines.values():
                engine.dispose(close=False)
        _app_pid = os.getpid()
    return _app


def _will_retry(job) -> bool:
    """Whether RQ will run `job` again after the current execution fails."""
    return bool(job is not None and job.retries_left and job.retries_left > 0)


@contextmanager
def job_context(name: str, request_id: int | None = None):
    """App context plus the job's `BackgroundJob` row, for the body of a job function.

    The row counts every execution in `attempts`. A failed execution that RQ will retry
    leaves it `queued` (with the error), the last one leaves it `failed`.
    """
    if has_app_context():  # called directly (tests, CLI): reuse the caller's context
        yield
        return
    app = _worker_app()
    with app.app_context():
        from ..extensions import db
        from ..models import BackgroundJob, utcnow

        job = get_current_job()
        row = None
        if job is not None:
            row = db.session.get(BackgroundJob, job.id)
            if row is None:
                row = BackgroundJob(id=job.id, name=name, description=job.description,
                                    request_id=request_id)
                db.session.add(row)
            row.status = "running"
            row.attempts = (row.attempts or 0) + 1
            row.started_at = utcnow()
            row.finished_at = None
            db.session.commit()
        try:
            yield
        except Exception as exc:
            db.session.rollback()
            if row is not None:
                row = db.session.get(BackgroundJob, job.id)
                row.status = "queued" if _will_retry(job) else "failed"
                row.error = f"{type(exc).__name__}: {exc}"[:2000]
                row.finished_at = None if row.status == "queued" else utcnow()
                db.session.commit()
            raise
        else:
            if row is not None:
                row = db.session.get(BackgroundJob, job.id)
                row.status = "done"
                row.error = None
                row.finished_at = utcnow()
                db.session.commit()
        finally:
            db.session.remove()


def record_interruption(job, reason: str):
    """Called by the worker process (not the job) when a job's execution died without
    reaching `job_context`'s own bookkeeping: its work-horse was killed, or its worker
    disappeared and RQ's cleanup found the job abandoned. Moves a `running` row to `queued`
    (RQ will retry it) or `failed`. Never raises: it runs inside RQ's own machinery."""
    try:
        will_retry = _will_retry(job)
        app = _worker_app()
        with app.app_context():
            from ..extensions import db
            from ..models import BackgroundJob, utcnow

            try:
                row = db.session.get(BackgroundJob, job.id)
                if row is not None and row.status == "running":
                    row.status = "queued" if will_retry else "failed"
                    row.error = reason[:2000]
                    row.finished_at = None if will_retry else utcnow()
                    db.session.commit()
            finally:
                db.session.remove()
    except Exception:
        log.exception("could not record the interruption of job %s", getattr(job, "id", job))
