"""After the call: "Continuar", the second check, the invitation, the holder's password, the
certificate request, revocation and the CRL, through the app's HTTP routes.
The browser side (key generation, PKCS#12, termo signatures) is test_browser_issuance.py's."""
import base64

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select

from app.models import AuditEvent, EmailMessage, IssuedCertificate, SecondCheck
from app.models.sms import SmsMessage
from app.services import links
from tests.conftest import STAFF_PASSWORD
from tests.support.dossier import PASSWORD, call_done, install_ca, make_csr

pytestmark = pytest.mark.emails_ok


@pytest.fixture
def verifier(factory):
    return factory.staff(roles=("verifier",), email="veri@ar-teste.example", name="Vera Verificadora")


@pytest.fixture
def done(app, db, factory, agent):
    install_ca(app)
    cert_request = factory.request(agent=agent)
    call_done(db, cert_request, agent)
    return cert_request


def _login(client, user):
    client.post("/equipe/sair")
    return client.post("/equipe/entrar", data={"email": user.email, "password": STAFF_PASSWORD})


def _to_approved(db, client, agent, verifier, cert_request):
    _login(client, agent)
    assert client.post(f"/solicitacoes/{cert_request.id}/continuar",
                       data={"confirm": "1"}).status_code == 302
    _login(client, verifier)
    assert client.post(f"/solicitacoes/{cert_request.id}/segunda-conferencia/aprovar"
                       ).status_code == 302
    db.session.refresh(cert_request)
    assert cert_request.state == "approved"
    client.post("/equipe/sair")
    return links.url_for_link(links.current_link(cert_request, "issuance"))


def _token(url):
    return url.rsplit("/", 1)[1]


def test_continue_needs_the_confirmation(db, client, agent, done):
    _login(client, agent)
    client.post(f"/solicitacoes/{done.id}/continuar", data={})
    db.session.refresh(done)
    assert done.state == "conference_done"
    client.post(f"/solicitacoes/{done.id}/continuar", data={"confirm": "1"})
    db.session.refresh(done)
    assert done.state == "second_check"
    page = client.get(f"/solicitacoes/{done.id}")
    assert "Aguardando a segunda conferência" in page.get_data(as_text=True)


def test_the_call_agent_may_not_verify_even_as_verifier(db, client, factory, done):
    # An agent who also holds the verifier role ran the call: refused, per request.
    both = factory.staff(roles=("agent", "verifier"), email="ambos@ar-teste.example")
    other = factory.request(person=factory.person(cpf="39053344705", email="b@x.example"),
                            agent=both)
    call_done(db, other, both)
    _login(client, both)
    client.post(f"/solicitacoes/{other.id}/continuar", data={"confirm": "1"})
    page = client.get(f"/solicitacoes/{other.id}/dossie").get_data(as_text=True)
    assert "Somente um verificador que não conduziu" in page
    response = client.post(f"/solicitacoes/{other.id}/segunda-conferencia/aprovar",
                           follow_redirects=True)
    assert "não pode fazer a segunda conferência" in response.get_data(as_text=True)
    db.session.refresh(other)
    assert other.state == "second_check"
    assert db.session.execute(select(SecondCheck)).scalars().all() == []


def test_approval_needs_the_recording_or_a_reason(db, app, client, factory, agent, verifier):
    install_ca(app)
    cert_request = factory.request(agent=agent)
    call_done(db, cert_request, agent, recording_state="processing")
    _login(client, agent)
    client.post(f"/solicitacoes/{cert_request.id}/continuar", data={"confirm": "1"})
    _login(client, verifier)
    page = client.post(f"/solicitacoes/{cert_request.id}/segunda-conferencia/aprovar",
                       follow_redirects=True).get_data(as_text=True)
    assert "A gravação ainda não está concluída" in page
    db.session.refresh(cert_request)
    assert cert_request.state == "second_check"
    client.post(f"/solicitacoes/{cert_request.id}/segunda-conferencia/aprovar",
                data={"override": "Processamento parado; trechos conferidos no dossiê."})
    db.session.refresh(cert_request)
    assert cert_request.state == "approved"
    check = db.session.execute(select(SecondCheck)).scalar_one()
    assert check.recording_override.startswith("Processamento parado")
    events = [e.action for e in db.session.execute(
        select(AuditEvent).where(AuditEvent.request_id == cert_request.id)).scalars()]
    assert "second_check.recording_override" in events


def test_return_to_agent_needs_a_reason_and_allows_a_new_call(db, client, agent, verifier, done):
    _login(client, agent)
    client.post(f"/solicitacoes/{done.id}/continuar", data={"confirm": "1"})
    _login(client, verifier)
    client.post(f"/solicitacoes/{done.id}/segunda-conferencia/devolver", data={"reason": " "})
    db.session.refresh(done)
    assert done.state == "second_check"
    client.post(f"/solicitacoes/{done.id}/segunda-conferencia/devolver",
                data={"reason": "Foto do rosto escura"})
    db.session.refresh(done)
    assert done.state == "conference_done"
    page = client.get(f"/solicitacoes/{done.id}").get_data(as_text=True)
    assert "Foto do rosto escura" in page
    dossier = client.get(f"/solicitacoes/{done.id}/dossie").get_data(as_text=True)
    assert "Segundas conferências" in dossier and "devolvido · Foto do rosto escura" in dossier


def test_invitation_by_email_and_sms_and_resend(db, client, agent, verifier, done):
    url = _to_approved(db, client, agent, verifier, done)
    email = db.session.execute(select(EmailMessage).where(
        EmailMessage.kind == "issuance_invitation")).scalar_one()
    assert url in email.body_text and email.to_address == done.holder.email
    sms = db.session.execute(select(SmsMessage)).scalar_one()
    assert sms.to == done.holder.phone and url in sms.body
    _login(client, agent)
    client.post(f"/solicitacoes/{done.id}/convite-emissao")
    assert len(db.session.execute(select(SmsMessage)).scalars().all()) == 2
    # The same live link is sent again.
    assert links.url_for_link(links.current_link(done, "issuance")) == url


def test_e_notariado_continue_goes_straight_to_the_invitation(db, app, client, factory, agent):
    install_ca(app)
    cert_request = factory.request(product_code="enotariado", agent=agent)
    call_done(db, cert_request, agent)
    _login(client, agent)
    client.post(f"/solicitacoes/{cert_request.id}/continuar", data={"confirm": "1"})
    db.session.refresh(cert_request)
    assert cert_request.state == "approved"
    assert links.current_link(cert_request, "issuance") is not None


def _unlock(client, token, password):
    return client.post(f"/emissao/{token}/senha", json={"password": password},
                       headers={"Accept": "application/json"})


def test_wrong_password_once_and_until_the_pause(db, app, client, agent, verifier, done, caplog):
    token = _token(_to_approved(db, client, agent, verifier, done))
    response = _unlock(client, token, "Errada123")
    assert response.status_code == 422
    assert "Restam 4 tentativas" in response.json["error"]
    for _ in range(3):
        _unlock(client, token, "Errada123")
    response = _unlock(client, token, "Errada123")
    assert "Muitas tentativas" in response.json["error"]
    # Paused: even the right password is refused now.
    response = _unlock(client, token, PASSWORD)
    assert response.status_code == 422 and "Muitas tentativas" in response.json["error"]
    # Without the session the CSR route refuses.
    csr, _ = make_csr()
    assert client.post("/emissao/requisicao",
                       json={"csr": base64.b64encode(csr).decode()}).status_code == 401
    wrong = db.session.execute(select(AuditEvent).where(
        AuditEvent.action == "holder.password_wrong")).scalars().all()
    assert len(wrong) == 5
    assert "Errada123" not in caplog.text and PASSWORD not in caplog.text


@pytest.mark.parametrize("case", ["other_cpf", "weak_key", "garbage"])
def test_bad_certificate_requests_are_refused(db, client, agent, verifier, done, case):
    token = _token(_to_approved(db, client, agent, verifier, done))
    assert _unlock(client, token, PASSWORD).status_code == 200
    if case == "other_cpf":
        csr, _ = make_csr("OUTRA PESSOA", cpf="39053344705")
        expected = "CPF ou CNPJ de outra pessoa"
    elif case == "weak_key":
        csr, _ = make_csr(key=rsa.generate_private_key(public_exponent=65537, key_size=1024))
        expected = "não atende à política"
    else:
        csr, expected = b"not a csr at all", "não é uma requisição"
    response = client.post("/emissao/requisicao", json={"csr": base64.b64encode(csr).decode()})
    assert response.status_code in (409, 422)
    assert expected in response.json["error"]
    db.session.refresh(done)
    assert done.state == "approved"
    assert db.session.execute(select(IssuedCertificate)).scalars().all() == []


def _issue(db, client, agent, verifier, cert_request):
    token = _token(_to_approved(db, client, agent, verifier, cert_request))
    assert _unlock(client, token, PASSWORD).status_code == 200
    csr, key = make_csr()
    response = client.post("/emissao/requisicao", json={"csr": base64.b64encode(csr).decode()})
    assert response.status_code == 200, response.get_data(as_text=True)
    return token, response.json, key


def test_issue_and_replay_the_link(db, client, agent, verifier, done):
    token, payload, key = _issue(db, client, agent, verifier, done)
    cert = x509.load_der_x509_certificate(base64.b64decode(payload["certificate"]))
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    db.session.refresh(done)
    assert done.state == "issued"
    assert format(cert.serial_number, "x") == payload["serial"]
    # A second request through the same session, and the link opened again: refused.
    csr, _ = make_csr()
    again = client.post("/emissao/requisicao", json={"csr": base64.b64encode(csr).decode()})
    assert again.status_code == 409 and "já foi emitido" in again.json["error"]
    page = client.get(f"/emissao/{token}")
    assert "já foi emitido" in page.get_data(as_text=True)
    assert _unlock(client, token, PASSWORD).status_code == 422
    assert len(db.session.execute(select(IssuedCertificate)).scalars().all()) == 1
    # Later, at any time: the password (and the robot check) show the certificate and termo.
    from tests.support.robot import solve_robot_check

    client.get(f"/emissao/{token}")
    later = client.post(f"/emissao/{token}/senha", data={
        "password": PASSWORD, "altcha": solve_robot_check(client)})
    assert later.status_code == 302 and later.headers["Location"].endswith("/emissao/certificado")
    page = client.get("/emissao/certificado").get_data(as_text=True)
    assert payload["serial"] in page and "Baixar termo de titularidade" in page
    assert client.get("/emissao/termo.pdf").data.startswith(b"%PDF")
    # The agent's page shows it issued, with the serial.
    _login(client, agent)
    section = client.get(f"/solicitacoes/{done.id}/emissao").get_data(as_text=True)
    assert "emitido" in section and payload["serial"] in section


def test_revocation_by_the_holder_and_the_crl(db, client, agent, verifier, done):
    token, payload, _ = _issue(db, client, agent, verifier, done)
    client.get("/")  # a fresh page for the robot check's session
    from tests.support.robot import solve_robot_check as solved_altcha

    wrong = client.post("/emissao/revogar", data={
        "protocol": done.protocol, "password": "Errada123", "reason": "loss",
        "altcha": solved_altcha(client)})
    assert wrong.status_code == 422 and "Senha incorreta" in wrong.get_data(as_text=True)
    db.session.refresh(done)
    assert done.state == "issued"
    ok = client.post("/emissao/revogar", data={
        "protocol": done.protocol, "password": PASSWORD, "reason": "theft",
        "altcha": solved_altcha(client)})
    assert ok.status_code == 200 and "revogado" in ok.get_data(as_text=True)
    db.session.refresh(done)
    assert done.state == "revoked"
    crl = x509.load_der_x509_crl(client.get("/ac/emissora.crl").data)
    entry = crl.get_revoked_certificate_by_serial_number(int(payload["serial"], 16))
    assert entry is not None
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason == x509.ReasonFlags.key_compromise
    issuing = x509.load_der_x509_certificate(client.get("/ac/emissora.crt").data)
    assert crl.is_signature_valid(issuing.public_key())


def test_staff_revocation_needs_a_reason(db, client, agent, verifier, done):
    _, payload, _ = _issue(db, client, agent, verifier, done)
    _login(client, agent)
    client.post(f"/solicitacoes/{done.id}/certificado/revogar", data={"reason": "superseded"})
    db.session.refresh(done)
    assert done.state == "issued"
    client.post(f"/solicitacoes/{done.id}/certificado/revogar",
                data={"reason": "superseded", "note": "Dados da empresa mudaram"})
    db.session.refresh(done)
    assert done.state == "revoked"
    issued = done.certificates[-1]
    assert issued.revoked_by == agent.name and issued.revocation_reason == "superseded"


def test_token_product_uploads_the_request(db, app, client, factory, agent, verifier):
    install_ca(app)
    cert_request = factory.request(product_code="ecpf-a3", agent=agent)
    call_done(db, cert_request, agent)
    token = _token(_to_approved(db, client, agent, verifier, cert_request))
    from tests.support.robot import solve_robot_check as solved_altcha

    client.get(f"/emissao/{token}")
    response = client.post(f"/emissao/{token}/senha", data={
        "password": PASSWORD, "altcha": solved_altcha(client)})
    assert response.status_code == 302 and response.headers["Location"].endswith("/emissao/token")
    csr, key = make_csr()
    pem = x509.load_der_x509_csr(csr).public_bytes(serialization.Encoding.PEM)
    import io

    response = client.post("/emissao/token", data={"csr": (io.BytesIO(pem), "token.csr")})
    assert response.status_code == 302
    db.session.refresh(cert_request)
    assert cert_request.state == "issued"
    assert cert_request.certificates[-1].key_storage == "token"
    cer = client.get("/emissao/certificado.cer")
    cert = x509.load_der_x509_certificate(cer.data)
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()


def test_e_cnpj_certificate_layout(db, app, client, factory, agent, verifier):
    """The company layout: CN "RAZAO SOCIAL:CNPJ", L and ST, otherNames .4, .2, .3, .7 in that
    order, byte for byte, with the responsible person's data."""
    from app.pki.profiles import read_der_string
    from app.services import people

    install_ca(app)
    person = factory.person()
    company = people.find_or_register_company("11444777000161", "Padaria Pão & Cia Ltda",
                                              "São Paulo", "SP", person)
    company.cei = "987654321098"
    db.session.commit()
    cert_request = factory.request(person=person, product_code="ecnpj-a1", agent=agent,
                                   company=company)
    call_done(db, cert_request, agent)
    _, payload, _ = _issue(db, client, agent, verifier, cert_request)
    cert = x509.load_der_x509_certificate(base64.b64decode(payload["certificate"]))
    name = cert.subject
    assert name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == \
        "PADARIA PAO & CIA LTDA:11444777000161"
    assert name.get_attributes_for_oid(x509.NameOID.LOCALITY_NAME)[0].value == "SAO PAULO"
    assert name.get_attributes_for_oid(x509.NameOID.STATE_OR_PROVINCE_NAME)[0].value == "SP"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    others = [(o.type_id.dotted_string, read_der_string(o.value))
              for o in san.get_values_for_type(x509.OtherName)]
    assert others == [
        ("2.16.76.1.3.4", "09031985" "52998224725" "12345678901" "000000123456789" "SSPSP"),
        ("2.16.76.1.3.2", "MARIA DA SILVA SOUZA"),
        ("2.16.76.1.3.3", "11444777000161"),
        ("2.16.76.1.3.7", "987654321098"),
    ]
    assert san.get_values_for_type(x509.RFC822Name) == [person.email]


@pytest.mark.one_database  # PDF signatures and keys; the database paths are covered by the other tests
def test_admin_imports_and_issues_signing_credentials(db, app, client, factory, agent, admin):
    """Administração → Certificados de assinatura: a PKCS#12 import (wrong password refused),
    and in homologação an agent's certificate issued by the built-in CA; keys kept encrypted."""
    import io
    from datetime import datetime, timedelta, timezone

    from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12
    from cryptography.x509.oid import NameOID

    from app.models import SigningCredential

    install_ca(app)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Selo Importado")])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(7).not_valid_before(now)
            .not_valid_after(now + timedelta(days=365)).sign(key, hashes.SHA256()))
    p12 = pkcs12.serialize_key_and_certificates(b"selo", key, cert, None,
                                                BestAvailableEncryption(b"segredo1"))
    _login(client, admin)
    wrong = client.post("/admin/certificados", data={
        "purpose": "seal", "password": "errada", "pkcs12": (io.BytesIO(p12), "selo.p12")})
    assert wrong.status_code == 422 and "Senha errada" in wrong.get_data(as_text=True)
    ok = client.post("/admin/certificados", data={
        "purpose": "seal", "password": "segredo1", "pkcs12": (io.BytesIO(p12), "selo.p12")})
    assert ok.status_code == 302
    seal = db.session.execute(select(SigningCredential).where(
        SigningCredential.purpose == "seal")).scalar_one()
    assert "Selo Importado" in seal.subject
    assert b"ENCRYPTED PRIVATE KEY" in seal.encrypted_key
    assert serialization.load_pem_private_key(
        seal.encrypted_key, app.config["KEYS_PASSPHRASE"].encode()).private_numbers() == \
        key.private_numbers()
    client.post("/admin/certificados", data={"purpose": "agent", "staff_user_id": agent.id,
                                             "issue": "1"})
    mine = db.session.execute(select(SigningCredential).where(
        SigningCredential.staff_user_id == agent.id)).scalar_one()
    issued = x509.load_der_x509_certificate(mine.certificate_der)
    from app.services import ca as ca_service

    with app.app_context():
        issued.verify_directly_issued_by(ca_service.builtin_ca().issuing_cert)
    page = client.get("/admin/certificados").get_data(as_text=True)
    assert "Selo Importado" in page and agent.name in page


def _token_issued(db, app, client, factory, agent, verifier):
    """An A3 request issued from an uploaded request; the holder's session is bound."""
    import io

    from tests.support.robot import solve_robot_check

    install_ca(app)
    cert_request = factory.request(product_code="ecpf-a3", agent=agent)
    call_done(db, cert_request, agent)
    token = _token(_to_approved(db, client, agent, verifier, cert_request))
    client.get(f"/emissao/{token}")
    client.post(f"/emissao/{token}/senha", data={"password": PASSWORD,
                                                "altcha": solve_robot_check(client)})
    csr, key = make_csr()
    assert client.post("/emissao/token", data={"csr": (io.BytesIO(csr), "t.p10")}
                       ).status_code == 302
    db.session.refresh(cert_request)
    return cert_request, key


@pytest.mark.one_database  # PDF signatures and keys; the database paths are covered by the other tests
def test_token_holder_signs_the_termo_with_the_token_software(db, app, client, factory, agent,
                                                              verifier):
    import io

    from app.pki import pades
    from app.services import ca as ca_service

    cert_request, key = _token_issued(db, app, client, factory, agent, verifier)
    issued = cert_request.certificates[-1]
    termo_pdf = client.get("/emissao/termo.pdf").data
    cert = x509.load_der_x509_certificate(issued.der)
    chain = [x509.load_der_x509_certificate(base64.b64decode(c)) for c in issued.chain_der]
    # Another PDF signed in its place: refused.
    from tests.support.documents import pdf

    altered = pades.sign_pdf(pdf(), key=key, cert=cert, chain=chain, field_name="Titular",
                             reason="x")
    refused = client.post("/emissao/termo",
                          data={"termo": (io.BytesIO(altered), "termo.pdf")})
    assert refused.status_code == 422 and "não é o termo enviado" in refused.get_data(as_text=True)
    # Signed by another key: refused.
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    wrong = client.post("/emissao/termo", data={"termo": (io.BytesIO(pades.sign_pdf(
        termo_pdf, key=other, cert=cert, chain=chain, field_name="Titular", reason="x")),
        "termo.pdf")})
    assert wrong.status_code == 422
    signed = pades.sign_pdf(termo_pdf, key=key, cert=cert, chain=chain, field_name="Titular",
                            reason="Assinatura do titular (token)")
    ok = client.post("/emissao/termo", data={"termo": (io.BytesIO(signed), "termo.pdf")})
    assert ok.status_code == 200, ok.get_data(as_text=True)
    db.session.refresh(cert_request)
    termo = cert_request.termos[-1]
    assert termo.state == "sealed"
    with app.app_context():
        roots = ca_service.trust_roots_der()
    final = client.get("/emissao/termo.pdf").data
    reports = pades.validate_pdf(final, trust_roots_der=roots)
    assert [r.field_name for r in reports][:3] == ["AgenteDeRegistro", "Titular",
                                                    "SeloDoEscritorio"]
    assert all(r.intact and r.valid for r in reports)


def test_token_holder_accepts_the_termo_with_the_password(db, app, client, factory, agent,
                                                          verifier):
    cert_request, _ = _token_issued(db, app, client, factory, agent, verifier)
    wrong = client.post("/emissao/termo", data={"accept": "1", "password": "Errada123"})
    assert wrong.status_code == 422 and "Senha incorreta" in wrong.get_data(as_text=True)
    db.session.refresh(cert_request)
    assert cert_request.termos[-1].state == "agent_signed"
    ok = client.post("/emissao/termo", data={"accept": "1", "password": PASSWORD})
    assert ok.status_code == 200 and "aceito com a senha" in ok.get_data(as_text=True)
    db.session.refresh(cert_request)
    termo = cert_request.termos[-1]
    assert termo.state == "sealed" and termo.holder_accepted_at is not None
    actions = [e.action for e in db.session.execute(select(AuditEvent).where(
        AuditEvent.request_id == cert_request.id)).scalars()]
    assert "termo.holder_accepted" in actions and "termo.sealed" in actions


@pytest.mark.one_database  # PDF signatures and keys; the database paths are covered by the other tests
def test_the_local_tsa_answers_rfc3161_over_http(app, client, tmp_path):
    """POST /tsa: openssl's own timestamp query gets a token that `openssl ts -verify` accepts
    against the built-in root; anything but a timestamp query is refused."""
    import subprocess

    from app.services import ca as ca_service

    install_ca(app)
    data = tmp_path / "data"
    data.write_bytes(b"termo de titularidade")
    query = subprocess.run(["openssl", "ts", "-query", "-data", str(data), "-sha256", "-cert"],
                           capture_output=True, check=True).stdout
    assert client.post("/tsa", data=query, content_type="text/plain").status_code == 415
    response = client.post("/tsa", data=query, content_type="application/timestamp-query")
    assert response.status_code == 200 and response.mimetype == "application/timestamp-reply"
    reply = tmp_path / "reply.tsr"
    reply.write_bytes(response.data)
    with app.app_context():
        ca = ca_service.builtin_ca()
    (tmp_path / "root.pem").write_bytes(ca.root_cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "issuing.pem").write_bytes(
        ca.issuing_cert.public_bytes(serialization.Encoding.PEM))
    verify = subprocess.run(["openssl", "ts", "-verify", "-data", str(data), "-in", str(reply),
                             "-CAfile", str(tmp_path / "root.pem"), "-untrusted",
                             str(tmp_path / "issuing.pem")], capture_output=True, text=True)
    assert "Verification: OK" in verify.stdout, verify.stdout + verify.stderr


def test_a_termo_that_failed_at_issuance_is_made_later_and_accepted(db, app, client, agent,
                                                                     verifier, done,
                                                                     monkeypatch):
    """The certificate reaches the browser even when the termo cannot be made then (the key
    would be lost otherwise); staff make it afterwards and the holder accepts it."""
    from app.services import termo as termo_service
    from tests.support.robot import solve_robot_check

    def broken(issued):
        raise RuntimeError("WeasyPrint fell over")

    monkeypatch.setattr(termo_service, "start_holder_signature", broken)
    token, payload, _ = _issue(db, client, agent, verifier, done)
    assert payload["termo"] is None and payload["certificate"]
    db.session.refresh(done)
    assert done.state == "issued" and done.termos == []
    monkeypatch.undo()
    _login(client, agent)
    client.post(f"/solicitacoes/{done.id}/termo/gerar")
    db.session.refresh(done)
    assert done.termos[-1].state == "agent_signed"
    client.post("/equipe/sair")
    client.get(f"/emissao/{token}")
    client.post(f"/emissao/{token}/senha", data={"password": PASSWORD,
                                                "altcha": solve_robot_check(client)})
    page = client.get("/emissao/certificado").get_data(as_text=True)
    assert "Não consigo assinar o PDF" in page
    client.post("/emissao/termo", data={"accept": "1", "password": PASSWORD})
    db.session.refresh(done)
    assert done.termos[-1].state == "sealed" and done.termos[-1].holder_accepted_at
