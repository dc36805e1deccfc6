"""Logs: with LOG_FORMAT=json one JSON object a line, link tokens and secrets masked."""
import io
import json
import logging

import pytest

from app import create_app
from app.logging_setup import GunicornLogger, configure_logging, mask_text
from tests.conftest import STAFF_PASSWORD, CSRFClient, _config_for

TOKEN = "Zm9vYmFyYmF6cXV4LXRva2VuLW5vdC1yZWFsLTEyMzQ1Ng"  # link-token shaped, 46 chars


@pytest.fixture
def json_app(app, database, tmp_path):
    """An app on the test's database with LOG_FORMAT=json, its log lines in a buffer."""
    config = type("Config", (_config_for(database, tmp_path / "instance"),),
                  {"LOG_FORMAT": "json", "PROXY_HOPS": 1})
    application = create_app(config)
    application.test_client_class = CSRFClient
    stream = io.StringIO()
    [handler] = [h for h in logging.getLogger().handlers if getattr(h, "_videoar_handler", 0)]
    handler.setStream(stream)
    application.log_stream = stream
    yield application
    configure_logging("text")
    from app.extensions import db

    with application.app_context():
        for engine in db.engines.values():
            engine.dispose()


def lines(application):
    text = application.log_stream.getvalue()
    return text, [json.loads(line) for line in text.splitlines()]


def test_each_request_is_one_json_line_with_the_token_masked(json_app):
    client = json_app.test_client()
    response = client.get(f"/documentos/{TOKEN}", headers={"X-Forwarded-For": "203.0.113.7"})
    assert response.status_code == 404  # no such link
    text, entries = lines(json_app)
    assert TOKEN not in text
    [entry] = [e for e in entries if e["logger"] == "videoar.request"]
    assert entry["path"] == "/documentos/…" and entry["message"] == "GET /documentos/… 404"
    assert entry["method"] == "GET" and entry["status"] == 404
    assert entry["remote_addr"] == "203.0.113.7"  # after ProxyFix: the client, not the proxy
    assert entry["request_id"] == response.headers["X-Request-ID"]
    assert entry["level"] == "INFO" and entry["time"].endswith("+00:00")
    assert isinstance(entry["duration_ms"], float)


def test_a_login_never_logs_the_password(json_app, agent):
    client = json_app.test_client()
    assert client.post("/equipe/entrar", data={"email": agent.email,
                                               "password": "errada-" + STAFF_PASSWORD}
                       ).status_code == 401
    assert client.post("/equipe/entrar", data={"email": agent.email,
                                               "password": STAFF_PASSWORD}).status_code == 302
    text, entries = lines(json_app)
    assert [e["status"] for e in entries if e["logger"] == "videoar.request"
            and e["method"] == "POST"] == [401, 302]
    assert STAFF_PASSWORD not in text and "$argon2" + "id$v=" not in text


def test_secret_fields_and_exceptions_are_masked(json_app):
    log = logging.getLogger("videoar.test")
    with json_app.test_request_context(f"/conferencia/{TOKEN}?code=123456", method="POST"):
        log.warning("client at %s", f"/conferencia/{TOKEN}",
                    extra={"password": "p4ss-word", "form": {"senha": "s3nha", "cpf": "1"},
                           "access_code": "654321", "note": f"link /emissao/{TOKEN}"})
        try:
            raise RuntimeError(f"boom token={TOKEN} at /documentos/{TOKEN}")
        except RuntimeError:
            log.exception("failed")
    text, [warning, error] = lines(json_app)
    for secret in (TOKEN, "p4ss-word", "s3nha", "654321"):
        assert secret not in text
    assert warning["message"] == "client at /conferencia/…"
    assert warning["path"] == "/conferencia/…" and warning["method"] == "POST"
    assert warning["password"] == "…" and warning["access_code"] == "…"
    assert warning["form"] == {"senha": "…", "cpf": "1"}
    assert warning["note"] == "link /emissao/…"
    assert "RuntimeError: boom token=… at /documentos/…" in error["exc"]
    assert error["level"] == "ERROR" and error["logger"] == "videoar.test"


def test_text_format_is_masked_too(app):
    stream = io.StringIO()
    configure_logging("text", stream=stream)
    logging.getLogger("werkzeug").info('"GET /emissao/%s HTTP/1.1" 200', TOKEN)
    assert "/emissao/… HTTP/1.1" in stream.getvalue() and TOKEN not in stream.getvalue()
    assert not stream.getvalue().startswith("{")


def test_mask_leaves_ordinary_paths_alone():
    assert mask_text("/conferencia/dispositivos") == "/conferencia/dispositivos"
    assert mask_text("/solicitacoes/12/documentos/rg") == "/solicitacoes/12/documentos/rg"
    assert mask_text("senha=abc&cpf=1") == "senha=…&cpf=1"


def test_gunicorn_access_log_masks_tokens():
    from datetime import timedelta
    from types import SimpleNamespace

    from gunicorn.config import Config

    cfg = Config()
    cfg.set("accesslog", "-")
    logger = GunicornLogger(cfg)
    environ = {"REQUEST_METHOD": "GET", "RAW_URI": f"/documentos/{TOKEN}?senha=x",
               "PATH_INFO": f"/documentos/{TOKEN}", "QUERY_STRING": "senha=x",
               "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1",
               "HTTP_REFERER": f"https://ar.example/emissao/{TOKEN}"}
    resp = SimpleNamespace(status="200 OK", headers=[], sent=10)
    req = SimpleNamespace(headers=[("COOKIE", "videoar_session=abc")])
    atoms = logger.atoms(resp, req, environ, timedelta(milliseconds=5))
    assert atoms["r"] == "GET /documentos/…?senha=… HTTP/1.1"
    assert atoms["U"] == "/documentos/…" and atoms["f"] == "https://ar.example/emissao/…"
    assert atoms["{cookie}i"] == "…"
    assert TOKEN not in json.dumps({k: str(v) for k, v in atoms.items()})
