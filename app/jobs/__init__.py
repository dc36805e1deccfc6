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
    if job_id is not None:
        from rq.job import Job, JobStatus
        from rq.exceptions import NoSuchJobError

        try:
            existing = Job.fetch(job_id, connection=q.connection)
            if existing.get_status(refresh=True) in (JobStatus.QUEUED, JobStatus.STARTED,
                                                     JobStatus.SCHEDULED, JobStatus.DEFERRED):
                return existing
        except NoSuchJobError:
            pass
    return q.enqueue(func, args=args, kwargs=kwargs or None, job_id=job_id, description=description or name, retry=retry,
                     job_timeout=job_timeout, result_ttl=24 * 3600, failure_ttl=30 * 24 * 3600,
                     meta={"name": name or func.rpartition(".")[2]})


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


@contextmanager
def job_context(name: str, request_id: int | None = None):
    """App context plus the job's `BackgroundJob` row, for the body of a job function."""
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
            db.session.commit()
        try:
            yield
        except Exception as exc:
            db.session.rollback()
            if row is not None:
                row = db.session.get(BackgroundJob, job.id)
                row.status = "failed"
                row.error = f"{type(exc).__name__}: {exc}"[:2000]
                row.finished_at = utcnow()
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
