"""The foundation as people use it, in Debian's Chromium against gunicorn and a real worker.

The agent's side (desktop): log in, register a person, open a request, copy its link, and
find the "Importe seus documentos" email in the outbox. The client's side (a Pixel 7): ask for
a certificate on the public site through the real proof-of-work check, and open the link.
Client pages are checked with axe-core. VIDEOAR_SCREENSHOTS=1 refreshes docs/screenshots/.
"""
import re

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from app.models import CertificateRequest, EmailMessage
from tests.conftest import STAFF_PASSWORD
from tests.support.browser import assert_accessible, screenshot
from tests.support.processes import wait_until

pytestmark = pytest.mark.browser


def test_admin_registers_a_person_opens_a_request_and_the_email_reaches_the_outbox(
        live_server, start_worker, desktop, factory, mailbox, db):
    page = desktop
    factory.staff(roles=("admin", "agent", "verifier"), email="admin@ar-teste.example",
                  name="Administrador")
    start_worker(PUBLIC_URL=live_server.url)  # no SMTP_HOST: messages go to the outbox

    page.goto("/equipe/entrar")
    expect(page.get_by_role("heading", name="Acesso da equipe")).to_be_visible()
    screenshot(page, "01-login.png")
    page.get_by_label("E-mail").fill("admin@ar-teste.example")
    page.get_by_label("Senha").fill(STAFF_PASSWORD)
    page.get_by_role("button", name="Entrar").click()
    expect(page.get_by_role("heading", name="Fila de solicitações")).to_be_visible()

    # Agent manual steps 1–3: search by CPF, "Cadastrar pessoa".
    menu = page.get_by_role("navigation", name="Menu principal")
    menu.get_by_role("link", name="Pessoas").click()
    page.get_by_label("CPF").fill("529.982.247-25")
    page.get_by_role("button", name="Consultar").click()
    notice = page.get_by_role("status").filter(has_text="Nenhuma pessoa cadastrada")
    expect(notice).to_contain_text("529.982.247-25")
    notice.get_by_role("link", name="Cadastrar pessoa").click()
    expect(page.get_by_role("heading", name="Cadastrar pessoa")).to_be_visible()
    expect(page.get_by_label("CPF")).to_have_value("52998224725")
    page.get_by_label("Nome completo").fill("Maria da Silva Souza")
    page.get_by_label("Data de nascimento").fill("1985-03-09")
    page.get_by_label("E-mail").fill("maria@cliente.example")
    page.get_by_label("Celular").fill("(11) 98765-4321")
    page.get_by_label("RG", exact=True).fill("123456789")
    page.get_by_label("Órgão emissor").fill("SSP")
    page.get_by_label("UF do RG").select_option("SP")
    page.get_by_role("button", name="Salvar").click()
    expect(page.get_by_text("Pessoa cadastrada.")).to_be_visible()
    expect(page.get_by_role("heading", name="Maria da Silva Souza")).to_be_visible()
    screenshot(page, "03-person.png")

    # Steps 4–7: "Certificação" → "Emitir certificado remotamente" → confirm → "Iniciar".
    page.get_by_role("link", name="Certificação").click()
    page.get_by_role("link", name="Emitir certificado remotamente").click()
    page.get_by_label("Produto").select_option(label="Certificado Digital e-CPF A1")
    page.get_by_label("Confirmo que os dados da pessoa estão corretos").check()
    page.get_by_role("button", name="Iniciar").click()
    expect(page.get_by_text(re.compile(r"Solicitação \d{10} criada"))).to_be_visible()
    cert_request = db.session.execute(select(CertificateRequest)).scalar_one()
    expect(page.get_by_role("heading", name=f"Protocolo {cert_request.protocol}")).to_be_visible()

    link_field = page.get_by_role("textbox", name="Link de importação de documentos")
    link_url = link_field.input_value()
    assert link_url.startswith(f"{live_server.url}/documentos/")
    copy = page.get_by_role("button", name="Copiar link de importação")
    copy.click()
    expect(page.get_by_role("button", name="Link copiado")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == link_url
    screenshot(page, "04-request-link.png")

    # The worker delivers to the outbox; the admin reads it under Administração → E-mails.
    wait_until(lambda: _email_status(db) == "sent", timeout=60,
               message="the worker marking the invitation sent")
    menu.get_by_role("link", name="Administração").click()
    page.get_by_role("navigation", name="Administração").get_by_role("link", name="E-mails").click()
    subject = f"Importe seus documentos — protocolo {cert_request.protocol}"
    row = page.get_by_role("row").filter(has_text=subject)
    expect(row).to_contain_text("maria@cliente.example")
    expect(row).to_contain_text("enviado (caixa local)")
    row.get_by_role("link", name=subject).click()
    expect(page.get_by_role("heading", name=subject)).to_be_visible()
    email = page.frame_locator("iframe.email-frame")
    expect(email.get_by_text("Importe seus documentos").first).to_be_visible()
    expect(email.locator(f'a[href="{link_url}"]')).to_be_visible()
    screenshot(page, "05-email.png")

    page.get_by_role("link", name="Fila", exact=True).click()
    expect(page.get_by_role("link", name=cert_request.protocol)).to_be_visible()
    screenshot(page, "02-dashboard.png")


def _email_status(db):
    db.session.rollback()
    message = db.session.execute(select(EmailMessage)).scalar_one_or_none()
    return message.status if message else None


def test_client_asks_for_a_certificate_on_a_phone_and_opens_the_link(
        live_server, phone, factory, mailbox, db):
    page = phone
    page.goto("/")
    expect(page.get_by_role("heading", name="Certificado digital por videoconferência")
           ).to_be_visible()
    assert_accessible(page, "home")
    screenshot(page, "10-client-home.png")

    page.get_by_role("link", name="Solicitar certificado").tap()
    expect(page.get_by_role("heading", name="Solicitar certificado digital")).to_be_visible()
    checkbox = page.get_by_role("checkbox", name="Não sou um robô")
    expect(checkbox).to_be_visible()
    # The company's fields appear only for an e-CNPJ.
    company = page.get_by_role("group", name="Empresa (somente e-CNPJ)")
    expect(company).to_be_hidden()
    product = page.get_by_label("Certificado", exact=True)
    product.select_option(label="Certificado Digital e-CNPJ A1")
    expect(company).to_be_visible()
    product.select_option(label="Certificado Digital e-CPF A1")
    expect(company).to_be_hidden()
    assert_accessible(page, "request form")

    page.get_by_label("CPF").fill("390.533.447-05")
    page.get_by_label("Nome completo").fill("João Pedro Alves")
    page.get_by_label("E-mail").fill("joao@cliente.example")
    page.get_by_label("Celular").fill("(21) 99876-5432")
    checkbox.tap()
    expect(page.get_by_role("checkbox", name="Verificado: você não é um robô")).to_be_checked(
        timeout=60_000)
    # Screen readers hear the result through the status region.
    expect(page.locator("[data-robot-check-status]")).to_have_text(
        "Verificado: você não é um robô")
    payload = page.locator('input[type="hidden"][name="altcha"]').input_value()
    assert len(payload) > 100
    assert_accessible(page, "request form, verified")
    screenshot(page, "11-client-request-form.png")

    page.get_by_role("button", name="Solicitar certificado").tap()
    expect(page.get_by_role("heading", name="Solicitação recebida")).to_be_visible()
    cert_request = db.session.execute(select(CertificateRequest)).scalar_one()
    assert cert_request.origin == "public" and cert_request.holder.cpf == "39053344705"
    expect(page.get_by_text(cert_request.protocol, exact=True)).to_be_visible()
    expect(page.get_by_text("Enviamos o e-mail “Importe seus documentos” para "
                            "joao@cliente.example.")).to_be_visible()
    assert_accessible(page, "request done")
    screenshot(page, "12-client-request-done.png")

    # The client opens the "Importe seus documentos" link from the email, on the phone.
    [message] = mailbox.messages()
    link_url = re.search(r"http://\S+/documentos/\S+", message.body_text).group(0)
    assert link_url.startswith(live_server.url)
    page.goto(link_url)
    expect(page.get_by_role("heading", name=re.compile("IMPORTAÇÃO DE DOCUMENTOS"))).to_be_visible()
    assert_accessible(page, "link landing")
    screenshot(page, "13-client-link.png")

    response = page.goto("/documentos/" + "x" * 43)
    assert response.status == 404
    expect(page.get_by_role("alert")).to_have_text(
        "Este link não é válido. Confira se copiou o endereço completo do e-mail.")
    assert_accessible(page, "link error")


def test_robot_check_works_with_the_keyboard_alone(live_server, desktop):
    page = desktop
    page.goto("/solicitar")
    page.get_by_label("Celular").fill("(21) 99876-5432")
    # Tab from the last field (the hidden company fields are skipped) reaches the check.
    page.get_by_label("Celular").press("Tab")
    checkbox = page.get_by_role("checkbox", name="Não sou um robô")
    expect(checkbox).to_be_focused()
    page.keyboard.press("Space")
    verified = page.get_by_role("checkbox", name="Verificado: você não é um robô")
    expect(verified).to_be_checked(timeout=60_000)
    expect(verified).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Solicitar certificado")).to_be_focused()


def test_sending_the_form_unticked_runs_the_check_first(live_server, desktop, mailbox, db):
    page = desktop
    page.goto("/solicitar")
    page.get_by_label("Certificado", exact=True).select_option(label="Certificado Digital e-CPF A3")
    page.get_by_label("CPF").fill("111.444.777-35")
    page.get_by_label("Nome completo").fill("Ana Beatriz Lima")
    page.get_by_label("E-mail").fill("ana@cliente.example")
    page.get_by_label("Celular").fill("(11) 91234-5678")
    page.get_by_role("button", name="Solicitar certificado").click()
    # The widget solves the challenge, then sends the form by itself.
    expect(page.get_by_role("heading", name="Solicitação recebida")).to_be_visible(timeout=60_000)
    cert_request = db.session.execute(select(CertificateRequest)).scalar_one()
    assert cert_request.holder.email == "ana@cliente.example"
    expect(page.get_by_text(cert_request.protocol, exact=True)).to_be_visible()
