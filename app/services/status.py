"""The system's health and the admin's status page (issue 6): what each process says of itself,
the RQ queues and their failed jobs, media capacity in use, free disk, the last backup and how
long the office's own certificates have left.

Each process answers for itself:

- web: `/healthz` (app/routes/health.py, built from `health()` here);
- media: its heartbeat in Redis and its HTTP health check (app/media/server.py);
- worker: a heartbeat key per worker process, `videoar:worker:heartbeat:<host>:<pid>`, written
  every few seconds by `WorkerHeartbeat` (started by worker.py) and expiring on its own when the
  worker dies; `flask health worker` (or `python worker.py --health`) exits 0 or 1 from it, for
  systemd and compose health checks.

Nothing here changes state except `retry_failed_job`, which requeues a failed RQ job and audits it.
"""
import json
import logging
import os
import shutil
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import click
from flask import current_app
from flask_babel import lazy_gettext as _l
from sqlalchemy import select, text

from ..extensions import db
from ..jobs import redis_connection
from ..models import BackgroundJob, SigningCredential, utcnow
from . import ServiceError, audit

log = logging.getLogger(__name__)

WORKER_HEARTBEAT_PREFIX = "videoar:worker:heartbeat:"
WORKER_HEARTBEAT_SECONDS = 5
# Three missed beats and the worker counts as down (the key expires by itself).
WORKER_HEARTBEAT_TTL = 3 * WORKER_HEARTBEAT_SECONDS
# Certificates closer than this to their end are shown as a warning.
EXPIRY_WARNING_DAYS = 30
FAILED_JOBS_SHOWN = 50


# --- the worker's heartbeat -----------------------------------------------------------------

def worker_heartbeat_key(host: str | None = None, pid: int | None = None) -> str:
    return f"{WORKER_HEARTBEAT_PREFIX}{host or socket.gethostname()}:{pid or os.getpid()}"


def beat_worker(connection, *, host: str | None = None, pid: int | None = None,
                started_at: float | None = None, ttl: int = WORKER_HEARTBEAT_TTL):
    """Write one heartbeat of a worker process (this one unless `host`/`pid` say otherwise)."""
    host, pid = host or socket.gethostname(), pid or os.getpid()
    beat = {"host": host, "pid": pid, "at": time.time(), "started_at": started_at or time.time()}
    connection.set(worker_heartbeat_key(host, pid), json.dumps(beat), ex=ttl)


class WorkerHeartbeat:
    """A daemon thread of the worker process writing its heartbeat every few seconds.

        heartbeat = WorkerHeartbeat(cfg["REDIS_URL"]).start()
        ...
        heartbeat.stop()   # removes the key: a stopped worker is down at once

    Redis being away only skips beats; the thread never raises."""

    def __init__(self, redis_url: str, interval: float = WORKER_HEARTBEAT_SECONDS,
                 ttl: int = WORKER_HEARTBEAT_TTL):
        self.redis_url, self.interval, self.ttl = redis_url, interval, ttl
        self.started_at = time.time()
        self._stop = threading.Event()
        self._thread = None
        self._host, self._pid = socket.gethostname(), os.getpid()

    def start(self) -> "WorkerHeartbeat":
        self._thread = threading.Thread(target=self._run, name="videoar-worker-heartbeat",
                                        daemon=True)
        self._thread.start()
        return self

    def _run(self):
        connection = redis_connection(self.redis_url)
        while not self._stop.is_set():
            try:
                beat_worker(connection, host=self._host, pid=self._pid,
                            started_at=self.started_at, ttl=self.ttl)
            except Exception as exc:  # Redis restarting: the next beat tries again
                log.warning("worker heartbeat failed: %s", exc)
            self._stop.wait(self.interval)

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.interval + 1)
        try:
            redis_connection(self.redis_url).delete(worker_heartbeat_key(self._host, self._pid))
        except Exception:
            pass


def worker_heartbeats(connection, host: str | None = None) -> list[dict]:
    """The live worker processes' heartbeats (of one host when `host` is given)."""
    pattern = WORKER_HEARTBEAT_PREFIX + (f"{host}:*" if host else "*")
    keys = sorted(connection.scan_iter(match=pattern, count=100))
    if not keys:
        return []
    beats = []
    for raw in connection.mget(keys):
        if raw:
            try:
                beats.append(json.loads(raw))
            except ValueError:
                continue
    return beats


def worker_health_exit_code(redis_url: str, *, any_host: bool = False) -> int:
    """0 when a worker process of this host (or of any host) beats, 1 otherwise (Redis
    unreachable included). For systemd and compose health checks."""
    try:
        beats = worker_heartbeats(redis_connection(redis_url),
                                  None if any_host else socket.gethostname())
    except Exception as exc:
        print(f"worker: Redis unreachable ({exc})", file=sys.stderr)
        return 1
    if not beats:
        print("worker: down (no heartbeat)", file=sys.stderr)
        return 1
    print("worker: ok (" + ", ".join(f"{b.get('host')}:{b.get('pid')}" for b in beats) + ")")
    return 0


health_cli = click.Group("health", help="Health checks of the processes (exit 0 or 1).")


@health_cli.command("worker")
@click.option("--any-host", is_flag=True,
              help="Any worker counts, not only one running on this machine.")
def worker_health_command(any_host):
    """Exit 0 when a worker process beats in Redis (this host's by default), 1 otherwise."""
    sys.exit(worker_health_exit_code(current_app.config["REDIS_URL"], any_host=any_host))


# --- health of every process ----------------------------------------------------------------

def health() -> dict:
    """What `/healthz` answers: "web", "database", "redis", "media", "worker" each "ok",
    "down" (a process without heartbeat), "error" or "unknown" (Redis unreachable)."""
    result = {"web": "ok"}
    try:
        db.session.execute(text("SELECT 1"))
        result["database"] = "ok"
    except Exception:
        db.session.rollback()
        result["database"] = "error"
    try:
        conn = redis_connection()
        conn.ping()
        result["redis"] = "ok"
        from ..media import HEARTBEAT_KEY

        result["media"] = "ok" if conn.get(HEARTBEAT_KEY) else "down"
        result["worker"] = "ok" if worker_heartbeats(conn) else "down"
    except Exception:
        result["redis"] = "error"
        result["media"] = "unknown"
        result["worker"] = "unknown"
    return result


# --- the status page ------------------------------------------------------------------------

QUEUE_LABELS = {"default": _l("geral"), "email": _l("e-mails")}


@dataclass
class QueueStatus:
    name: str
    waiting: int
    running: int
    scheduled: int
    failed: int

    @property
    def label(self):
        return QUEUE_LABELS.get(self.name, self.name)


@dataclass
class FailedJob:
    id: str
    queue: str
    function: str
    name: str | None
    failed_at: datetime | None
    error: str | None  # the exception's last line


@dataclass
class DiskStatus:
    label: str
    path: str
    total: int | None
    free: int | None
    min_free: int | None = None  # below this the page warns

    @property
    def low(self) -> bool:
        return self.free is not None and self.min_free is not None and self.free < self.min_free

    @property
    def used_percent(self) -> int | None:
        if not self.total:
            return None
        return round(100 * (self.total - self.free) / self.total)


@dataclass
class CertificateStatus:
    label: str
    subject: str | None
    not_after: datetime | None
    days_left: int | None = None

    @property
    def expired(self) -> bool:
        return self.days_left is not None and self.days_left < 0

    @property
    def expiring(self) -> bool:
        return self.days_left is not None and 0 <= self.days_left < EXPIRY_WARNING_DAYS


@dataclass
class BackupStatus:
    finished_at: datetime | None
    file: str | None
    size: int | None
    ok: bool
    error: str | None


@dataclass
class SystemStatus:
    health: dict
    workers: list[dict] = field(default_factory=list)
    media: list[dict] = field(default_factory=list)
    queues: list[QueueStatus] = field(default_factory=list)
    failed_jobs: list[FailedJob] = field(default_factory=list)
    failed_total: int = 0
    redis_error: str | None = None
    disks: list[DiskStatus] = field(default_factory=list)
    backup: BackupStatus | None = None
    backup_unreadable: bool = False
    certificates: list[CertificateStatus] = field(default_factory=list)
    checked_at: datetime | None = None

    @property
    def media_calls(self) -> int:
        return sum(int(n.get("calls") or 0) for n in self.media)

    @property
    def media_capacity(self) -> int:
        return sum(int(n.get("capacity") or 0) for n in self.media)


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _last_line(text_: str | None) -> str | None:
    lines = [line.strip() for line in (text_ or "").splitlines() if line.strip()]
    return lines[-1][:300] if lines else None


def _queues(connection) -> tuple[list[QueueStatus], list[FailedJob], int]:
    from rq import Queue
    from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

    queues, failed, failed_total = [], [], 0
    for name in current_app.config["RQ_QUEUES"]:
        queue = Queue(name, connection=connection)
        failed_registry = FailedJobRegistry(queue=queue)
        status = QueueStatus(name=name, waiting=queue.count,
                             running=StartedJobRegistry(queue=queue).count,
                             scheduled=ScheduledJobRegistry(queue=queue).count,
                             failed=failed_registry.count)
        queues.append(status)
        failed_total += status.failed
        ids = failed_registry.get_job_ids(0, FAILED_JOBS_SHOWN - 1, desc=True)
        for job_id, job in zip(ids, queue.job_class.fetch_many(ids, connection=connection)):
            failed.append(_failed_job(job_id, name, job))
    failed.sort(key=lambda j: j.failed_at or datetime.min.replace(tzinfo=timezone.utc),
                reverse=True)
    return queues, failed[:FAILED_JOBS_SHOWN], failed_total


def _failed_job(job_id: str, queue: str, job) -> FailedJob:
    """What the page shows of a failed job: never its arguments."""
    if job is None:  # its hash expired before the registry entry
        return FailedJob(id=job_id, queue=queue, function="?", name=None, failed_at=None,
                         error=None)
    try:
        function = job.func_name or "?"
    except Exception:  # data that cannot be read back (a renamed module…)
        function = "?"
    error, failed_at = None, _aware(job.ended_at)
    try:
        result = job.latest_result()
    except Exception:
        result = None
    if result is not None and result.type == result.Type.FAILED:
        error = _last_line(result.exc_string)
        failed_at = failed_at or _aware(result.created_at)
    return FailedJob(id=job.id, queue=queue, function=function, name=(job.meta or {}).get("name"),
                     failed_at=failed_at, error=error)


def _existing(path: Path) -> Path:
    """The path itself or its nearest existing parent (a root not created yet still has a disk)."""
    path = path.resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _disks(config) -> list[DiskStatus]:
    from .recording import recordings_root
    from .storage import storage_root

    roots = [(_l("Gravações"), recordings_root(config), config["RECORDING_MIN_FREE_MB"] * 1024 * 1024)]
    if (config.get("STORAGE_BACKEND") or "local").strip().lower() == "local":
        roots.insert(0, (_l("Documentos (armazenamento)"), storage_root(config), None))
    # Documents in an S3 bucket (STORAGE_BACKEND=s3) have no local disk to measure.
    disks = []
    for label, root, min_free in roots:
        try:
            usage = shutil.disk_usage(_existing(Path(root)))
            disks.append(DiskStatus(label, str(root), usage.total, usage.free, min_free))
        except OSError:
            disks.append(DiskStatus(label, str(root), None, None, min_free))
    return disks


def backup_dir(config) -> Path:
    return Path(config.get("BACKUP_DIR") or Path(config["INSTANCE_DIR"]) / "backups")


def last_backup(config) -> tuple[BackupStatus | None, bool]:
    """The last backup as the backup job (app/services/backup.py) recorded it in
    `<BACKUP_DIR or INSTANCE_DIR/backups>/last.json`:
    (None, False) when there is none, (None, True) when the file cannot be read."""
    path = backup_dir(config) / "last.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None, False
    except (OSError, ValueError):
        return None, True
    if not isinstance(data, dict):
        return None, True
    finished_at = None
    try:  # app/services/backup.py writes "at"; "finished_at" is read too
        finished_at = _aware(datetime.fromisoformat(
            str(data.get("finished_at") or data.get("at"))))
    except ValueError:
        pass
    size = data.get("size")
    return BackupStatus(finished_at=finished_at, file=data.get("file") or None,
                        size=size if isinstance(size, int) else None,
                        ok=bool(data.get("ok")), error=data.get("error") or None), False


def _days_left(not_after: datetime, now: datetime) -> int:
    return (_aware(not_after) - now) // timedelta(days=1)


def _certificates(now: datetime) -> list[CertificateStatus]:
    """The office seal, the timestamp authority, each active agent's and the built-in CA's
    (root and issuing). The newest active credential of each is shown even when expired."""
    from cryptography import x509

    from . import ca as ca_service

    labels = ca_service.CREDENTIAL_LABELS
    rows = db.session.execute(select(SigningCredential).where(SigningCredential.active.is_(True))
                              .order_by(SigningCredential.id.desc())).scalars().all()
    newest = {}
    for row in rows:
        newest.setdefault((row.purpose, row.staff_user_id), row)
    certificates = []
    for purpose in ("seal", "tsa"):
        row = newest.get((purpose, None))
        certificates.append(CertificateStatus(
            labels[purpose], row.subject if row else None, _aware(row.not_after) if row else None,
            _days_left(row.not_after, now) if row else None))
    for (purpose, _), row in sorted(newest.items(), key=lambda item: item[1].subject):
        if purpose == "agent":
            label = _l("agente: %(name)s", name=row.staff_user.name if row.staff_user else "?")
            certificates.append(CertificateStatus(label, row.subject, _aware(row.not_after),
                                                  _days_left(row.not_after, now)))
    if ca_service.is_homologation():
        directory = ca_service.ca_dir()
        # The certificates only: the keys (and KEYS_PASSPHRASE) are not needed to read dates.
        for label, name in ((_l("AC interna: raiz"), "root.crt"),
                            (_l("AC interna: emissora"), "issuing.crt")):
            try:
                cert = x509.load_pem_x509_certificate((directory / name).read_bytes())
            except (OSError, ValueError):
                certificates.append(CertificateStatus(label, None, None))
                continue
            certificates.append(CertificateStatus(
                label, cert.subject.rfc4514_string(), cert.not_valid_after_utc,
                _days_left(cert.not_valid_after_utc, now)))
    return certificates


def system_status(now: datetime | None = None) -> SystemStatus:
    """Everything the status page shows, read now. Redis being down is reported, not raised."""
    from ..media.client import nodes

    now = now or utcnow()
    config = current_app.config
    status = SystemStatus(health=health(), checked_at=now)
    try:
        connection = redis_connection()
        status.workers = sorted(worker_heartbeats(connection),
                                key=lambda b: (str(b.get("host")), b.get("pid") or 0))
        status.media = sorted(nodes(connection), key=lambda n: str(n.get("ident")))
        status.queues, status.failed_jobs, status.failed_total = _queues(connection)
    except Exception as exc:
        log.warning("status: Redis unreachable: %s", exc)
        status.redis_error = str(exc)[:300]
    status.disks = _disks(config)
    status.backup, status.backup_unreadable = last_backup(config)
    status.certificates = _certificates(now)
    return status


# --- retrying a failed job ------------------------------------------------------------------

class JobRetryError(ServiceError):
    pass


def retry_failed_job(job_id: str, *, actor=None):
    """Put a failed RQ job back on its queue (`FailedJobRegistry.requeue`), mark its
    `BackgroundJob` row queued again and audit `job.retry`. Raises JobRetryError when the job
    is not among the failed ones (retried already, expired, or an unknown id)."""
    from rq import Queue
    from rq.exceptions import InvalidJobOperation, NoSuchJobError
    from rq.job import Job
    from rq.registry import FailedJobRegistry

    connection = redis_connection()
    try:
        job = Job.fetch(job_id, connection=connection)
    except NoSuchJobError:
        raise JobRetryError(_l("Esta tarefa não está mais entre as que falharam."))
    if job.origin not in current_app.config["RQ_QUEUES"]:
        raise JobRetryError(_l("Esta tarefa não está mais entre as que falharam."))
    registry = FailedJobRegistry(queue=Queue(job.origin, connection=connection))
    try:
        registry.requeue(job)
    except InvalidJobOperation:
        raise JobRetryError(_l("Esta tarefa não está mais entre as que falharam."))
    row = db.session.get(BackgroundJob, job.id)
    if row is not None and row.status == "failed":
        row.status = "queued"
        row.finished_at = None
    try:
        function = job.func_name
    except Exception:
        function = None
    audit.record("job.retry", actor=actor, obj=row,
                 details={"job_id": job.id, "queue": job.origin, "function": function})
    return job
