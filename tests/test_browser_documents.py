"""The document journey in Debian's Chromium (issue 3), against gunicorn, a real worker and a
real SMTP server.

The client, on a Pixel 7, opens the "Importe seus documentos" link of the email that reached
the SMTP server, types the protocol, passes "Não sou um robô", reads the instructions, adds a
front (JPEG) and a back (HEIC) through the file chooser that "Adicionar +" opens, watches the
progress bar and the thumbnails, replaces and removes pages, sees a refused file's message in
the right section, confirms in the "Você tem certeza?" dialog (with the keyboard too) and sees
the success page. The agent, on a desktop, reviews the pages and raises a pendência; its email
goes out through SMTP; the client follows its link, sends only what was asked (a PDF), and the
agent approves. Every client page passes axe-core. VIDEOAR_SCREENSHOTS=1 refreshes
docs/screenshots/2*.png.
"""
import re

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from app.models import CertificateRequest
from tests.conftest import STAFF_PASSWORD
from tests.support import documents as files
from tests.support.browser import assert_accessible, expected_response, screenshot
from tests.support.processes import fresh

pytestmark = pytest.mark.browser

IDENTITY = "DOCUMENTO OFICIAL DE PESSOA FÍSICA"
COMPANY = "DOCUMENTO DE CONSTITUIÇÃO DE EMPRESA"
# A slow phone connection (bytes per second) while a file goes up: the progress bar shows.
SLOW_UPLOAD = 96 * 1024


@pytest.fixture
def smtp_worker(start_worker, smtp_server, live_server):
    """The real worker, sending every email to the real SMTP server."""
    return start_worker(SMTP_HOST="127.0.0.1", SMTP_PORT=smtp_server.port,
                        PUBLIC_URL=live_server.url)


@pytest.fixture
def tmp_files(tmp_path):
    """The files a client picks, written to disk as the file chooser needs them."""
    def write(name, data):
        path = tmp_path / "picked" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        return path
    return write


def plain_text(message) -> str:
    return message.get_body(preferencelist=("plain",)).get_content()


def email_to(smtp_server, subject_start, count):
    """The message whose subject starts with `subject_start`, once `count` have arrived."""
    messages = smtp_server.wait_for(count, timeout=60)
    [message] = [m for m in messages if m["Subject"].startswith(subject_start)]
    return message


def link_in(message, live_server) -> str:
    url = re.search(r"http://\S+/documentos/[\w-]+", plain_text(message)).group(0)
    assert url.startswith(live_server.url + "/documentos/")
    return url


def section(page, title):
    """A document kind's section of the upload page (a region named by its heading)."""
    return page.get_by_role("region", name=re.compile(re.escape(title)))


def pick_file(page, opener, path):
    """Tap what should open the phone's file chooser ("Adicionar +", "Substituir") and pick
    `path` in it: fails if no chooser opened."""
    with page.expect_file_chooser() as chooser:
        opener.tap()
    assert not chooser.value.is_multiple()
    chooser.value.set_files(path)


def expect_thumbnail_loaded(img):
    expect(img).to_be_visible()
    expect(img).to_have_js_property("complete", True)
    expect(img).not_to_have_js_property("naturalWidth", 0)


def slow_uploads(page, on: bool):
    """Throttle the phone's upload speed (Chromium's network emulation)."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", {
        "offline": False, "latency": 40 if on else 0, "downloadThroughput": -1,
        "uploadThroughput": SLOW_UPLOAD if on else -1})
    return cdp


def enter_with_protocol(page, protocol):
    """The link's page: the protocol, "Não sou um robô", "Prosseguir"."""
    page.get_by_label("Informe o protocolo de sua solicitação").fill(protocol)
    page.get_by_role("checkbox", name="Não sou um robô").tap()
    expect(page.get_by_role("checkbox", name="Verificado: você não é um robô")).to_be_checked(
        timeout=60_000)
    page.get_by_role("button", name="Prosseguir").tap()


def login(page, email):
    page.goto("/equipe/entrar")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Senha").fill(STAFF_PASSWORD)
    page.get_by_role("button", name="Entrar").click()
    expect(page.get_by_role("heading", name="Fila de solicitações")).to_be_visible()


def confirm_sending(page, screenshot_name=None):
    """"Enviar para análise" → "Você tem certeza?" → "Continuar" → the success page."""
    page.get_by_role("link", name="Enviar para análise").tap()
    dialog = page.get_by_role("dialog", name="Você tem certeza?")
    expect(dialog).to_be_visible()
    if screenshot_name:
        screenshot(page, screenshot_name, full_page=False)  # what the phone's screen shows
    dialog.get_by_role("button", name="Continuar").tap()
    expect(page.get_by_role("heading", name="Seus documentos foram enviados com sucesso!")
           ).to_be_visible()


def test_client_sends_documents_from_a_phone_the_agent_raises_a_pendency_then_approves(
        app, live_server, smtp_server, smtp_worker, phone, desktop, factory, mailbox, db,
        tmp_files):
    app.config["PUBLIC_URL"] = live_server.url  # the invitation's link, made in this process
    agent = factory.staff(roles=("agent",), email="agente@ar-teste.example", name="Ana Agente")
    cert_request = factory.request(agent=agent)
    protocol = cert_request.protocol
    front = tmp_files("IMG_20260301_101500.jpg", files.jpeg(1600, 1200, text="FRENTE"))
    back = tmp_files("IMG_0042.HEIC", files.heic(1200, 900))
    other_front = tmp_files("frente-nova.jpg", files.jpeg(1600, 1200, (170, 200, 220),
                                                          text="FRENTE NOVA"))
    extra = tmp_files("captura.png", files.png(600, 400))
    renamed_exe = tmp_files("documento.jpg", b"MZ\x90\x00" + b"\x00" * 4000)
    cnh_pdf = tmp_files("CNH-Digital.pdf", files.pdf(pages=1))

    # The invitation arrives through SMTP; the client opens its link on the phone.
    invitation = email_to(smtp_server, "Importe seus documentos", 1)
    page = phone
    page.goto(link_in(invitation, live_server))
    expect(page.get_by_role("heading", name=re.compile("IMPORTAÇÃO DE DOCUMENTOS"))).to_be_visible()
    assert_accessible(page, "entry")
    screenshot(page, "20-client-doc-entry.png")
    enter_with_protocol(page, protocol)

    # "INSTRUÇÕES" of the one kind an e-CPF needs, then "Prosseguir".
    expect(page.get_by_role("heading", name="INSTRUÇÕES")).to_be_visible()
    expect(page.get_by_text("EM TODOS os casos, devem ser enviados a frente e o verso")
           ).to_be_visible()
    assert_accessible(page, "instructions")
    screenshot(page, "21-client-doc-instructions.png")
    page.get_by_role("link", name="Prosseguir").tap()

    identity = section(page, IDENTITY)
    expect(identity.get_by_role("heading")).to_have_text(f"{IDENTITY} (0)")
    assert_accessible(page, "upload page, empty")
    add = identity.get_by_text("Adicionar +")
    # The chooser offers camera, gallery and files on a phone: images and PDFs, no `capture`
    # (which would go straight to the camera).
    chooser_input = identity.locator(".add-form input[type=file]")
    assert chooser_input.get_attribute("capture") is None
    assert "image/jpeg" in chooser_input.get_attribute("accept")
    assert "application/pdf" in chooser_input.get_attribute("accept")

    # "Ver instruções" opens the manual's text in place.
    identity.get_by_text("Ver instruções").tap()
    expect(identity.get_by_text("Caso envie a CNH Digital, o QR Code deve ficar visível.")
           ).to_be_visible()
    identity.get_by_text("Ver instruções").tap()

    # The front, over a slow connection: the progress bar shows while it goes up.
    cdp = slow_uploads(page, True)
    pick_file(page, add, front)
    progress = identity.get_by_role("progressbar")
    expect(progress).to_be_visible()
    expect(progress).to_have_attribute("value", re.compile(r"^[1-9][0-9]*$"))
    first = identity.get_by_role("listitem").filter(has_text="Página 1")
    expect_thumbnail_loaded(first.get_by_role("img", name="Página 1 enviada"))
    expect(progress).to_be_hidden()
    cdp.send("Network.emulateNetworkConditions", {
        "offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
    expect(first).to_contain_text("IMG_20260301_101500.jpg")
    expect(identity.get_by_role("heading")).to_have_text(f"{IDENTITY} (1)")

    # A program renamed .jpg is refused, with the reason in the identity section.
    with expected_response(page, 422, r"/documentos/envio/identity/paginas$"):
        pick_file(page, add, renamed_exe)
    expect(identity.get_by_role("alert")).to_have_text(
        "documento.jpg: O arquivo não é uma imagem ou PDF válido. Envie uma foto (JPEG, PNG ou "
        "HEIC) ou um PDF.")
    expect(identity.get_by_role("heading")).to_have_text(f"{IDENTITY} (1)")

    # The back, an iPhone's HEIC; the error goes away with the next upload.
    pick_file(page, add, back)
    second = identity.get_by_role("listitem").filter(has_text="Página 2")
    expect_thumbnail_loaded(second.get_by_role("img", name="Página 2 enviada"))
    expect(identity.get_by_role("alert")).to_have_count(0)
    expect(identity.get_by_role("heading")).to_have_text(f"{IDENTITY} (2)")

    # "Substituir" the front: the same place, a new file.
    pick_file(page, first.get_by_text("Substituir"), other_front)
    expect(first).to_contain_text("frente-nova.jpg")
    expect_thumbnail_loaded(first.get_by_role("img", name="Página 1 enviada"))
    # A third page by mistake (the chooser opens from the keyboard too), then "Remover".
    chooser_input.focus()
    expect(add).to_have_css("outline-style", "solid")  # the focus shows on "Adicionar +"
    with page.expect_file_chooser() as chooser:
        page.keyboard.press("Space")
    chooser.value.set_files(extra)
    third = identity.get_by_role("listitem").filter(has_text="Página 3")
    expect_thumbnail_loaded(third.get_by_role("img"))
    expect(identity.get_by_role("heading")).to_have_text(f"{IDENTITY} (3)")
    third.get_by_role("button", name="Remover").tap()
    expect(third).to_have_count(0)
    expect(identity.get_by_role("heading")).to_have_text(f"{IDENTITY} (2)")
    expect(identity.get_by_role("listitem")).to_have_count(2)
    assert_accessible(page, "upload page with pages")
    screenshot(page, "22-client-doc-upload.png")

    # "Enviar para análise" with the keyboard: the dialog opens with the focus inside it,
    # Escape closes it and gives the focus back; "Cancela" closes it too.
    send = page.get_by_role("link", name="Enviar para análise")
    send.focus()
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name="Você tem certeza?")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_text("Não será mais possível enviar nenhum documento para esta "
                              "solicitação até que a conferência seja realizada.")).to_be_visible()
    expect(dialog.get_by_role("link", name="Cancela")).to_be_focused()
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(send).to_be_focused()
    page.keyboard.press("Enter")
    expect(dialog).to_be_visible()
    assert_accessible(page, "confirmation dialog")
    page.keyboard.press("Enter")  # on "Cancela"
    expect(dialog).to_be_hidden()
    assert fresh(db, CertificateRequest, cert_request.id).state == "documents_pending"

    confirm_sending(page, "23-client-doc-confirm.png")
    expect(page.get_by_text("em até 2 dias úteis")).to_be_visible()
    assert_accessible(page, "done")
    screenshot(page, "24-client-doc-done.png")
    assert fresh(db, CertificateRequest, cert_request.id).state == "documents_submitted"

    # The agent: the queue, the request, "Analisar documentos".
    login(desktop, agent.email)
    desktop.get_by_role("link", name=protocol).click()
    desktop.get_by_role("link", name="Analisar documentos").click()
    expect(desktop.get_by_role("heading", name="Análise de documentos")).to_be_visible()
    for n in (1, 2):
        expect_thumbnail_loaded(desktop.get_by_role("img", name=f"{IDENTITY}, página {n}"))
    expect(desktop.locator("[data-viewer]").nth(1)).to_contain_text("IMG_0042.HEIC")
    viewer = desktop.locator("[data-viewer]").first
    viewer.get_by_role("button", name="Girar 90 graus").click()
    expect(viewer.get_by_role("img")).to_have_attribute("style", re.compile(r"rotate\(90deg\)"))
    viewer.get_by_role("button", name="Ampliar").click()
    expect(viewer.get_by_role("img")).to_have_attribute("style", re.compile(r"scale\(1\.5\)"))
    viewer.get_by_role("button", name="Girar 90 graus").click()
    viewer.get_by_role("button", name="Girar 90 graus").click()
    viewer.get_by_role("button", name="Girar 90 graus").click()
    viewer.get_by_role("button", name="Reduzir").click()
    kind = desktop.locator(".review-kind")
    kind.get_by_text("Registrar pendência").click()
    kind.get_by_label("Motivo").select_option(label="documento ilegível")
    kind.get_by_label("Explicação ao cliente (opcional)").fill("foto da frente tremida")
    screenshot(desktop, "26-agent-review.png")
    kind.get_by_role("button", name="Enviar pendência ao cliente").click()
    expect(desktop.get_by_text("Pendência registrada. O cliente recebeu um e-mail com o motivo.")
           ).to_be_visible()

    # The pendência's email goes out through SMTP; the client follows its link.
    pendency = email_to(smtp_server, "Pendência nos seus documentos", 2)
    body = plain_text(pendency)
    assert f"Seu protocolo é: {protocol}" in body
    assert "O motivo da pendência é: documento ilegível — foto da frente tremida" in body
    page.goto(link_in(pendency, live_server))
    # Still this phone's session: straight to the instructions.
    expect(page.get_by_role("heading", name="INSTRUÇÕES")).to_be_visible()
    page.get_by_role("link", name="Prosseguir").tap()
    identity = section(page, IDENTITY)
    expect(identity.get_by_text("Pendência: documento ilegível — foto da frente tremida. Envie "
                                "este documento novamente.")).to_be_visible()
    expect(identity.get_by_role("heading")).to_have_text(f"{IDENTITY} (0)")
    assert_accessible(page, "upload page with a pendency")
    screenshot(page, "25-client-doc-pendency.png")

    # Only what was asked: the CNH Digital as a PDF (one page is enough for a PDF).
    pick_file(page, identity.get_by_text("Adicionar +"), cnh_pdf)
    expect(identity.get_by_role("listitem").filter(has_text="CNH-Digital.pdf")).to_contain_text(
        "1 página de PDF")
    expect_thumbnail_loaded(identity.get_by_role("img", name="Página 1 enviada"))
    confirm_sending(page)
    assert_accessible(page, "done again")
    assert fresh(db, CertificateRequest, cert_request.id).state == "documents_submitted"

    # The agent sees the resubmission and approves.
    desktop.reload()
    expect(desktop.get_by_text("reenvio nº 1")).to_be_visible()
    expect(desktop.get_by_role("heading", name="Envio 2")).to_be_visible()
    desktop.get_by_role("button", name="Aprovar").click()
    expect(desktop.get_by_text(f"“{IDENTITY}” aprovado.")).to_be_visible()
    expect(desktop.locator(".lead .state")).to_have_text("Documentos aprovados")
    assert fresh(db, CertificateRequest, cert_request.id).state == "documents_approved"


def test_company_documents_a_pendency_reopens_only_the_company_kind(
        app, live_server, smtp_server, smtp_worker, phone, desktop, factory, mailbox, db,
        tmp_files):
    """e-CNPJ: two kinds; a refused file's message in its own section; the pendência on the
    company's documents leaves the approved ID alone."""
    from app.services import people

    app.config["PUBLIC_URL"] = live_server.url
    agent = factory.staff(roles=("agent",), email="agente@ar-teste.example", name="Ana Agente")
    person = factory.person()
    company = people.find_or_register_company("11222333000181", "Padaria Exemplo Ltda",
                                              "Campinas", "SP", person)
    db.session.commit()
    cert_request = factory.request(person=person, product_code="ecnpj-a3", company=company,
                                   agent=agent)
    cnh = tmp_files("cnh-digital.pdf", files.pdf(pages=1))
    html_as_pdf = tmp_files("contrato.pdf",
                            b"<!doctype html><html><body>%PDF-1.4 falso</body></html>")
    articles = tmp_files("contrato-social.pdf", files.pdf(pages=3))
    amendment = tmp_files("alteracao-contratual.pdf", files.pdf(pages=2))

    page = phone
    page.goto(link_in(email_to(smtp_server, "Importe seus documentos", 1), live_server))
    expect(page.get_by_text("Padaria Exemplo Ltda")).to_have_count(0)  # not before the protocol
    enter_with_protocol(page, cert_request.protocol)
    expect(page.get_by_role("heading", name=IDENTITY)).to_be_visible()
    expect(page.get_by_text("Passo 1 de 2")).to_be_visible()
    page.get_by_role("link", name="Próximo").tap()
    expect(page.get_by_role("heading", name=COMPANY)).to_be_visible()
    expect(page.get_by_text("o rodapé deverá ficar visível")).to_be_visible()
    assert_accessible(page, "company instructions")
    page.get_by_role("link", name="Prosseguir").tap()
    expect(page.get_by_text("Titular:")).to_be_visible()
    expect(page.get_by_text("Padaria Exemplo Ltda")).to_be_visible()

    identity, company_docs = section(page, IDENTITY), section(page, COMPANY)
    pick_file(page, identity.get_by_text("Adicionar +"), cnh)
    expect_thumbnail_loaded(identity.get_by_role("img", name="Página 1 enviada"))
    with expected_response(page, 422, r"/documentos/envio/company/paginas$"):
        pick_file(page, company_docs.get_by_text("Adicionar +"), html_as_pdf)
    expect(company_docs.get_by_role("alert")).to_have_text(
        "contrato.pdf: O PDF está corrompido ou incompleto. Gere o PDF novamente e envie outra vez.")
    expect(identity.get_by_role("alert")).to_have_count(0)
    pick_file(page, company_docs.get_by_text("Adicionar +"), articles)
    expect(company_docs.get_by_role("listitem")).to_contain_text("3 páginas de PDF")
    expect(company_docs.get_by_role("heading")).to_have_text(f"{COMPANY} (1)")
    assert_accessible(page, "e-CNPJ upload page")
    confirm_sending(page)

    login(desktop, agent.email)
    desktop.goto(f"/solicitacoes/{cert_request.id}/documentos/")
    kinds = desktop.locator(".review-kind")
    expect(kinds.nth(1).get_by_role("img")).to_have_count(3)  # one per page of the PDF
    kinds.nth(0).get_by_role("button", name="Aprovar").click()
    expect(desktop.get_by_text(f"“{IDENTITY}” aprovado.")).to_be_visible()
    kinds.nth(1).get_by_text("Registrar pendência").click()
    kinds.nth(1).get_by_label("Motivo").select_option(label="ato constitutivo")
    kinds.nth(1).get_by_role("button", name="Enviar pendência ao cliente").click()
    expect(desktop.get_by_text("Pendência registrada.", exact=False)).to_be_visible()

    pendency = email_to(smtp_server, "Pendência nos seus documentos", 2)
    assert "O motivo da pendência é: ato constitutivo" in plain_text(pendency)
    page.goto(link_in(pendency, live_server))
    page.get_by_role("link", name="Próximo").tap()
    page.get_by_role("link", name="Prosseguir").tap()
    identity, company_docs = section(page, IDENTITY), section(page, COMPANY)
    expect(identity).to_contain_text("Documento já enviado. Não é preciso enviar de novo.")
    expect(identity.get_by_text("Adicionar +")).to_have_count(0)
    expect(company_docs).to_contain_text("Pendência: ato constitutivo.")
    pick_file(page, company_docs.get_by_text("Adicionar +"), amendment)
    expect(company_docs.get_by_role("listitem")).to_contain_text("2 páginas de PDF")
    confirm_sending(page)

    desktop.reload()
    kinds.nth(1).get_by_role("button", name="Aprovar").click()
    expect(desktop.locator(".lead .state")).to_have_text("Documentos aprovados")
    assert fresh(db, CertificateRequest, cert_request.id).state == "documents_approved"
