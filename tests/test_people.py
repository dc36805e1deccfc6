"""Person registry: CPF check digits, validation messages, duplicates."""
from sqlalchemy import func, select

from app.models import AuditEvent, Person

VALID = {"cpf": "529.982.247-25", "name": "  João   Pereira ", "birth_date": "1990-01-31",
         "email": "joao@cliente.example", "phone": "(21) 99876-5432"}


def test_register_person(client, auth, agent, db):
    auth.login(agent.email)
    response = client.post("/pessoas/nova", data=VALID)
    assert response.status_code == 302
    person = db.session.execute(select(Person)).scalar_one()
    assert person.cpf == "52998224725"
    assert person.name == "João Pereira"
    assert person.phone == "+5521998765432"
    assert db.session.execute(select(AuditEvent).where(AuditEvent.action == "person.create")).scalar_one()
    page = client.get(response.location).text
    assert "529.982.247-25" in page and "(21) 99876-5432" in page


def test_wrong_cpf_is_refused_with_a_clear_message(client, auth, agent, db):
    auth.login(agent.email)
    response = client.post("/pessoas/nova", data={**VALID, "cpf": "529.982.247-24"})
    assert response.status_code == 422
    assert "CPF inválido. Confira os números digitados." in response.text
    assert db.session.execute(select(func.count(Person.id))).scalar_one() == 0


def test_bad_email_and_phone(client, auth, agent, db):
    auth.login(agent.email)
    response = client.post("/pessoas/nova", data={**VALID, "email": "joao@", "phone": "123"})
    assert response.status_code == 422
    assert "E-mail inválido." in response.text
    assert "Telefone inválido. Informe DDD e número." in response.text
    assert db.session.execute(select(func.count(Person.id))).scalar_one() == 0


def test_missing_field_message_is_pt_br(client, auth, agent):
    auth.login(agent.email)
    response = client.post("/pessoas/nova", data={**VALID, "name": ""})
    assert "Preencha este campo." in response.text


def test_duplicate_person_is_refused(client, auth, agent, factory, db):
    existing = factory.person(cpf="52998224725")
    auth.login(agent.email)
    response = client.post("/pessoas/nova", data=VALID)
    assert response.status_code == 409
    assert "Já existe uma pessoa cadastrada com este CPF." in response.text
    assert f"/pessoas/{existing.id}" in response.text
    assert db.session.execute(select(func.count(Person.id))).scalar_one() == 1


def test_search_by_cpf(client, auth, agent, factory):
    person = factory.person()
    auth.login(agent.email)
    response = client.get("/pessoas/?cpf=529.982.247-25")
    assert response.status_code == 302 and response.location.endswith(f"/pessoas/{person.id}")
    response = client.get("/pessoas/?cpf=111.444.777-35")
    assert "Nenhuma pessoa cadastrada com o CPF 111.444.777-35." in response.text
    assert "Cadastrar pessoa" in response.text
    response = client.get("/pessoas/?cpf=123")
    assert "CPF inválido" in response.text


def test_edit_person_is_audited(client, auth, agent, factory, db):
    person = factory.person()
    auth.login(agent.email)
    data = {**VALID, "name": "Maria S. Souza", "email": "nova@cliente.example"}
    response = client.post(f"/pessoas/{person.id}/editar", data=data)
    assert response.status_code == 302
    db.session.refresh(person)
    assert person.email == "nova@cliente.example" and person.cpf == "52998224725"
    event = db.session.execute(select(AuditEvent).where(AuditEvent.action == "person.update")).scalar_one()
    assert "email" in event.details and "name" in event.details
