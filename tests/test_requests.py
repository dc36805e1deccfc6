"""Opening a request (agent manual steps 4–7), its link and its email."""
import re

from sqlalchemy import func, select
from stdnum import luhn

from app.models import AccessLink, AuditEvent, CertificateRequest, Company
from app.services import requests as request_service


def _start(client, person, product, **extra):
    return client.post(f"/pessoas/{person.id}/certificacao/remota",
                       data={"product_id": product.id, "confirmed": "y", **extra})


def test_agent_opens_request_and_client_gets_the_email(client, auth, agent, factory, mailbox, db):
    person = factory.person()
    auth.login(agent.email)
    response = _start(client, person, factory.product("ecpf-a1"))
    assert response.status_code == 302
    cert_request = db.session.execute(select(CertificateRequest)).scalar_one()
    assert cert_request.state == "documents_pending"
    assert cert_request.assigned_agent_id == agent.id
    assert re.fullmatch(r"[1-9]\d{9}", cert_request.protocol) and luhn.is_valid(cert_request.protocol)

    page = client.get(response.location).text
    assert "Copiar link de importação" in page
    link_url = re.search(r'id="documents-link" value="([^"]+)"', page).group(1)
    token = link_url.rsplit("/", 1)[1]
    assert len(token) >= 22  # at least 128 bits of base64

    [message] = mailbox.messages()
    assert message.to_address == person.email
    assert message.subject == f"Importe seus documentos — protocolo {cert_request.protocol}"
    assert cert_request.protocol in message.body_text and link_url in message.body_text
    assert link_url in message.body_html and "Importe seus documentos" in message.body_html
    assert "America/Sao_Paulo" in message.body_text  # times name their zone

    transitions = db.session.execute(
        select(AuditEvent.to_state).where(AuditEvent.request_id == cert_request.id,
                                          AuditEvent.action == "request.transition")
    ).scalars().all()
    assert transitions == ["documents_pending"]
    event = db.session.execute(select(AuditEvent).where(AuditEvent.action == "request.create")).scalar_one()
    assert event.actor_label == agent.email and event.ip == "127.0.0.1"


def test_link_opens_only_with_the_right_token(client, factory, mailbox, db):
    cert_request = factory.request()
    link = db.session.execute(select(AccessLink)).scalar_one()
    from app.services import links

    token = links.token_for(link)
    assert client.get(f"/documentos/{token}").status_code == 200
    # A guessed or altered token, or the protocol itself, opens nothing.
    for guess in (token[:-1] + ("A" if token[-1] != "A" else "B"), cert_request.protocol, "x" * 43):
        response = client.get(f"/documentos/{guess}")
        assert response.status_code == 404
        assert "Este link não é válido" in response.text


def test_token_is_not_stored_in_the_database(factory, mailbox, db):
    factory.request()
    link = db.session.execute(select(AccessLink)).scalar_one()
    from app.services import links

    token = links.token_for(link)
    assert token not in (link.nonce, link.token_digest)


def test_renewed_link_replaces_the_old_one(client, auth, agent, factory, mailbox, db):
    cert_request = factory.request()
    from app.services import links

    old_token = links.token_for(links.current_link(cert_request, "documents"))
    auth.login(agent.email)
    client.post(f"/solicitacoes/{cert_request.id}/link-documentos")
    db.session.expire_all()
    new_token = links.token_for(links.current_link(cert_request, "documents"))
    assert new_token != old_token
    response = client.get(f"/documentos/{old_token}")
    assert response.status_code == 404 and "substituído por um mais recente" in response.text
    assert client.get(f"/documentos/{new_token}").status_code == 200
    assert len(mailbox.messages()) == 2


def test_expired_link(client, factory, mailbox, db):
    from datetime import timedelta

    from app.models import utcnow
    from app.services import links

    cert_request = factory.request()
    link = links.current_link(cert_request, "documents")
    link.expires_at = utcnow() - timedelta(minutes=1)
    db.session.commit()
    response = client.get(f"/documentos/{links.token_for(link)}")
    assert response.status_code == 404 and "Este link expirou" in response.text


def test_ecnpj_needs_company_data(client, auth, agent, factory, mailbox, db):
    person = factory.person()
    auth.login(agent.email)
    response = _start(client, person, factory.product("ecnpj-a3"))
    assert response.status_code == 422
    assert "Obrigatório para e-CNPJ." in response.text
    assert db.session.execute(select(func.count(CertificateRequest.id))).scalar_one() == 0
    response = _start(client, person, factory.product("ecnpj-a3"), cnpj="11.222.333/0001-81",
                      legal_name="Padaria Exemplo Ltda", company_city="Campinas", company_uf="SP")
    assert response.status_code == 302
    company = db.session.execute(select(Company)).scalar_one()
    assert company.cnpj == "11222333000181" and company.responsible_id == person.id
    response = _start(client, person, factory.product("ecnpj-a1"), cnpj="11.222.333/0001-80",
                      legal_name="X", company_city="Y", company_uf="SP")
    assert "CNPJ inválido" in response.text


def test_second_open_request_of_same_product_is_refused(client, auth, agent, factory, mailbox, db):
    person = factory.person()
    factory.request(person=person)
    auth.login(agent.email)
    response = _start(client, person, factory.product("ecpf-a1"))
    assert response.status_code == 409
    assert "Já existe uma solicitação em andamento" in response.text
    assert db.session.execute(select(func.count(CertificateRequest.id))).scalar_one() == 1
    assert len(mailbox.messages()) == 1


def test_confirmation_is_required(client, auth, agent, factory, db):
    person = factory.person()
    auth.login(agent.email)
    response = client.post(f"/pessoas/{person.id}/certificacao/remota",
                           data={"product_id": factory.product().id})
    assert response.status_code == 422
    assert "Confirme os dados antes de iniciar." in response.text


def test_enotariado_opens_without_documents(factory, mailbox, db):
    cert_request = factory.request(product_code="enotariado")
    assert cert_request.state == "requested"
    assert mailbox.messages() == []


def test_cancel_request_revokes_links(client, auth, agent, factory, mailbox, db):
    cert_request = factory.request()
    auth.login(agent.email)
    response = client.post(f"/solicitacoes/{cert_request.id}/cancelar", data={"reason": "desistiu"})
    assert response.status_code == 302
    db.session.refresh(cert_request)
    assert cert_request.state == "cancelled"
    assert all(link.revoked_at for link in cert_request.links)
    event = db.session.execute(select(AuditEvent).where(AuditEvent.to_state == "cancelled")).scalar_one()
    assert event.reason == "desistiu" and event.from_state == "documents_pending"


def test_protocols_are_valid_and_distinct(app, db):
    protocols = {request_service.new_protocol() for _ in range(500)}
    assert len(protocols) == 500
    assert all(request_service.is_valid_protocol(p) for p in protocols)
    assert not request_service.is_valid_protocol("1234567890") or luhn.is_valid("1234567890")
