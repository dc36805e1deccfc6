"""Administration: office data, closures, staff users and roles, products, outbox."""
from datetime import date

from sqlalchemy import func, select

from app.models import AuditEvent, OfficeClosure, OfficeSettings, Product, StaffUser
from app.services import staff

OFFICE = {"authority_name": "Cartório do 1º Ofício", "cnpj": "11.222.333/0001-81",
          "phone": "(31) 3327-6670", "email": "contato@cartorio.example",
          "address": "Rua Visconde de Taunay, 173", "city": "Belo Horizonte", "uf": "MG",
          "time_zone": "America/Sao_Paulo", "reminder_after_days": "5", "expire_after_days": "30"}


def test_office_settings_saved_and_audited(client, auth, admin, db):
    auth.login(admin.email)
    response = client.post("/admin/escritorio", data=OFFICE)
    assert response.status_code == 302
    settings = db.session.get(OfficeSettings, 1)
    assert settings.authority_name == "Cartório do 1º Ofício"
    assert settings.cnpj == "11222333000181" and settings.phone == "+553133276670"
    event = db.session.execute(select(AuditEvent).where(AuditEvent.action == "office.update")).scalar_one()
    assert "authority_name" in event.details


def test_office_settings_validation(client, auth, admin, db):
    auth.login(admin.email)
    response = client.post("/admin/escritorio", data={**OFFICE, "cnpj": "11.222.333/0001-80",
                                                      "expire_after_days": "3",
                                                      "reminder_after_days": "5"})
    assert response.status_code == 422
    assert "CNPJ inválido" in response.text
    assert "A expiração deve vir depois do lembrete." in response.text
    assert db.session.get(OfficeSettings, 1).authority_name == "AR Teste"


def test_closures(client, auth, admin, db):
    auth.login(admin.email)
    client.post("/admin/escritorio/fechamentos", data={"day": "2026-12-24", "description": "Véspera de Natal"})
    client.post("/admin/escritorio/fechamentos", data={"day": "2026-12-24", "description": "de novo"})
    closure = db.session.execute(select(OfficeClosure)).scalar_one()
    assert closure.day == date(2026, 12, 24)
    page = client.get("/admin/escritorio").text
    assert "24/12/2026" in page
    client.post(f"/admin/escritorio/fechamentos/{closure.id}/remover")
    assert db.session.execute(select(func.count(OfficeClosure.id))).scalar_one() == 0


def test_duplicate_closure_message(client, auth, admin):
    auth.login(admin.email)
    client.post("/admin/escritorio/fechamentos", data={"day": "2026-12-24", "description": "Véspera"})
    response = client.post("/admin/escritorio/fechamentos", data={"day": "2026-12-24", "description": "x"},
                           follow_redirects=True)
    assert "Esta data já está cadastrada." in response.text


def test_create_user_with_roles_and_login(client, auth, admin, db):
    auth.login(admin.email)
    response = client.post("/admin/usuarios/novo", data={
        "name": "Vera Verificadora", "email": "vera@ar-teste.example",
        "roles": ["verifier", "agent"], "password": "uma-senha-boa-123"})
    assert response.status_code == 302
    user = db.session.execute(select(StaffUser).where(StaffUser.email == "vera@ar-teste.example")).scalar_one()
    assert user.roles == ["agent", "verifier"]
    auth.logout()
    assert auth.login("vera@ar-teste.example", "uma-senha-boa-123").status_code == 302


def test_create_user_refuses_duplicates_short_passwords_and_no_role(client, auth, admin, db):
    auth.login(admin.email)
    base = {"name": "X", "email": admin.email, "roles": ["agent"], "password": "uma-senha-boa-123"}
    assert "Já existe um usuário com este e-mail." in client.post("/admin/usuarios/novo", data=base).text
    response = client.post("/admin/usuarios/novo", data={**base, "email": "y@ar-teste.example", "password": "curta"})
    assert "A senha deve ter pelo menos 10 caracteres." in response.text
    response = client.post("/admin/usuarios/novo", data={**base, "email": "z@ar-teste.example", "roles": []})
    assert "Escolha pelo menos um papel." in response.text
    assert db.session.execute(select(func.count(StaffUser.id))).scalar_one() == 1


def test_two_person_office_roles(client, auth, admin, factory, db):
    """A two-person office: each person is agent and verifier, one is also admin."""
    other = factory.staff(roles=("agent", "verifier"))
    auth.login(admin.email)
    client.post(f"/admin/usuarios/{admin.id}", data={"roles": ["admin", "agent", "verifier"]})
    assert db.session.get(StaffUser, admin.id).roles == ["agent", "verifier", "admin"]
    assert db.session.get(StaffUser, other.id).roles == ["agent", "verifier"]


def test_last_admin_cannot_be_removed(client, auth, admin, db):
    auth.login(admin.email)
    response = client.post(f"/admin/usuarios/{admin.id}", data={"roles": ["agent"]})
    assert "O escritório precisa de pelo menos um administrador ativo." in response.text
    assert db.session.get(StaffUser, admin.id).is_admin
    response = client.post(f"/admin/usuarios/{admin.id}/desativar", follow_redirects=True)
    assert "Você não pode desativar a sua própria conta." in response.text


def test_reset_password_shows_it_once_and_ends_sessions(app, client, auth, admin, agent, db):
    other_client = app.test_client()
    other_client.post("/equipe/entrar", data={"email": agent.email, "password": "senha-de-teste-123"})
    assert other_client.get("/painel/").status_code == 200
    auth.login(admin.email)
    response = client.post(f"/admin/usuarios/{agent.id}/redefinir-senha")
    new_password = response.text.split('class="secret">')[1].split("<")[0]
    assert len(new_password) >= 10
    assert other_client.get("/painel/").status_code == 302
    user = db.session.get(StaffUser, agent.id)
    assert staff.verify_password(user.password_hash, new_password)
    events = db.session.execute(select(AuditEvent).where(AuditEvent.action == "staff.password_reset")).scalars().all()
    assert len(events) == 1 and new_password not in (events[0].details or "")


def test_deactivate_and_reactivate(client, auth, admin, agent, db):
    auth.login(admin.email)
    client.post(f"/admin/usuarios/{agent.id}/desativar")
    assert not db.session.get(StaffUser, agent.id).active
    client.post(f"/admin/usuarios/{agent.id}/ativar")
    db.session.expire_all()
    assert db.session.get(StaffUser, agent.id).active


def test_products_are_data(client, auth, admin, db):
    auth.login(admin.email)
    product = db.session.execute(select(Product).where(Product.code == "ecpf-a1")).scalar_one()
    data = {"code": "ecpf-a1", "name": "e-CPF A1 (nova resolução)", "kind": "e_cpf",
            "cert_type": "A1", "policy_oid": "2.16.76.1.2.1.51", "validity_months": "12",
            "key_storage": "software", "needs_documents": "y", "needs_second_check": "y",
            "active": "y"}
    assert client.post(f"/admin/produtos/{product.id}", data=data).status_code == 302
    db.session.refresh(product)
    assert product.policy_oid == "2.16.76.1.2.1.51" and product.name == "e-CPF A1 (nova resolução)"
    response = client.post(f"/admin/produtos/{product.id}", data={**data, "policy_oid": "2.16.x"})
    assert "OID inválido" in response.text
    response = client.post("/admin/produtos/novo", data={**data, "name": "Outro"})
    assert "Já existe um produto com este código." in response.text
    response = client.post("/admin/produtos/novo", data={**data, "code": "novo-tipo", "name": "Novo tipo",
                                                        "cert_type": "T1", "validity_months": "24"})
    assert response.status_code == 302
    assert db.session.execute(select(Product).where(Product.code == "novo-tipo")).scalar_one().cert_type == "T1"


def test_outbox_lists_and_shows_emails(client, auth, admin, factory, mailbox):
    cert_request = factory.request()
    auth.login(admin.email)
    page = client.get("/admin/emails").text
    assert f"Importe seus documentos — protocolo {cert_request.protocol}" in page
    message = mailbox.messages()[0]
    page = client.get(f"/admin/emails/{message.id}").text
    assert message.message_id.replace("<", "&lt;").replace(">", "&gt;") in page
    assert "srcdoc=" in page and "sandbox" in page


def test_invalid_role_is_reported(client, auth, admin, db):
    auth.login(admin.email)
    response = client.post("/admin/usuarios/novo", data={
        "name": "X", "email": "x@ar-teste.example", "roles": ["dono"], "password": "uma-senha-boa-123"})
    assert response.status_code == 422
    assert "não é uma opção válida" in response.text
    assert db.session.execute(select(func.count(StaffUser.id))).scalar_one() == 1
