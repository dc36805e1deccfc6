"""SMS: recorded, then sent by a real `python worker.py` through a real HTTP gateway (an
http.server in a thread of this process) or to the outbox directory; retries, permanent
refusals, timeouts, atomic outbox files, and no secret in the logs."""
import json
import logging
import os
import ssl
import stat
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from ipaddress import ip_address
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from rq.exceptions import NoSuchJobError
from rq.job import JobStatus

from app.jobs.sms import sweep_unsent_sms
from app.models import AuditEvent, BackgroundJob
from app.models.sms import SmsMessage
from app.services import sms
from app.services.sms import (HttpSmsGateway, OutboxSmsGateway, SmsConfigurationError,
                              SmsError, SmsGateway)
from tests.support.processes import count_rows, free_port, fresh, rq_job, wait_until, writing

TOKEN = "tok-Zq81-very-secret-gateway-token"
NUMBER = "+5511987654321"
NATIONAL = "11987654321"
TEXT = "Sua solicitação foi aprovada. Acesse o link recebido por e-mail."
TEXT_GSM7 = "Sua solicitacao foi aprovada. Acesse o link recebido por e-mail."


# --- a real HTTP gateway ----------------------------------------------------------------

@dataclass
class Reply:
    status: int = 200
    body: object = field(default_factory=lambda: {"id": "gw-1"})
    delay: float = 0.0
    headers: dict = field(default_factory=dict)


class _GatewayHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _handle(self):
        gateway = self.server.gateway
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with gateway.lock:
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw
            gateway.requests.append({"method": self.command, "path": self.path,
                                     "headers": {k.lower(): v for k, v in self.headers.items()},
                                     "json": body})
            reply = gateway.replies.pop(0) if len(gateway.replies) > 1 else gateway.replies[0]
        if reply.delay:
            time.sleep(reply.delay)
        payload = reply.body if isinstance(reply.body, bytes) else \
            json.dumps(reply.body).encode()
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except OSError:  # the client gave up (a timeout test)
            pass

    do_POST = do_GET = _handle

    def log_message(self, *args):
        pass


class GatewayServer:
    """A JSON SMS gateway on 127.0.0.1: keeps every request; answers with `replies` in turn,
    the last one repeating."""

    def __init__(self, tls=None):
        self.requests = []
        self.replies = [Reply()]
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _GatewayHandler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.httpd.gateway = self
        scheme = "http"
        if tls:  # (certificate file, key file)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.httpd.server_address[1]}/v1/sms"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def reply(self, *replies):
        self.replies = list(replies)

    def wait_for(self, count, timeout=30.0):
        wait_until(lambda: len(self.requests) >= count, timeout,
                   message=f"{count} request(s) at the gateway")
        return self.requests

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def gateway():
    server = GatewayServer().start()
    yield server
    server.stop()


@pytest.fixture
def http_worker(start_worker, gateway):
    """Factory: a running worker whose SMS go to `gateway`."""
    def _start(**env):
        settings = dict(SMS_BACKEND="http", SMS_GATEWAY_URL=gateway.url,
                        SMS_GATEWAY_TOKEN=TOKEN, SMS_SENDER="VideoAR")
        settings.update(env)
        return start_worker(**settings)
    return _start


def _state(db, state, sms_id=1, timeout=30.0):
    return wait_until(
        lambda: (m := fresh(db, SmsMessage, sms_id)) is not None and m.state == state and m,
        timeout, message=f"sms {sms_id} {state}")


def _job_finished(app, job_id="sms-1"):
    wait_until(lambda: rq_job(app, job_id).get_status() == JobStatus.FINISHED,
               message=f"job {job_id} finished")
    return rq_job(app, job_id)


def _queue(db, to=NUMBER, body=TEXT, kind="issuance_invitation", cert_request=None):
    with writing(db):
        return sms.queue_sms(kind, to, body, cert_request=cert_request).id


def _secrets_absent(text):
    for secret in (TOKEN, NUMBER, NUMBER.lstrip("+"), NATIONAL):
        assert secret not in text, f"{secret!r} leaked"


def _enable_log():
    # Alembic's fileConfig (the `database` fixture) disables the loggers that existed before.
    logging.getLogger("app.services.sms").disabled = False


# --- through the worker -----------------------------------------------------------------

def test_outbox_through_the_worker(app, db, factory, mailbox, start_worker):
    """With the default backend the worker writes each SMS as a JSON file to
    instance/sms-outbox, named by the message's reference; it is recorded as sent."""
    start_worker(SMS_BACKEND="outbox")
    with writing(db):
        cert_request = factory.request()
        sms_id = sms.queue_sms("issuance_invitation", "(11) 98765-4321", TEXT,
                               cert_request=cert_request).id
    record = _state(db, "sent", sms_id)
    assert (record.attempts, record.to, record.body) == (1, NUMBER, TEXT_GSM7)
    assert record.sent_at is not None and record.last_error is None
    name = f"{sms.reference(record)}.json"
    assert record.provider_message_id == name
    outbox = Path(app.config["INSTANCE_DIR"]) / "sms-outbox"
    assert sorted(p.name for p in outbox.iterdir()) == [name]  # no temporary file left
    assert stat.S_IMODE((outbox / name).stat().st_mode) == 0o600
    data = json.loads((outbox / name).read_text("utf-8"))
    assert (data["to"], data["text"], data["id"]) == (NUMBER, TEXT_GSM7, name[:-5])
    assert (data["gsm7_characters"], data["parts"]) == (len(TEXT_GSM7), 1)
    assert OutboxSmsGateway(outbox).messages() == [data]
    events = db.session.query(AuditEvent).filter_by(object_type="sms_message",
                                                    object_id=str(sms_id)).all()
    assert [e.action for e in sorted(events, key=lambda e: e.seq)] == ["sms.queue", "sms.sent"]
    assert all(e.request_id == cert_request.id for e in events)
    job = _job_finished(app, f"sms-{sms_id}")
    assert job.return_value() == "sent" and job.origin == "email"
    row = fresh(db, BackgroundJob, f"sms-{sms_id}")
    assert (row.name, row.status, row.attempts) == ("send_sms", "done", 1)


def test_http_gateway_through_the_worker(app, db, gateway, http_worker):
    gateway.reply(Reply(201, {"id": "msg-7f3a", "status": "accepted"}))
    http_worker()
    _queue(db)
    record = _state(db, "sent")
    assert (record.attempts, record.provider_message_id) == (1, "msg-7f3a")
    [request] = gateway.requests
    assert (request["method"], request["path"]) == ("POST", "/v1/sms")
    assert request["json"] == {"to": NUMBER, "from": "VideoAR", "text": TEXT_GSM7}
    headers = request["headers"]
    assert headers["authorization"] == f"Bearer {TOKEN}"
    assert headers["content-type"].startswith("application/json")
    assert headers["idempotency-key"] == sms.reference(record)
    assert _job_finished(app).return_value() == "sent"
    assert count_rows(db, AuditEvent, action="sms.sent", object_id="1") == 1


@pytest.mark.one_database  # the gateway and the worker's retries, not the database
def test_5xx_is_retried_then_sent(app, db, gateway, http_worker):
    """Temporary refusals: the job is retried with backoff, each attempt counted, and every
    try carries the same Idempotency-Key so the gateway can drop copies."""
    app.config["SMS_RETRY_INTERVALS"] = [1] * 7
    gateway.reply(Reply(503, {"error": "busy"}), Reply(502, b"<html>bad gateway</html>"),
                  Reply(200, {"id": "ok-3"}))
    http_worker()
    _queue(db)
    record = _state(db, "sent")
    assert (record.attempts, record.provider_message_id, record.last_error) == (3, "ok-3", None)
    assert len(gateway.requests) == 3
    assert len({r["headers"]["idempotency-key"] for r in gateway.requests}) == 1
    assert _job_finished(app).return_value() == "sent"
    row = fresh(db, BackgroundJob, "sms-1")
    assert (row.status, row.attempts, row.error) == ("done", 3, None)


@pytest.mark.one_database  # the gateway and the worker's retries, not the database
def test_between_retries_the_error_is_recorded(app, db, gateway, http_worker):
    app.config["SMS_RETRY_INTERVALS"] = [3]
    gateway.reply(Reply(500, {"error": "internal"}), Reply(200, {"id": "later"}))
    http_worker()
    _queue(db)

    def waiting_for_retry():
        m = fresh(db, SmsMessage, 1)
        return m is not None and m.attempts == 1 and m.last_error and m

    record = waiting_for_retry() or wait_until(waiting_for_retry, message="first attempt failed")
    assert record.state == "queued"
    assert record.last_error.startswith("SmsError: HTTP 500 from the gateway")
    assert fresh(db, BackgroundJob, "sms-1").status == "queued"
    assert _state(db, "sent").attempts == 2


@pytest.mark.one_database  # the gateway and the worker's retries, not the database
def test_4xx_is_permanent(app, db, gateway, http_worker):
    """A refusal no retry will change: failed at once, audited, the job not retried. The
    number the gateway echoes stays out of the record and the log."""
    app.config["SMS_RETRY_INTERVALS"] = [1] * 7
    gateway.reply(Reply(400, {"error": f"invalid destination {NUMBER}"}))
    worker = http_worker()
    _queue(db)
    record = _state(db, "failed")
    assert record.attempts == 1 and record.sent_at is None
    error = 'SmsError: HTTP 400 from the gateway: {"error": "invalid destination <redacted>"}'
    assert record.last_error == error
    wait_until(lambda: f"sms 1 refused by the gateway: {error}" in worker.output(),
               message="the refusal in the worker's log")
    _secrets_absent(worker.output())
    job = _job_finished(app)
    assert job.return_value() == "failed" and job.retries_left == 7
    time.sleep(2)  # a retry would have come by now
    assert len(gateway.requests) == 1
    assert count_rows(db, AuditEvent, action="sms.failed", object_id="1") == 1


@pytest.mark.one_database  # the gateway and the worker's retries, not the database
def test_429_is_retried(app, db, gateway, http_worker):
    """Too Many Requests says "later", not "never"."""
    app.config["SMS_RETRY_INTERVALS"] = [1] * 7
    gateway.reply(Reply(429, {"error": "slow down"}), Reply(200, {"id": "x"}))
    http_worker()
    _queue(db)
    assert _state(db, "sent").attempts == 2


@pytest.mark.one_database  # the gateway and the worker's retries, not the database
def test_timeout_is_retried_with_the_same_key(app, db, gateway, http_worker):
    """The gateway does not answer within SMS_TIMEOUT: a temporary failure. It may have taken
    the message all the same, so the retry carries the same Idempotency-Key."""
    app.config["SMS_RETRY_INTERVALS"] = [1] * 7
    gateway.reply(Reply(200, {"id": "slow"}, delay=4), Reply(200, {"id": "fast"}))
    http_worker(SMS_TIMEOUT=1)
    _queue(db)
    record = _state(db, "sent")
    assert (record.attempts, record.provider_message_id) == (2, "fast")
    first, second = gateway.requests
    assert first["headers"]["idempotency-key"] == second["headers"]["idempotency-key"]
    _job_finished(app)  # the message row is committed before the job's own row
    row = fresh(db, BackgroundJob, "sms-1")
    assert (row.status, row.attempts) == ("done", 2)


@pytest.mark.one_database  # the gateway and the worker's retries, not the database
def test_gives_up_after_max_attempts(app, db, gateway, http_worker):
    app.config["SMS_RETRY_INTERVALS"] = [1] * 7
    app.config["SMS_MAX_ATTEMPTS"] = 3
    gateway.reply(Reply(503, {"error": "down"}))
    http_worker(SMS_MAX_ATTEMPTS=3)
    _queue(db)
    record = _state(db, "failed")
    assert record.attempts == 3
    assert record.last_error.startswith("SmsError: HTTP 503")
    wait_until(lambda: rq_job(app, "sms-1").get_status() == JobStatus.FAILED,
               message="RQ moved the job to failed")
    assert len(gateway.requests) == 3
    row = fresh(db, BackgroundJob, "sms-1")
    assert (row.status, row.attempts) == ("failed", 3)
    assert count_rows(db, AuditEvent, action="sms.failed", object_id="1") == 1
    assert sweep_unsent_sms(older_than_seconds=0) == 0  # given up for good


def test_no_transaction_open_while_the_gateway_answers(app, db, factory, gateway, http_worker):
    """The attempt is committed before the gateway is asked, and nothing is held while it takes
    its time: on SQLite a job holding the write lock would make this write wait out the busy
    timeout and fail with "database is locked"."""
    gateway.reply(Reply(200, {"id": "slow"}, delay=5))
    http_worker(SMS_TIMEOUT=30)
    _queue(db)
    gateway.wait_for(1)
    started = time.monotonic()
    with writing(db):
        factory.staff(roles=("agent",))
    assert time.monotonic() - started < 2
    record = fresh(db, SmsMessage, 1)
    assert (record.state, record.attempts) == ("queued", 1)
    assert _state(db, "sent").provider_message_id == "slow"


def test_a_retried_job_checks_the_record_first(app, db, gateway, http_worker):
    http_worker()
    _queue(db)
    _state(db, "sent")
    _job_finished(app)
    sms.enqueue_send(1)
    wait_until(lambda: fresh(db, BackgroundJob, "sms-1").attempts == 2
               and rq_job(app, "sms-1").get_status() == JobStatus.FINISHED,
               message="the second run finished")
    assert rq_job(app, "sms-1").return_value() == "already-sent"
    assert len(gateway.requests) == 1
    assert fresh(db, SmsMessage, 1).attempts == 1


@pytest.mark.one_database  # the gateway and the worker's retries, not the database
def test_no_secret_in_the_logs(app, db, gateway, http_worker, caplog):
    """The gateway echoes the token and the number in its error bodies (as some do): neither
    reaches the worker's log, the record, the job's row or RQ's stored traceback."""
    _enable_log()
    app.config["SMS_RETRY_INTERVALS"] = [1] * 7
    app.config["SMS_MAX_ATTEMPTS"] = 3
    echo = {"error": f"rejected {NUMBER} ({NATIONAL}) with Bearer {TOKEN}"}
    gateway.reply(Reply(503, echo), Reply(502, echo), Reply(503, echo))
    worker = http_worker(SMS_MAX_ATTEMPTS=3)
    with caplog.at_level(logging.INFO, logger="app.services.sms"):
        _queue(db, body="x" * 170)  # over one SMS: a warning in this process's log
    record = _state(db, "failed")
    assert record.attempts == 3 and len(gateway.requests) == 3
    assert "sms 1 (issuance_invitation): 170 GSM-7 characters" in caplog.text
    _secrets_absent(caplog.text)

    wait_until(lambda: rq_job(app, "sms-1").get_status() == JobStatus.FAILED,
               message="RQ moved the job to failed")
    log_text = wait_until(lambda: "sms 1 failed after 3 attempts" in (out := worker.output())
                          and out, message="the failure in the worker's log")
    # The log holds each attempt's error (RQ's tracebacks), with the echo blanked out.
    assert log_text.count("SmsError: HTTP 503 from the gateway: ") >= 2
    assert "SmsError: HTTP 502 from the gateway: " in log_text
    assert "<redacted>" in log_text
    _secrets_absent(log_text)
    assert record.last_error.startswith("SmsError: HTTP 503 from the gateway: ")
    assert "<redacted>" in record.last_error
    _secrets_absent(record.last_error)
    row = fresh(db, BackgroundJob, "sms-1")
    assert row.status == "failed" and "<redacted>" in row.error
    _secrets_absent(row.error)
    exc_string = rq_job(app, "sms-1").latest_result().exc_string
    assert "SmsError: HTTP 503 from the gateway" in exc_string
    _secrets_absent(exc_string)


def test_redis_down_at_commit_then_swept(app, db, start_worker, caplog):
    """The SMS is recorded although Redis is away when its transaction commits; the sweep
    enqueues it later. The warning names the message by its id only."""
    _enable_log()
    redis_url = app.config["REDIS_URL"]
    app.config["REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    try:
        with caplog.at_level(logging.WARNING, logger="app.services.sms"):
            _queue(db)
    finally:
        app.config["REDIS_URL"] = redis_url
    assert "sms 1 recorded but not enqueued" in caplog.text
    _secrets_absent(caplog.text)
    with pytest.raises(NoSuchJobError):
        rq_job(app, "sms-1")
    assert sweep_unsent_sms() == 0  # too young: left to its own enqueue
    assert sweep_unsent_sms(older_than_seconds=0) == 1
    start_worker(SMS_BACKEND="outbox")
    assert _state(db, "sent").attempts == 1
    assert sweep_unsent_sms(older_than_seconds=0) == 0


def test_rolled_back_sms_is_neither_recorded_nor_enqueued(app, db):
    db.session.rollback()
    sms.queue_sms("issuance_invitation", NUMBER, TEXT)
    db.session.rollback()
    db.session.commit()  # a later commit does not enqueue what was rolled back
    assert count_rows(db, SmsMessage) == 0
    with pytest.raises(NoSuchJobError):
        rq_job(app, "sms-1")


def test_unusable_settings_are_a_temporary_error(app, db):
    """SMS_BACKEND=http without a URL: the attempt is counted, the error recorded, the job
    retried (the admin may fix the settings meanwhile)."""
    app.config.update(SMS_BACKEND="http", SMS_GATEWAY_URL="", SMS_GATEWAY_TOKEN=TOKEN)
    sms_id = _queue(db)
    with pytest.raises(SmsError) as excinfo:
        sms.send(sms_id)
    assert not excinfo.value.permanent
    record = fresh(db, SmsMessage, sms_id)
    assert (record.state, record.attempts) == ("queued", 1)
    assert record.last_error == "SmsError: SMS settings: SMS_GATEWAY_URL must be an https:// address"


# --- recording: numbers and bodies ------------------------------------------------------

def test_numbers_are_stored_as_e164(app, db):
    for given in (NUMBER, "(11) 98765-4321", "011 98765 4321"):
        assert sms.queue_sms("k", given, "oi").to == NUMBER
    assert sms.queue_sms("k", "+1 202 555 0143", "hi").to == "+12025550143"
    for bad in ("", "123", "abc", "+55 11 1234"):
        with pytest.raises(ValueError):
            sms.queue_sms("k", bad, "oi")
    db.session.rollback()


def test_bodies_are_gsm7(app, db):
    assert sms.gsm7("Solicitação aprovada — código “ABC” às 10h… nº 5 ÇÃO é ü") == \
        'Solicitacao aprovada - codigo "ABC" às 10h... no 5 ÇAO é ü'
    assert sms.gsm7("ok 🙂 ☎") == "ok ? ?"
    assert sms.gsm7_length("{a}") == 5 and sms.gsm7_length("€") == 2
    assert sms.sms_parts("a" * 160) == 1 and sms.sms_parts("a" * 161) == 2
    assert sms.sms_parts("[" * 80) == 1 and sms.sms_parts("[" * 81) == 2
    assert sms.sms_parts("a" * 306) == 2 and sms.sms_parts("a" * 307) == 3
    record = sms.queue_sms("k", NUMBER, "  Olá, ação!\n")
    assert record.body == "Ola, acao!"
    with pytest.raises(ValueError):
        sms.queue_sms("k", NUMBER, " \n")
    with pytest.raises(ValueError):
        sms.queue_sms("k", NUMBER, "a" * (sms.MAX_BODY + 1))
    assert sms.queue_sms("k", NUMBER, "a" * sms.MAX_BODY).body == "a" * sms.MAX_BODY
    db.session.rollback()


def test_a_long_body_is_kept_with_a_warning(app, db, caplog):
    _enable_log()
    def warnings():
        return [r.getMessage() for r in caplog.records if r.name == "app.services.sms"]

    with caplog.at_level(logging.WARNING, logger="app.services.sms"):
        short = sms.queue_sms("k", NUMBER, "a" * 160)
        assert warnings() == []
        long = sms.queue_sms("k", NUMBER, "b" * 200)
    assert long.body == "b" * 200 and short.body == "a" * 160
    assert warnings() == [f"sms {long.id} (k): 200 GSM-7 characters, over one SMS (160); "
                          "it goes as 2 concatenated parts"]
    db.session.rollback()


# --- choosing the gateway ---------------------------------------------------------------

class _CustomGateway:
    name = "custom"

    def send(self, to, body, *, reference=None):
        return "custom-1"


def custom_factory(app):
    return _CustomGateway()


def test_get_gateway(app, tmp_path):
    gateway = sms.get_gateway(app)
    assert isinstance(gateway, OutboxSmsGateway) and isinstance(gateway, SmsGateway)
    assert gateway.directory == Path(app.config["INSTANCE_DIR"]) / "sms-outbox"
    app.config["SMS_OUTBOX_DIR"] = str(tmp_path / "elsewhere")
    assert sms.get_gateway(app).directory == tmp_path / "elsewhere"

    app.config.update(SMS_BACKEND="http", SMS_GATEWAY_URL="https://sms.example.com/v1/send",
                      SMS_GATEWAY_TOKEN=TOKEN, SMS_SENDER="AR Teste", SMS_TIMEOUT=7)
    gateway = sms.get_gateway(app)
    assert isinstance(gateway, HttpSmsGateway) and isinstance(gateway, SmsGateway)
    assert (gateway.url, gateway.sender, gateway.timeout) == (
        "https://sms.example.com/v1/send", "AR Teste", 7.0)
    assert TOKEN not in repr(gateway)

    app.config["SMS_BACKEND"] = "tests.test_sms:custom_factory"
    assert sms.get_gateway(app).send(NUMBER, "x") == "custom-1"
    for bad in ("carrier-pigeon", "tests.test_sms:missing", "tests.nowhere:factory",
                "tests.test_sms:_CustomGateway.send"):
        app.config["SMS_BACKEND"] = bad
        with pytest.raises(SmsConfigurationError):
            sms.get_gateway(app)


def test_settings_from_the_environment(app, monkeypatch):
    """A worker whose Config does not name the SMS settings reads them from its environment."""
    for name in ("SMS_BACKEND", "SMS_GATEWAY_URL", "SMS_GATEWAY_TOKEN", "SMS_TIMEOUT",
                 "SMS_RETRY_INTERVALS"):
        app.config.pop(name, None)
    monkeypatch.setenv("SMS_BACKEND", "http")
    monkeypatch.setenv("SMS_GATEWAY_URL", "https://sms.example.com/")
    monkeypatch.setenv("SMS_GATEWAY_TOKEN", TOKEN)
    monkeypatch.setenv("SMS_TIMEOUT", "3")
    monkeypatch.setenv("SMS_RETRY_INTERVALS", "5, 6,7")
    gateway = sms.get_gateway(app)
    assert isinstance(gateway, HttpSmsGateway) and gateway.timeout == 3.0
    assert sms.setting(app, "SMS_RETRY_INTERVALS", [1]) == [5, 6, 7]
    app.config["SMS_TIMEOUT"] = 9  # the app's config wins
    assert sms.get_gateway(app).timeout == 9.0


# --- the HTTP gateway, against a real server --------------------------------------------

def _http(gateway_server, timeout=5, sender="VideoAR"):
    return HttpSmsGateway(gateway_server.url, TOKEN, sender, timeout)


def test_http_2xx(gateway):
    gateway.reply(Reply(201, {"id": 12345}))
    client = _http(gateway)
    assert client.send(NUMBER, "Olá €", reference="ref-1") == "12345"
    [request] = gateway.requests
    assert request["json"] == {"to": NUMBER, "from": "VideoAR", "text": "Olá €"}
    assert request["headers"]["authorization"] == f"Bearer {TOKEN}"
    assert request["headers"]["idempotency-key"] == "ref-1"

    # Accepted without an id (or without JSON): sent all the same, never sent twice.
    gateway.reply(Reply(202, b""))
    assert _http(gateway, sender="").send(NUMBER, "x") is None
    assert gateway.requests[-1]["json"] == {"to": NUMBER, "text": "x"}  # no sender: no "from"
    assert "idempotency-key" not in gateway.requests[-1]["headers"]
    gateway.reply(Reply(200, b"queued"))
    assert client.send(NUMBER, "x") is None


@pytest.mark.parametrize("status,permanent", [
    (400, True), (401, True), (403, True), (404, True), (413, True), (422, True),
    (408, False), (425, False), (429, False),
    (500, False), (502, False), (503, False), (504, False),
])
def test_http_refusals(gateway, status, permanent):
    gateway.reply(Reply(status, {"error": f"no: {NUMBER} {NATIONAL} {TOKEN}"}))
    with pytest.raises(SmsError) as excinfo:
        _http(gateway).send(NUMBER, "x")
    assert excinfo.value.permanent is permanent
    message = str(excinfo.value)
    assert message.startswith(f"HTTP {status} from the gateway: ")
    assert message.count("<redacted>") == 3
    _secrets_absent(message)
    assert excinfo.value.__cause__ is None and excinfo.value.__suppress_context__


def test_http_timeout(gateway):
    gateway.reply(Reply(200, {"id": "late"}, delay=3))
    started = time.monotonic()
    with pytest.raises(SmsError) as excinfo:
        _http(gateway, timeout=0.5).send(NUMBER, "x")
    assert time.monotonic() - started < 2.5
    assert not excinfo.value.permanent
    assert str(excinfo.value) == "the gateway did not answer within 0.5 s"


def test_http_connection_refused():
    client = HttpSmsGateway(f"http://127.0.0.1:{free_port()}/sms", TOKEN, "", 2)
    with pytest.raises(SmsError) as excinfo:
        client.send(NUMBER, "x")
    assert not excinfo.value.permanent
    assert str(excinfo.value) == "cannot reach the gateway: ConnectionRefusedError: Connection refused"


def test_http_redirect_is_not_followed(gateway):
    """Following it would carry the token to wherever the redirect points."""
    gateway.reply(Reply(302, b"", headers={"Location": gateway.url + "/elsewhere"}),
                  Reply(200, {"id": "followed"}))
    with pytest.raises(SmsError) as excinfo:
        _http(gateway).send(NUMBER, "x")
    assert excinfo.value.permanent and str(excinfo.value) == "HTTP 302 from the gateway"
    time.sleep(0.3)
    assert [r["path"] for r in gateway.requests] == ["/v1/sms"]


def _self_signed(directory):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "SMS gateway (test)")])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = directory / "gateway.pem", directory / "gateway.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def test_https_gateway_checks_its_certificate(tmp_path, monkeypatch):
    """Over HTTPS the gateway's certificate is verified: an untrusted one gets no request (and
    no token); trusted (here through SSL_CERT_FILE), the message goes."""
    cert_file, key_file = _self_signed(tmp_path)
    server = GatewayServer(tls=(cert_file, key_file)).start()
    try:
        with pytest.raises(SmsError) as excinfo:
            HttpSmsGateway(server.url, TOKEN, "", 5).send(NUMBER, "x")
        assert not excinfo.value.permanent
        assert str(excinfo.value).startswith("cannot reach the gateway: SSLCertVerificationError")
        assert server.requests == []
        monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))
        assert HttpSmsGateway(server.url, TOKEN, "", 5).send(NUMBER, "x") == "gw-1"
        [request] = server.requests
        assert request["headers"]["authorization"] == f"Bearer {TOKEN}"
        assert request["json"] == {"to": NUMBER, "text": "x"}
    finally:
        server.stop()


def test_http_settings_are_checked():
    for url in ("", "sms.example.com", "ftp://sms.example.com/", "http://sms.example.com/",
                "http://10.0.0.5/sms", "https://user:pw@sms.example.com/"):
        with pytest.raises(SmsConfigurationError):
            HttpSmsGateway(url, TOKEN)
    with pytest.raises(SmsConfigurationError):
        HttpSmsGateway("https://sms.example.com/", "")
    for url in ("https://sms.example.com/v1", "http://127.0.0.1:9/x", "http://localhost/x",
                "http://[::1]:8080/x"):
        HttpSmsGateway(url, TOKEN)


# --- the outbox -------------------------------------------------------------------------

def test_outbox_files(tmp_path):
    outbox = OutboxSmsGateway(tmp_path / "out")
    assert outbox.messages() == []
    name = outbox.send(NUMBER, "primeira", reference="sms-00000001-x")
    assert name == "sms-00000001-x.json"
    # A retry rewrites the same file; no reference: a name of its own.
    assert outbox.send(NUMBER, "primeira", reference="sms-00000001-x") == name
    other = outbox.send("+12025550143", "outra")
    assert other != name and other.endswith(".json")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted([name, other])
    texts = {m["text"] for m in outbox.messages()}
    assert texts == {"primeira", "outra"}
    assert outbox.send(NUMBER, "x", reference="../../etc/passwd") == "_.._etc_passwd.json"
    assert (tmp_path / "out" / "_.._etc_passwd.json").exists()


def test_outbox_readers_never_see_a_partial_file(tmp_path):
    """A reader polling the file while it is rewritten again and again (a retry) always reads
    a whole message, the old one or the new one."""
    outbox = OutboxSmsGateway(tmp_path)
    bodies = ["a" * 3_000_000, "b" * 1_500_000]
    outbox.send(NUMBER, bodies[0], reference="sms-1")
    path = tmp_path / "sms-1.json"
    done = threading.Event()
    seen, errors = set(), []

    def read():
        while not done.is_set():
            try:
                seen.add(json.loads(path.read_bytes())["text"][0])
            except (ValueError, KeyError, FileNotFoundError) as exc:
                errors.append(repr(exc)[:80])

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(30):
            outbox.send(NUMBER, bodies[i % 2], reference="sms-1")
    finally:
        done.set()
        reader.join()
    assert errors == []
    assert seen == {"a", "b"}
    assert [p.name for p in tmp_path.iterdir()] == ["sms-1.json"]


def test_outbox_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    outbox = OutboxSmsGateway(tmp_path)
    outbox.send(NUMBER, "old", reference="sms-1")

    def no_space(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(SmsError) as excinfo:
        outbox.send(NUMBER, "new", reference="sms-1")
    assert not excinfo.value.permanent
    assert str(excinfo.value) == \
        "cannot write to the SMS outbox: OSError: No space left on device"
    assert [p.name for p in tmp_path.iterdir()] == ["sms-1.json"]  # no temporary file left
    assert json.loads((tmp_path / "sms-1.json").read_text())["text"] == "old"
