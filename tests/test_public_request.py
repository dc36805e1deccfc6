"""The client's own request on the public site, behind the "Não sou um robô" proof of work.

Challenges are fetched from the app's endpoint and solved with ALTCHA's Python solver: real
proof of work, at the small difficulty of TestConfig.
"""
import base64
import json
import re
import time

import altcha
import pytest
from sqlalchemy import func, select

from app.jobs import redis_connection
from app.models import (AccessLink, AuditEvent, CertificateRequest, Company, EmailMessage,
                        Person)
from app.services import robot_check
from tests.support.robot import solve_robot_check

NEW_CPF = "39053344705"


def solve(client) -> str:
    """Fetch a challenge as the widget does and solve it; returns the form's `altcha` value."""
    return solve_robot_check(client)


def form(factory, client=None, product="ecpf-a1", **overrides):
    data = {"product_id": factory.product(product).id, "cpf": "390.533.447-05",
            "name": "João  Pedro Alves", "email": "joao@cliente.example",
            "phone": "(21) 99876-5432"}
    if client is not None:
        data["altcha"] = solve(client)
    data.update(overrides)
    return data


RECORDS = (Person, Company, CertificateRequest, AccessLink, EmailMessage, AuditEvent)


def counts(db):
    """How many rows of each kind a request writes: equal before and after a refusal."""
    db.session.rollback()
    return {model.__name__: db.session.execute(select(func.count()).select_from(model)).scalar_one()
            for model in RECORDS}


def submit(client, data):
    return client.post("/solicitar", data=data)


# --- the page and the challenge -------------------------------------------------------------

def test_home_offers_the_request_form(client):
    page = client.get("/").text
    assert 'href="/solicitar"' in page and "Solicitar certificado" in page


def test_form_page_has_the_robot_check_and_only_public_products(client, factory):
    response = client.get("/solicitar")
    assert response.status_code == 200
    page = response.text
    assert "Solicitar certificado digital" in page
    assert '<altcha-widget name="altcha" challenge="/altcha/desafio"' in page
    assert "Não sou um robô" in page  # the widget's label, from the catalog
    assert "/static/vendor/altcha-3.2.2.min.js" in page
    assert "/static/vendor/altcha-3.2.2-pbkdf2-worker.js" in page
    # The form's own hidden `altcha` field is not rendered: only the widget's value is sent.
    assert 'id="altcha"' not in page
    assert "Certificado Digital e-CPF A1" in page and "Certificado Digital e-CNPJ A3" in page
    assert "e-Notariado" not in page
    # Under the app's CSP: no inline script anywhere on the page.
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page)
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]


def test_challenge_is_signed_expiring_and_never_cached(app, client):
    before = int(time.time())
    response = client.get("/altcha/desafio")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    params = body["parameters"]
    assert params["algorithm"] == "PBKDF2/SHA-256"
    assert before + app.config["ALTCHA_EXPIRES_SECONDS"] <= params["expiresAt"] <= time.time() + 600
    assert len(params["keyPrefix"]) == 32 and re.fullmatch(r"[0-9a-f]{64}", body["signature"])
    # Each challenge is new, and its answer lies in the upper half of the range.
    other = client.get("/altcha/desafio").get_json()
    assert other["parameters"]["nonce"] != params["nonce"]
    solution = altcha.solve_challenge(altcha.Challenge.from_dict(body))
    max_number = app.config["ALTCHA_MAX_NUMBER"]
    assert max_number // 2 <= solution.counter <= max_number


# --- requests that go through ---------------------------------------------------------------

def test_new_client_gets_a_request_and_the_email(client, factory, mailbox, db):
    response = submit(client, form(factory, client))
    assert response.status_code == 200, response.text
    cert_request = db.session.execute(select(CertificateRequest)).scalar_one()
    assert cert_request.origin == "public" and cert_request.state == "documents_pending"
    assert cert_request.created_by is None and cert_request.assigned_agent is None
    page = response.text
    assert "Solicitação recebida" in page and cert_request.protocol in page
    assert "Enviamos o e-mail “Importe seus documentos” para joao@cliente.example." in page

    person = cert_request.holder
    assert (person.cpf, person.name, person.email, person.phone) == (
        NEW_CPF, "João Pedro Alves", "joao@cliente.example", "+5521998765432")
    assert person.birth_date is None and person.rg_number is None and person.nis is None

    [message] = mailbox.messages()
    assert message.to_address == "joao@cliente.example"
    assert message.subject == f"Importe seus documentos — protocolo {cert_request.protocol}"
    event = db.session.execute(
        select(AuditEvent).where(AuditEvent.action == "request.create")).scalar_one()
    assert event.actor_type == "client" and event.ip == "127.0.0.1"
    assert '"origin": "public"' in event.details


def test_registered_cpf_keeps_its_data_and_email(client, factory, mailbox, db):
    person = factory.person(cpf=NEW_CPF)
    before = (person.name, person.email, person.phone, person.rg_number, person.birth_date)
    response = submit(client, form(factory, client, name="Outro Nome", email="outro@x.example",
                                   phone="(31) 91234-5678"))
    assert response.status_code == 200, response.text
    page = response.text
    assert "m***@cliente.example" in page
    assert "maria@cliente.example" not in page and "outro@x.example" not in page
    assert "endereço do cadastro" in page
    assert person.name not in page  # the registry's data is not shown to whoever typed the CPF

    db.session.expire_all()
    person = db.session.get(Person, person.id)
    assert (person.name, person.email, person.phone, person.rg_number, person.birth_date) == before
    assert db.session.execute(select(func.count(Person.id))).scalar_one() == 1
    assert not db.session.execute(
        select(AuditEvent).where(AuditEvent.action == "person.update")).first()
    [message] = mailbox.messages()
    assert message.to_address == "maria@cliente.example"


def test_ecnpj_registers_the_company_with_the_client_responsible(client, factory, mailbox, db):
    data = form(factory, client, product="ecnpj-a1", cnpj="11.444.777/0001-61",
                legal_name="Alves  Comércio LTDA", company_city="Niterói", company_uf="RJ")
    response = submit(client, data)
    assert response.status_code == 200, response.text
    cert_request = db.session.execute(select(CertificateRequest)).scalar_one()
    company = cert_request.company
    assert (company.cnpj, company.legal_name, company.city, company.uf) == (
        "11444777000161", "Alves Comércio LTDA", "Niterói", "RJ")
    assert company.responsible_id == cert_request.holder_id
    assert len(mailbox.messages()) == 1


# --- refusals: a clear message, and nothing written -----------------------------------------

def test_wrong_cpf_is_refused(client, factory, db):
    before = counts(db)
    response = submit(client, form(factory, client, cpf="123.456.789-00"))
    assert response.status_code == 422
    assert "CPF inválido. Confira os números digitados." in response.text
    assert "Confira os campos indicados abaixo." in response.text
    assert counts(db) == before


def test_ecnpj_without_company_is_refused_and_the_check_is_not_spent(client, factory, mailbox,
                                                                      db):
    before = counts(db)
    data = form(factory, client, product="ecnpj-a3")
    response = submit(client, data)
    assert response.status_code == 422
    assert response.text.count("Obrigatório para e-CNPJ.") == 4
    assert counts(db) == before
    # Fixing the form with the same solved check goes through: a typo costs no new work.
    data.update(cnpj="11444777000161", legal_name="Alves LTDA", company_city="Niterói",
                company_uf="RJ")
    assert submit(client, data).status_code == 200


def test_product_not_offered_to_clients_is_refused(client, factory, db):
    before = counts(db)
    response = submit(client, form(factory, client, product="enotariado"))
    assert response.status_code == 422
    assert 'id="product_id-error"' in response.text
    assert counts(db) == before


def _tampered(payload, mutate):
    data = json.loads(base64.b64decode(payload))
    mutate(data)
    return base64.b64encode(json.dumps(data).encode()).decode()


def _forged(app):
    # A correct proof of work for a challenge signed with a key that is not the server's.
    challenge = altcha.create_challenge("PBKDF2/SHA-256", 10, counter=600,
                                        expires_at=int(time.time()) + 600,
                                        hmac_secret="not-the-server-key")
    return altcha.Payload(challenge, altcha.solve_challenge(challenge)).to_base64()


def _wrong_counter(payload):
    def mutate(data):
        data["solution"]["counter"] += 1
    return _tampered(payload, mutate)


def _wrong_key(payload):
    def mutate(data):
        data["solution"]["derivedKey"] = "00" * 32
    return _tampered(payload, mutate)


def _easier(payload):
    def mutate(data):
        data["challenge"]["parameters"]["keyPrefix"] = "00"
    return _tampered(payload, mutate)


ROBOT_CASES = {
    "missing": (lambda app, client: None, robot_check.MISSING),
    "empty": (lambda app, client: "", robot_check.MISSING),
    "not base64": (lambda app, client: "não é um payload!", robot_check.INVALID),
    "widget test mode": (lambda app, client: base64.b64encode(
        b'{"challenge": null, "solution": null, "test": true}').decode(), robot_check.INVALID),
    "wrong counter": (lambda app, client: _wrong_counter(solve(client)), robot_check.INVALID),
    "wrong key": (lambda app, client: _wrong_key(solve(client)), robot_check.INVALID),
    "easier challenge": (lambda app, client: _easier(solve(client)), robot_check.INVALID),
    "forged signature": (lambda app, client: _forged(app), robot_check.INVALID),
    "too long": (lambda app, client: "A" * 5000, robot_check.INVALID),
}


@pytest.mark.parametrize("case", ROBOT_CASES)
def test_bad_robot_check_is_refused(app, client, factory, db, case):
    make_payload, message = ROBOT_CASES[case]
    payload = make_payload(app, client)
    data = form(factory)
    if payload is not None:
        data["altcha"] = payload
    before = counts(db)
    response = submit(client, data)
    assert response.status_code == 422
    assert str(message) in response.text
    assert 'id="altcha-error"' in response.text
    assert counts(db) == before


def test_expired_robot_check_is_refused(app, client, factory, db):
    app.config["ALTCHA_EXPIRES_SECONDS"] = -5  # the server hands out an already expired one
    data = form(factory, client)
    app.config["ALTCHA_EXPIRES_SECONDS"] = 600
    before = counts(db)
    response = submit(client, data)
    assert response.status_code == 422
    assert "A verificação “Não sou um robô” expirou. Marque a caixa novamente." in response.text
    assert counts(db) == before


def test_double_submit_is_refused_the_second_time(client, factory, mailbox, db):
    data = form(factory, client)
    assert submit(client, data).status_code == 200
    after_first = counts(db)
    second = submit(client, data)
    assert second.status_code == 422
    assert "Esta verificação “Não sou um robô” já foi usada." in second.text
    assert counts(db) == after_first
    assert db.session.execute(select(func.count(CertificateRequest.id))).scalar_one() == 1
    assert len(mailbox.messages()) == 1


def test_duplicate_open_request_is_refused_without_telling_the_protocol(client, factory, mailbox,
                                                                          db):
    existing = factory.request(person=factory.person(cpf=NEW_CPF))
    before = counts(db)
    response = submit(client, form(factory, client))
    assert response.status_code == 409
    assert ("Já existe uma solicitação em andamento deste certificado para este CPF."
            in response.text)
    assert existing.protocol not in response.text
    assert counts(db) == before
    assert len(mailbox.messages()) == 1  # only the agent's original invitation


def test_public_form_is_rate_limited(app, client, factory, db):
    app.config["PUBLIC_FORM_RATE_LIMIT"] = "2 per minute"
    for _ in range(2):
        assert submit(client, form(factory, cpf="000")).status_code == 422
    response = submit(client, form(factory, cpf="000"))
    assert response.status_code == 429
    assert "Muitas tentativas" in response.text
    # Reading the page is not limited.
    assert client.get("/solicitar").status_code == 200


def test_challenges_are_rate_limited(app, client):
    app.config["ALTCHA_CHALLENGE_RATE_LIMIT"] = "2 per minute"
    assert [client.get("/altcha/desafio").status_code for _ in range(3)] == [200, 200, 429]


# --- the service other pages reuse ----------------------------------------------------------

def test_verify_accepts_a_solution_once_and_remembers_it_until_expiry(app, client):
    payload = solve(client)
    with app.test_request_context():
        robot_check.verify(payload)
        with pytest.raises(robot_check.RobotCheckError) as refused:
            robot_check.verify(payload)
    assert refused.value.message == robot_check.ALREADY_USED
    signature = json.loads(base64.b64decode(payload))["challenge"]["signature"]
    with app.app_context():
        ttl = redis_connection().ttl(robot_check.USED_KEY_PREFIX + signature)
    assert 0 < ttl <= app.config["ALTCHA_EXPIRES_SECONDS"] + 60


def test_challenge_key_depends_on_the_secret_key(app, client):
    payload = solve(client)
    app.config["SECRET_KEY"] = "another-secret"
    with app.test_request_context():
        with pytest.raises(robot_check.RobotCheckError) as refused:
            robot_check.verify(payload)
    assert refused.value.message == robot_check.INVALID
