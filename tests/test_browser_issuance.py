"""From "conference_done" to "issued" for real: the call's agent is refused as verifier, another
verifier approves in the browser, the invitation arrives over SMTP, the holder issues on a phone
(key pair, PKCS#10 and PKCS#12 in Chromium), the termo carries three signatures and a timestamp,
the agent's page turns to "emitido" by itself, and a revocation lands in the CRL.
VIDEOAR_SCREENSHOTS=1 refreshes docs/screenshots/41-*.png to 44-*.png."""
import re
import subprocess
from datetime import date, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from playwright.sync_api import expect

from app.services import links
from tests.conftest import STAFF_PASSWORD
from tests.support.browser import assert_accessible, screenshot
from tests.support.dossier import PASSWORD, call_done, install_ca
from tests.test_browser_documents import login

pytestmark = [pytest.mark.browser, pytest.mark.emails_ok]

OID = "2.16.76.1.3."


def _other_names(cert):
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    from app.pki.profiles import read_der_string

    return [(o.type_id.dotted_string, read_der_string(o.value))
            for o in san.get_values_for_type(x509.OtherName)]


def _nss_db(tmp_path, root_der):
    """An NSS database trusting the built-in root, for poppler's pdfsig."""
    nss = tmp_path / "nss"
    nss.mkdir()
    subprocess.run(["certutil", "-N", "-d", f"sql:{nss}", "--empty-password"], check=True)
    root = tmp_path / "root.der"
    root.write_bytes(root_der)
    subprocess.run(["certutil", "-A", "-d", f"sql:{nss}", "-n", "videoar-root", "-t", "CT,C,C",
                    "-i", str(root)], check=True)
    return nss


def test_from_second_check_to_issued_termo_and_revocation(
        app, db, client, factory, live_server, start_worker, smtp_server, desktop, phone,
        tmp_path):
    app.config["PUBLIC_URL"] = live_server.url
    install_ca(app)
    start_worker(SMTP_HOST="127.0.0.1", SMTP_PORT=smtp_server.port, PUBLIC_URL=live_server.url)
    # The agent of the call also holds the verifier role: still refused on this request.
    agent = factory.staff(roles=("agent", "verifier"), email="agente@ar-teste.example",
                          name="Ana Agente")
    verifier = factory.staff(roles=("verifier",), email="veri@ar-teste.example",
                             name="Vera Verificadora")
    person = factory.person(name="José da Conceição Araújo", birth_date=date(1985, 3, 9),
                            email="jose@cliente.example")
    cert_request = factory.request(person=person, agent=agent)
    cert_request.product.policy_oid = "2.16.76.1.2.1.77"  # the admin's data reaches the certificate
    call_done(db, cert_request, agent)

    client.post("/equipe/entrar", data={"email": agent.email, "password": STAFF_PASSWORD})
    assert client.post(f"/solicitacoes/{cert_request.id}/continuar",
                       data={"confirm": "1"}).status_code == 302
    refused = client.post(f"/solicitacoes/{cert_request.id}/segunda-conferencia/aprovar",
                          follow_redirects=True)
    assert "não pode fazer a segunda conferência" in refused.get_data(as_text=True)

    # The verifier's dossier page: face photo, recording, consent, audit trail.
    page = desktop
    login(page, verifier.email)
    page.goto(f"/solicitacoes/{cert_request.id}/dossie")
    expect(page.get_by_role("heading", name="Segunda conferência")).to_be_visible()
    face = page.get_by_role("img", name="Foto do rosto capturada na videoconferência")
    expect(face).to_be_visible()
    page.wait_for_function("() => [...document.images].every(i => i.complete)")
    assert face.evaluate("i => i.naturalWidth") == 1280
    expect(page.get_by_text("Estou ciente do processo de identificação")).to_be_visible()
    assert_accessible(page, "dossier")
    screenshot(page, "41-dossier-second-check.png")
    page.get_by_role("button", name="Aprovar dossiê").click()
    expect(page.get_by_text("Dossiê aprovado")).to_be_visible()

    # The agent's request page, open while the holder issues: it turns to "emitido" by itself.
    agent_page = page.context.browser.new_context(base_url=live_server.url).new_page()
    login(agent_page, agent.email)
    agent_page.goto(f"/solicitacoes/{cert_request.id}")
    expect(agent_page.get_by_text("Aguardando o titular emitir")).to_be_visible()

    # The invitation, over SMTP.
    smtp_server.wait_for(2)  # the documents invitation of the request, then this one
    invitation = next(m for m in smtp_server.messages if "Emita seu certificado" in m["Subject"])
    body = invitation.get_body(preferencelist=("plain",)).get_content()
    found = re.search(r"http://\S+/emissao/\S+", body)
    assert found, body
    link_url = found.group(0)
    assert link_url == links.url_for_link(links.current_link(cert_request, "issuance"))
    # … and the SMS, through the worker into the local outbox (no gateway reachable here).
    from app.services.sms import OutboxSmsGateway
    from tests.support.processes import wait_until

    outbox = OutboxSmsGateway(app.config["INSTANCE_DIR"] / "sms-outbox")
    wait_until(lambda: outbox.messages(), timeout=30, message="the invitation SMS")
    assert link_url in outbox.messages()[0]["text"]

    holder = phone
    holder.goto(link_url)
    expect(holder.get_by_role("heading", name="EMISSÃO DO CERTIFICADO DIGITAL")).to_be_visible()
    expect(holder.get_by_text("HOMOLOGAÇÃO")).to_be_visible()
    assert_accessible(holder, "issuance page")
    screenshot(holder, "42-issuance-password.png")
    holder.get_by_label("Senha de revogação").fill(PASSWORD)
    holder.get_by_role("button", name="Emitir certificado").tap()
    expect(holder.get_by_role("heading", name="Certificado emitido")).to_be_visible(timeout=60_000)
    expect(holder.get_by_role("link", name="Baixar termo de titularidade assinado (PDF)")
           ).to_be_visible(timeout=60_000)
    screenshot(holder, "43-issuance-done.png")
    with holder.expect_download() as info:
        holder.get_by_role("button", name="Baixar certificado (.p12)").tap()
    p12_path = tmp_path / "certificado.p12"
    info.value.save_as(p12_path)
    holder.get_by_label("Salvei o arquivo do certificado em lugar seguro.").check()
    holder.get_by_role("button", name="Concluir").tap()
    expect(holder.get_by_text("Pronto. Para instalar")).to_be_visible()

    serial_shown = agent_page.locator("#certificate-serial")
    expect(serial_shown).to_be_visible(timeout=15_000)
    # The poll saw the state change and reloaded the page: its badge and history say so too.
    expect(agent_page.locator(".lead .state")).to_have_text("Emitido")
    expect(agent_page.get_by_text("certificate.issue")).to_be_visible()
    screenshot(agent_page, "44-request-issued.png")
    serial_text = serial_shown.inner_text().strip()
    agent_page.context.close()

    # The PKCS#12 opens with the revocation password and holds the key and the chain.
    key, cert, chain = pkcs12.load_key_and_certificates(p12_path.read_bytes(), PASSWORD.encode())
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    from app.services import ca as ca_service

    with app.app_context():
        ca = ca_service.builtin_ca()
    root = ca.root_cert
    assert [c.subject for c in chain] == [ca.issuing_cert.subject, root.subject]
    cert.verify_directly_issued_by(ca.issuing_cert)
    ca.issuing_cert.verify_directly_issued_by(root)
    db.session.refresh(cert_request)
    issued = cert_request.certificates[-1]
    assert format(cert.serial_number, "x") == issued.serial == serial_text
    # The subject and the otherNames, byte for byte, for a person with every field filled.
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == \
        "JOSE DA CONCEICAO ARAUJO:52998224725"
    ous = [a.value for a in cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATIONAL_UNIT_NAME)]
    assert ous[1:] == ["11222333000181", "videoconferencia"]
    assert _other_names(cert) == [
        (OID + "1", "09031985" "52998224725" "12345678901" "000000123456789" "SSPSP"),
        (OID + "6", "123456789012"),
        (OID + "5", "123456789012" "123" "4567" "SAOPAULOSP"),
    ]
    policies = cert.extensions.get_extension_for_class(x509.CertificatePolicies).value
    assert policies[0].policy_identifier.dotted_string == "2.16.76.1.2.1.77"
    crl_dp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert crl_dp[0].full_name[0].value.startswith(live_server.url + "/ac/")

    # The termo: agent, holder and office seal, with a timestamp, valid against the root.
    from app.pki import pades

    client.post("/equipe/entrar", data={"email": agent.email, "password": STAFF_PASSWORD})
    termo_pdf = client.get(f"/solicitacoes/{cert_request.id}/termo.pdf").data
    root_der = root.public_bytes(serialization.Encoding.DER)
    reports = pades.validate_pdf(termo_pdf, trust_roots_der=[root_der])
    assert [(r.field_name, r.kind) for r in reports] == [
        ("AgenteDeRegistro", "signature"), ("Titular", "signature"),
        ("SeloDoEscritorio", "signature"), ("CarimboDoTempo", "doc_timestamp")]
    assert all(r.intact and r.valid and r.trusted for r in reports), reports
    assert reports[0].signer_cn == "Ana Agente"
    assert reports[1].signer_cn == "JOSE DA CONCEICAO ARAUJO:52998224725"
    assert all(r.timestamp_valid for r in reports), reports
    assert reports[2].validation_data_embedded and reports[2].dss_present
    termo_file = tmp_path / "termo.pdf"
    termo_file.write_bytes(termo_pdf)
    nss = _nss_db(tmp_path, root_der)
    pdfsig = subprocess.run(["pdfsig", "-nssdir", f"sql:{nss}", str(termo_file)],
                            capture_output=True, text=True)
    assert pdfsig.stdout.count("Signature is Valid") == 3, pdfsig.stdout
    assert pdfsig.stdout.count("Certificate is Trusted") == 3, pdfsig.stdout
    subprocess.run(["pdftoppm", "-png", "-r", "60", "-f", "1", "-l", "1", str(termo_file),
                    str(tmp_path / "termo")], check=True)

    # Revocation by staff; the fresh CRL from the live server names the serial.
    client.post(f"/solicitacoes/{cert_request.id}/certificado/revogar",
                data={"reason": "key_compromise", "note": "Titular relatou perda do celular"})
    db.session.refresh(cert_request)
    assert cert_request.state == "revoked"
    import urllib.request

    with urllib.request.urlopen(crl_dp[0].full_name[0].value) as response:
        crl = x509.load_der_x509_crl(response.read())
    assert crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None
    assert crl.is_signature_valid(ca.issuing_cert.public_key())

    # The sealed termo still validates offline after the revocation, and past the expiry.
    # (At a moment past the expiry the embedded CRLs are stale; current ones are passed in, as
    # an archive's verifier would fetch them: docs/issuance.md.)
    crl_der = crl.public_bytes(serialization.Encoding.DER)
    with app.app_context():
        root_crl = ca.root_crl(crl_number=2, this_update=issued.not_after + timedelta(days=29),
                               next_update=issued.not_after + timedelta(days=60))
        late_crl = ca.build_crl([(cert.serial_number, cert_request.certificates[-1].revoked_at,
                                  "key_compromise")], crl_number=99,
                                this_update=issued.not_after + timedelta(days=29),
                                next_update=issued.not_after + timedelta(days=60))
    after = pades.validate_pdf(termo_pdf, trust_roots_der=[root_der], crls_der=[crl_der])
    assert all(r.intact and r.valid and r.trusted for r in after), after
    late = pades.validate_pdf(termo_pdf, trust_roots_der=[root_der],
                              crls_der=[late_crl, root_crl],
                              moment=issued.not_after + timedelta(days=30))
    assert all(r.intact and r.valid and r.trusted and r.timestamp_valid for r in late), late
