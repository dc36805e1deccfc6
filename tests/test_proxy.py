"""Behind a reverse proxy: the client's address comes from the one hop we trust (PROXY_HOPS),
never from what the client wrote itself; under HTTPS cookies are Secure and HSTS is sent."""
import pytest
from sqlalchemy import select

from app import LANGUAGE_COOKIE, create_app
from app.models import AuditEvent
from tests.conftest import CSRFClient, _config_for
from tests.support.robot import solve_robot_check

PROXY = "127.0.0.1"  # the test client's REMOTE_ADDR: Caddy on the same machine
CLIENT = "203.0.113.7"
FORGED = "6.6.6.6"


@pytest.fixture
def make_app(app, database, tmp_path):
    """Another app on the test's (emptied) database, with settings of its own."""
    built = []

    def make(**settings):
        config = type("Config", (_config_for(database, tmp_path / "instance"),), settings)
        application = create_app(config)
        application.test_client_class = CSRFClient
        built.append(application)
        return application

    yield make
    from app.extensions import db

    for application in built:
        with application.app_context():
            for engine in db.engines.values():
                engine.dispose()


def forwarded(client_header=f"{FORGED}, {CLIENT}", **more):
    """Headers as Caddy sends them: the client's own X-Forwarded-For with the address Caddy
    saw appended."""
    return {"X-Forwarded-For": client_header, **more}


def login_events(db, action="staff.login"):
    db.session.rollback()
    return db.session.execute(select(AuditEvent).where(AuditEvent.action == action)
                              .order_by(AuditEvent.seq)).scalars().all()


def test_default_trusts_no_proxy(app):
    assert app.config["PROXY_HOPS"] == 0


def test_one_hop_records_the_address_the_proxy_saw(make_app, agent, db):
    client = make_app(PROXY_HOPS=1).test_client()
    response = client.post("/equipe/entrar", data={"email": agent.email,
                                                   "password": "senha-de-teste-123"},
                           headers=forwarded())
    assert response.status_code == 302
    [event] = login_events(db)
    assert event.ip == CLIENT


def test_one_hop_public_request_audits_the_client(make_app, factory, mailbox, db):
    client = make_app(PROXY_HOPS=1).test_client()
    data = {"product_id": factory.product("ecpf-a1").id, "cpf": "390.533.447-05",
            "name": "João Pedro Alves", "email": "joao@cliente.example",
            "phone": "(21) 99876-5432", "altcha": solve_robot_check(client)}
    response = client.post("/solicitar", data=data, headers=forwarded())
    assert response.status_code == 200, response.text
    db.session.rollback()
    event = db.session.execute(
        select(AuditEvent).where(AuditEvent.action == "request.create")).scalar_one()
    assert event.ip == CLIENT


def test_without_a_proxy_the_header_is_ignored(client, agent, db):
    response = client.post("/equipe/entrar", data={"email": agent.email,
                                                   "password": "senha-de-teste-123"},
                           headers=forwarded())
    assert response.status_code == 302
    [event] = login_events(db)
    assert event.ip == PROXY


def test_only_the_address_the_proxy_appended_counts(make_app, agent, db):
    """Whatever the client writes in its own X-Forwarded-For, the proxy appends the address
    it saw last: that one is recorded, however plausible the client's looks."""
    client = make_app(PROXY_HOPS=1).test_client()
    client.post("/equipe/entrar", data={"email": agent.email, "password": "errada-errada"},
                headers=forwarded(f"{CLIENT}, {FORGED}"))
    [event] = login_events(db, "staff.login_failed")
    assert event.ip == FORGED  # what the proxy appended: the real peer, here "6.6.6.6"


def test_rate_limit_counts_the_client_address_behind_the_proxy(make_app, agent):
    application = make_app(PROXY_HOPS=1, LOGIN_RATE_LIMIT="2 per minute")
    client = application.test_client()

    def attempt(header):
        return client.post("/equipe/entrar", data={"email": "x@ar-teste.example",
                                                   "password": "y"},
                           headers=forwarded(header)).status_code

    assert [attempt(CLIENT), attempt(f"{FORGED}, {CLIENT}")] == [401, 401]
    # A forged left part does not make a new client; the address the proxy saw is limited.
    assert attempt(f"1.2.3.4, {CLIENT}") == 429
    # Another client behind the same proxy is not.
    assert attempt("198.51.100.9") == 401


def test_rate_limit_without_a_proxy_ignores_the_header(make_app, agent):
    client = make_app(LOGIN_RATE_LIMIT="2 per minute").test_client()
    codes = [client.post("/equipe/entrar", data={"email": "x@ar-teste.example", "password": "y"},
                         headers=forwarded(ip)).status_code
             for ip in ("198.51.100.1", "198.51.100.2", "198.51.100.3")]
    assert codes == [401, 401, 429]


def test_https_cookies_are_secure_and_hsts_is_sent(make_app, agent):
    application = make_app(PROXY_HOPS=1, PUBLIC_URL="https://ar.example")
    client = application.test_client()
    # Flask-WTF checks the Referer of HTTPS form posts.
    https = forwarded(CLIENT, **{"X-Forwarded-Proto": "https", "X-Forwarded-Host": "ar.example",
                                 "Referer": "https://ar.example/equipe/entrar"})
    page = client.get("/equipe/entrar", headers=https)
    hsts = page.headers.get("Strict-Transport-Security", "")
    assert hsts.startswith("max-age=") and int(hsts.split("=")[1].split(";")[0]) >= 31536000
    response = client.post("/equipe/entrar", data={"email": agent.email,
                                                   "password": "senha-de-teste-123"},
                           headers={**https, "X-CSRFToken": client.csrf_token()})
    assert response.status_code == 302
    session_cookie = [c for c in response.headers.getlist("Set-Cookie")
                      if c.startswith("videoar_session=")]
    assert session_cookie and all("; Secure" in c for c in session_cookie)
    language = client.post("/equipe/idioma/en", data={"next": "/"},
                           headers={**https, "X-CSRFToken": client.csrf_token()})
    [cookie] = [c for c in language.headers.getlist("Set-Cookie")
                if c.startswith(LANGUAGE_COOKIE + "=")]
    assert "; Secure" in cookie and "HttpOnly" in cookie


def test_http_keeps_cookies_plain_and_sends_no_hsts(client, agent):
    response = client.post("/equipe/entrar", data={"email": agent.email,
                                                   "password": "senha-de-teste-123"})
    assert "Strict-Transport-Security" not in response.headers
    cookies = response.headers.getlist("Set-Cookie")
    assert cookies and not any("; Secure" in c for c in cookies)


def test_behind_the_proxy_the_app_sees_https_and_the_public_host(make_app):
    application = make_app(PROXY_HOPS=1, PUBLIC_URL="https://ar.example")
    seen = {}

    @application.get("/_proxy_probe")
    def probe():
        from flask import request

        seen.update(url=request.url, secure=request.is_secure, addr=request.remote_addr)
        return ""

    application.test_client().get("/_proxy_probe", headers=forwarded(
        CLIENT, **{"X-Forwarded-Proto": "https", "X-Forwarded-Host": "ar.example"}))
    assert seen == {"url": "https://ar.example/_proxy_probe", "secure": True, "addr": CLIENT}
