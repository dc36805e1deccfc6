"""The admin's status page (queues, failed jobs and their retry, media capacity, disk, backup,
certificate expiry) and the worker's health: its heartbeat, `/healthz` and `flask health worker`."""
import json
import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from app.models import AuditEvent, BackgroundJob, SigningCredential, utcnow
from app.services import status as status_service
from tests.support.processes import ROOT, wait_until


def failing_job():
    """A job that fails the way a real one does (run by the worker under test)."""
    raise RuntimeError("servidor SMTP recusou a conexão")


def never_run_job():
    """Enqueued only to be counted; no worker runs it in these tests."""


def _queue_cell(html, queue, column):
    row = re.search(rf'<tr id="queue-{queue}">(.*?)</tr>', html, re.S)
    assert row, f"queue {queue} not shown"
    return int(re.search(rf'class="queue-{column}[^"]*">(\d+)<', row.group(1)).group(1))


def _run_queued_jobs(app):
    """RQ's SimpleWorker in this process, until the queues are empty."""
    from rq import Queue, SimpleWorker

    from app.jobs import redis_connection

    connection = redis_connection()
    queues = [Queue(name, connection=connection) for name in app.config["RQ_QUEUES"]]
    SimpleWorker(queues, connection=connection).work(burst=True)


def _fail_one_job(app):
    from app.jobs import enqueue

    job = enqueue("tests.test_status.failing_job", name="teste_falha")
    _run_queued_jobs(app)
    return job


# --- the status page ------------------------------------------------------------------------

def test_admin_sees_queue_lengths_change(client, auth, admin, app):
    from app.jobs import enqueue

    auth.login(admin.email)
    page = client.get("/admin/estado")
    assert page.status_code == 200
    assert "Estado do sistema" in page.text
    assert _queue_cell(page.text, "email", "waiting") == 0
    assert _queue_cell(page.text, "default", "waiting") == 0

    enqueue("tests.test_status.never_run_job", queue="email")
    enqueue("tests.test_status.never_run_job", queue="email")
    enqueue("tests.test_status.never_run_job", queue="default")
    # The polled fragment alone, as htmx asks for it.
    fragment = client.get("/admin/estado", headers={"HX-Request": "true"})
    assert fragment.status_code == 200
    assert "<nav" not in fragment.text and 'hx-trigger="every 10s"' in fragment.text
    assert _queue_cell(fragment.text, "email", "waiting") == 2
    assert _queue_cell(fragment.text, "default", "waiting") == 1
    assert _queue_cell(fragment.text, "default", "failed") == 0


def test_failed_job_is_listed_and_retried(client, auth, admin, app, db):
    auth.login(admin.email)
    assert "Nenhuma tarefa falhou." in client.get("/admin/estado").text

    job = _fail_one_job(app)
    page = client.get("/admin/estado").text
    assert _queue_cell(page, "default", "failed") == 1
    assert _queue_cell(page, "default", "waiting") == 0
    row = re.search(rf'<tr id="failed-job-{job.id}">(.*?)</tr>', page, re.S)
    assert row, "the failed job is not listed"
    assert "tests.test_status.failing_job" in row.group(1)
    assert "RuntimeError: servidor SMTP recusou a conexão" in row.group(1)
    assert "Traceback" not in row.group(1)
    assert re.search(r"\d\d/\d\d/\d{4} \d\d:\d\d:\d\d", row.group(1))
    assert "Tentar novamente" in row.group(1)

    response = client.post(f"/admin/estado/tarefas/{job.id}/tentar-novamente")
    assert response.status_code == 302 and response.location.endswith("/admin/estado")
    page = client.get("/admin/estado").text
    assert "Tarefa recolocada na fila." in page
    assert f'id="failed-job-{job.id}"' not in page
    assert _queue_cell(page, "default", "failed") == 0
    assert _queue_cell(page, "default", "waiting") == 1
    event = db.session.execute(select(AuditEvent).where(AuditEvent.action == "job.retry")
                               ).scalar_one()
    assert event.actor_label == admin.email
    details = json.loads(event.details)
    assert details["job_id"] == job.id
    assert details["function"] == "tests.test_status.failing_job"

    # A second click finds it retried already: refused, nothing audited twice.
    again = client.post(f"/admin/estado/tarefas/{job.id}/tentar-novamente",
                        follow_redirects=True)
    assert "Esta tarefa não está mais entre as que falharam." in again.text
    assert len(db.session.execute(select(AuditEvent).where(AuditEvent.action == "job.retry")
                                  ).scalars().all()) == 1

    # It runs again (and fails again: back among the failed ones).
    _run_queued_jobs(app)
    page = client.get("/admin/estado").text
    assert f'id="failed-job-{job.id}"' in page


def test_retry_puts_the_background_job_row_back_in_the_queue(client, auth, admin, app, db):
    from app.jobs import redis_connection

    job = _fail_one_job(app)
    db.session.add(BackgroundJob(id=job.id, name="teste_falha", status="failed", attempts=1,
                                 error="RuntimeError: x", finished_at=utcnow()))
    db.session.commit()
    auth.login(admin.email)
    client.post(f"/admin/estado/tarefas/{job.id}/tentar-novamente")
    db.session.expire_all()
    row = db.session.get(BackgroundJob, job.id)
    assert row.status == "queued" and row.finished_at is None
    event = db.session.execute(select(AuditEvent).where(AuditEvent.action == "job.retry")
                               ).scalar_one()
    assert (event.object_type, event.object_id) == ("background_job", job.id)
    assert redis_connection().llen("rq:queue:default") == 1


def test_retry_of_an_unknown_job_is_refused(client, auth, admin, db):
    auth.login(admin.email)
    response = client.post("/admin/estado/tarefas/nao-existe/tentar-novamente",
                           follow_redirects=True)
    assert "Esta tarefa não está mais entre as que falharam." in response.text
    assert db.session.execute(select(AuditEvent).where(AuditEvent.action == "job.retry")
                              ).first() is None


def test_media_capacity_disk_and_backup(client, auth, admin, app):
    from app.jobs import redis_connection
    from app.media import NODE_PREFIX

    auth.login(admin.email)
    page = client.get("/admin/estado").text
    assert "Nenhum servidor de vídeo respondendo" in page
    assert "Nenhum backup ainda." in page
    disks = re.search(r'id="status-disks">(.*?)</section>', page, re.S).group(1)
    assert "Documentos (armazenamento)" in disks and "Gravações" in disks
    assert str(app.config["INSTANCE_DIR"] / "storage") in disks
    assert len(re.findall(r'class="disk-free[^"]*">[\d.,]+ [kMGT]?B', disks)) == 2

    connection = redis_connection()
    for ident, calls in (("media-a", 3), ("media-b", 1)):
        connection.set(NODE_PREFIX + ident, json.dumps(
            {"ident": ident, "calls": calls, "capacity": 10, "recording": 1}), ex=30)
    backups = app.config["INSTANCE_DIR"] / "backups"
    backups.mkdir(parents=True)
    (backups / "last.json").write_text(json.dumps({
        "finished_at": "2026-03-02T06:00:00+00:00", "file": "videoar-20260302.tar.zst",
        "size": 5_000_000, "ok": True, "error": None}))
    page = client.get("/admin/estado").text
    media = re.search(r'id="media-capacity">(.*?)</td>', page, re.S).group(1)
    assert "4 de 20 chamadas em uso" in media
    assert "media-a</code>: 3 / 10 chamadas" in media
    backup = re.search(r'id="status-backup">(.*?)</section>', page, re.S).group(1)
    assert "Nenhum backup ainda." not in backup
    assert "02/03/2026 03:00" in backup  # in the office's zone (São Paulo)
    assert "videoar-20260302.tar.zst" in backup and "5.0 MB" in backup
    assert "concluído" in backup

    # As app/services/backup.py writes it ("at"), after a failure.
    (backups / "last.json").write_text(json.dumps({
        "at": "2026-03-03T06:00:00+00:00", "ok": False, "error": "disco cheio"}))
    backup = re.search(r'id="status-backup">(.*?)</section>',
                       client.get("/admin/estado").text, re.S).group(1)
    assert "falhou: disco cheio" in backup and "status-warning" in backup
    assert "03/03/2026 03:00" in backup


def test_certificate_expiry_of_seal_and_ca(client, auth, admin, app, db):
    from app.services import ca as ca_service
    from tests.support.dossier import install_ca

    auth.login(admin.email)
    certificates = re.search(r'id="status-certificates">(.*?)</section>',
                             client.get("/admin/estado").text, re.S).group(1)
    assert "selo do escritório" in certificates and "nenhum" in certificates

    install_ca(app)
    seal = ca_service.credential_for("seal")
    db.session.commit()
    ca = ca_service.builtin_ca()
    now = datetime.now(timezone.utc)
    page = client.get("/admin/estado").text
    rows = re.findall(r'<tr class="certificate[^"]*">(.*?)</tr>',
                      re.search(r'id="status-certificates">(.*?)</section>', page, re.S).group(1),
                      re.S)
    by_label = {re.search(r"<td>(.*?)</td>", r).group(1): r for r in rows}
    expected = {"selo do escritório": seal.not_after,
                "AC interna: raiz": ca.root_cert.not_valid_after_utc,
                "AC interna: emissora": ca.issuing_cert.not_valid_after_utc}
    for label, not_after in expected.items():
        row = by_label[label]
        days = (not_after - now) // timedelta(days=1)
        assert f"{days} dias" in row, (label, row)
        assert not_after.astimezone(timezone(timedelta(hours=-3))).strftime("%d/%m/%Y") in row
        assert "error" not in row  # years left: no warning
    assert "nenhum" in by_label["carimbo do tempo"]

    # A seal ending in 10 days is shown as a warning; an ended one as expired.
    db.session.add(SigningCredential(
        purpose="seal", subject="CN=Selo que vence",
        not_after=utcnow() + timedelta(days=10, hours=1),
        certificate_der=seal.certificate_der, chain_der=[], encrypted_key=seal.encrypted_key))
    db.session.commit()
    page = client.get("/admin/estado").text
    row = re.search(r'<tr class="certificate status-warning">(.*?)</tr>', page, re.S)
    assert row and "CN=Selo que vence" in row.group(1) and "10 dias" in row.group(1)
    db.session.execute(SigningCredential.__table__.update()
                       .where(SigningCredential.subject == "CN=Selo que vence")
                       .values(not_after=utcnow() - timedelta(days=1)))
    db.session.commit()
    row = re.search(r'<tr class="certificate status-warning">(.*?)</tr>',
                    client.get("/admin/estado").text, re.S)
    assert row and "expirado" in row.group(1)


def test_status_page_is_for_admins_only(client, auth, agent, factory, app):
    job = _fail_one_job(app)
    verifier = factory.staff(roles=("verifier",))
    for user in (agent, verifier):
        auth.login(user.email)
        assert client.get("/admin/estado").status_code == 403
        assert client.post(f"/admin/estado/tarefas/{job.id}/tentar-novamente").status_code == 403
        auth.logout()
    from rq.registry import FailedJobRegistry

    from app.jobs import redis_connection

    assert job.id in FailedJobRegistry("default", connection=redis_connection())


def test_nav_links_the_status_page(client, auth, admin):
    auth.login(admin.email)
    assert 'href="/admin/estado"' in client.get("/admin/usuarios").text


# --- the worker's health --------------------------------------------------------------------

def test_healthz_says_worker_down_without_heartbeat_and_ok_with_one(client, app):
    from app.jobs import redis_connection

    body = client.get("/healthz").get_json()
    assert body["worker"] == "down"
    assert client.get("/healthz").status_code == 200  # web itself works

    status_service.beat_worker(redis_connection(), host="outra-maquina", pid=4242, ttl=30)
    body = client.get("/healthz").get_json()
    assert body["worker"] == "ok"
    assert {"web", "database", "redis", "media"} <= body.keys()

    redis_connection().delete(status_service.worker_heartbeat_key("outra-maquina", 4242))
    assert client.get("/healthz").get_json()["worker"] == "down"


def test_worker_heartbeat_thread_beats_and_stops(app, client):
    from app.jobs import redis_connection

    connection = redis_connection()
    heartbeat = status_service.WorkerHeartbeat(app.config["REDIS_URL"], interval=0.2, ttl=2)
    heartbeat.start()
    try:
        wait_until(lambda: status_service.worker_heartbeats(connection), timeout=5,
                   message="the heartbeat key")
        key = status_service.worker_heartbeat_key()
        assert 0 < connection.ttl(key) <= 2  # it expires by itself if the worker dies
        first = json.loads(connection.get(key))["at"]
        wait_until(lambda: json.loads(connection.get(key) or "{}").get("at", first) > first,
                   timeout=5, message="a second beat")
        assert status_service.worker_health_exit_code(app.config["REDIS_URL"]) == 0
    finally:
        heartbeat.stop()
    assert not status_service.worker_heartbeats(connection)
    assert status_service.worker_health_exit_code(app.config["REDIS_URL"]) == 1


def test_worker_health_command_exit_codes(app, runner):
    from app.jobs import redis_connection

    cli = app.cli
    if "health" not in cli.commands:  # registered by app/cli.py (the lead's line)
        cli.add_command(status_service.health_cli)
    result = runner.invoke(args=["health", "worker"])
    assert result.exit_code == 1

    # A worker on another machine is not this machine's worker, unless asked for any.
    status_service.beat_worker(redis_connection(), host="outra-maquina", pid=1, ttl=30)
    assert runner.invoke(args=["health", "worker"]).exit_code == 1
    assert runner.invoke(args=["health", "worker", "--any-host"]).exit_code == 0
    status_service.beat_worker(redis_connection(), ttl=30)
    result = runner.invoke(args=["health", "worker"])
    assert result.exit_code == 0 and "worker: ok" in result.output

    broken = status_service.worker_health_exit_code("redis://127.0.0.1:1/0")
    assert broken == 1


@pytest.mark.one_database  # a worker process and Redis, not the database
def test_real_worker_beats_and_answers_its_health_check(client, app, start_worker):
    worker = start_worker()
    wait_until(lambda: client.get("/healthz").get_json()["worker"] == "ok", timeout=30,
               message="web seeing the worker's heartbeat")
    env = worker.env
    check = subprocess.run([sys.executable, "worker.py", "--health"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    worker.stop()
    wait_until(lambda: client.get("/healthz").get_json()["worker"] == "down", timeout=20,
               message="the stopped worker's heartbeat gone")
    check = subprocess.run([sys.executable, "worker.py", "--health"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 1
