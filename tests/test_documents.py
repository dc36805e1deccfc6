"""The document journey on the server: the client's link, uploads, sending, review,
pendência and approval (issue 3)."""
import io
import re

import pytest
from sqlalchemy import func, select

from app.models import AuditEvent, CertificateRequest
from app.models.documents import DocumentPage, RequestDocument, StoredFile
from app.services import links
from app.services.storage import get_storage
from tests.support import documents as files


def solve(client):
    """A real proof of work for the robot check, solved like the browser does."""
    from tests.support.robot import solve_robot_check

    return solve_robot_check(client)


def enter(client, cert_request, protocol=None):
    token = links.token_for(links.current_link(cert_request, "documents"))
    return client.post(f"/documentos/{token}", data={
        "protocol": protocol or cert_request.protocol, "altcha": solve(client)})


def upload(client, kind, data, name="foto.jpg", replace=None, htmx=True):
    form = {"file": (io.BytesIO(data), name)}
    if replace:
        form["replace"] = str(replace)
    headers = {"HX-Request": "true"} if htmx else {}
    return client.post(f"/documentos/envio/{kind}/paginas", data=form,
                       content_type="multipart/form-data", headers=headers)


@pytest.fixture
def pending(factory, mailbox):
    return factory.request()


def test_entry_needs_the_protocol_and_the_robot_check(client, pending, db):
    token = links.token_for(links.current_link(pending, "documents"))
    page = client.get(f"/documentos/{token}")
    assert page.status_code == 200
    assert "Informe o protocolo de sua solicitação" in page.text and "Não sou um robô" in page.text
    response = client.post(f"/documentos/{token}", data={"protocol": pending.protocol})
    assert response.status_code == 422 and "robô" in response.text
    response = enter(client, pending, protocol="1234567890")
    assert response.status_code == 422
    assert "Protocolo" in response.text
    assert client.get("/documentos/envio").status_code == 401
    response = enter(client, pending)
    assert response.status_code == 302 and response.location.endswith("/documentos/instrucoes/")
    assert "DOCUMENTO OFICIAL DE PESSOA FÍSICA" in client.get(response.location).text
    assert client.get("/documentos/envio").status_code == 200


def test_too_many_wrong_protocols(app, client, pending):
    for _ in range(app.config["PROTOCOL_MAX_TRIES"]):
        enter(client, pending, protocol="1111111111")
    response = enter(client, pending)
    assert response.status_code == 422
    assert "Muitas tentativas com o protocolo errado" in response.text


def test_another_requests_token_or_protocol_opens_nothing(client, factory, mailbox):
    first = factory.request()
    second = factory.request(person=factory.person(cpf="11144477735", email="b@cliente.example"))
    # A valid token with the other request's protocol.
    response = enter(client, first, protocol=second.protocol)
    assert response.status_code == 422
    assert client.get("/documentos/envio").status_code == 401
    # Bound to the first request: the second's pages are not reachable.
    enter(client, first)
    client.get("/documentos/envio")
    enter_second = links.token_for(links.current_link(second, "documents"))
    assert client.get(f"/documentos/{enter_second}").status_code == 200  # asks for its protocol


def test_full_round_with_pendency_and_approval(client, auth, agent, pending, mailbox, db):
    enter(client, pending)
    front = upload(client, "identity", files.jpeg(text="FRENTE"), "frente.jpg")
    assert front.status_code == 200 and "Página" in front.text and "Salvo" in front.text
    # Sending with only the front is refused.
    response = client.post("/documentos/envio/enviar")
    assert response.status_code == 422
    assert "Envie a frente e o verso do documento de identificação" in response.text
    back = upload(client, "identity", files.heic(), "verso.HEIC")
    assert back.status_code == 200
    response = client.post("/documentos/envio/enviar")
    assert response.status_code == 302 and response.location.endswith("/documentos/enviado")
    done = client.get(response.location).text
    assert "Seus documentos foram enviados com sucesso!" in done and "2 dias úteis" in done
    # A replayed submit, a second tab: no second submission.
    assert client.post("/documentos/envio/enviar").status_code == 302
    assert upload(client, "identity", files.jpeg()).status_code == 422
    db.session.expire_all()
    cert_request = db.session.get(CertificateRequest, pending.id)
    assert cert_request.state == "documents_submitted"
    submissions = db.session.execute(select(func.count(AuditEvent.id)).where(
        AuditEvent.to_state == "documents_submitted")).scalar_one()
    assert submissions == 1

    # The agent sees each page, every view is audited, and raises a pendência.
    auth.login(agent.email)
    review = client.get(f"/solicitacoes/{pending.id}/documentos/")
    assert review.status_code == 200 and "Baixar original" in review.text
    image_urls = re.findall(r'src="(/solicitacoes/\d+/documentos/paginas/\d+/web/\d+)"', review.text)
    assert len(image_urls) == 2
    image = client.get(image_urls[0])
    assert image.status_code == 200 and image.mimetype == "image/jpeg"
    assert image.headers["X-Content-Type-Options"] == "nosniff"
    assert image.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert "sandbox" in image.headers["Content-Security-Policy"]
    original_url = re.search(r'href="(/solicitacoes/\d+/documentos/paginas/\d+/original/0)"', review.text).group(1)
    original = client.get(original_url)
    assert "attachment" in original.headers["Content-Disposition"]
    views = db.session.execute(select(func.count(AuditEvent.id)).where(
        AuditEvent.action == "document.view")).scalar_one()
    assert views == 2
    doc = db.session.execute(select(RequestDocument)).scalar_one()
    response = client.post(f"/solicitacoes/{pending.id}/documentos/{doc.id}/pendencia",
                           data={"reason": "illegible", "note": "foto do verso tremida"})
    assert response.status_code == 302
    db.session.expire_all()
    assert db.session.get(CertificateRequest, pending.id).state == "pendency"
    email = mailbox.messages("pendency")[0]
    assert "O motivo da pendência é:" in email.body_text
    assert "documento ilegível — foto do verso tremida" in email.body_text
    assert pending.protocol in email.body_text
    link_url = re.search(r"(http\S+/documentos/\S+)", email.body_text).group(1)

    # The client fixes only that kind: a new round of pages.
    auth.logout()
    client.get(link_url.replace("http://localhost", ""))
    enter(client, pending)
    page = client.get("/documentos/envio").text
    assert "Pendência: documento ilegível" in page
    assert upload(client, "identity", files.pdf(pages=1), "cnh-digital.pdf").status_code == 200
    assert client.post("/documentos/envio/enviar").status_code == 302
    db.session.expire_all()
    cert_request = db.session.get(CertificateRequest, pending.id)
    assert cert_request.state == "documents_submitted"
    doc = db.session.get(RequestDocument, doc.id)
    assert doc.round == 2 and doc.is_resubmission and len(doc.pages_of_round()) == 1
    assert len(doc.pages_of_round(1)) == 2  # the first round is kept as evidence

    auth.login(agent.email)
    assert "reenvio nº 1" in client.get(f"/solicitacoes/{pending.id}/documentos/").text
    client.post(f"/solicitacoes/{pending.id}/documentos/{doc.id}/aprovar")
    db.session.expire_all()
    assert db.session.get(CertificateRequest, pending.id).state == "documents_approved"


def test_ecnpj_needs_both_kinds_and_pendency_reopens_only_one(client, auth, agent, factory, mailbox, db):
    from app.services import people

    person = factory.person()
    company = people.find_or_register_company("11222333000181", "Padaria Exemplo Ltda",
                                              "Campinas", "SP", person)
    db.session.commit()
    cert_request = factory.request(person=person, product_code="ecnpj-a3", company=company)
    enter(client, cert_request)
    page = client.get("/documentos/envio").text
    assert "DOCUMENTO DE CONSTITUIÇÃO DE EMPRESA" in page
    upload(client, "identity", files.jpeg())
    upload(client, "identity", files.jpeg(text="VERSO"))
    response = client.post("/documentos/envio/enviar")
    assert "DOCUMENTO DE CONSTITUIÇÃO DE EMPRESA" in response.text and response.status_code == 422
    upload(client, "company", files.pdf(pages=3), "contrato.pdf")
    assert client.post("/documentos/envio/enviar").status_code == 302

    auth.login(agent.email)
    docs = {d.kind: d for d in db.session.execute(select(RequestDocument)).scalars()}
    client.post(f"/solicitacoes/{cert_request.id}/documentos/{docs['identity'].id}/aprovar")
    client.post(f"/solicitacoes/{cert_request.id}/documentos/{docs['company'].id}/pendencia",
                data={"reason": "articles"})
    assert "O motivo da pendência é: ato constitutivo" in mailbox.messages("pendency")[0].body_text
    auth.logout()
    enter(client, cert_request)
    page = client.get("/documentos/envio").text
    assert "Documento já enviado. Não é preciso enviar de novo." in page
    assert upload(client, "identity", files.jpeg()).status_code == 422
    upload(client, "company", files.pdf(pages=2), "contrato-novo.pdf")
    client.post("/documentos/envio/enviar")
    auth.login(agent.email)
    client.post(f"/solicitacoes/{cert_request.id}/documentos/{docs['company'].id}/aprovar")
    db.session.expire_all()
    assert db.session.get(CertificateRequest, cert_request.id).state == "documents_approved"


def test_remove_and_replace_before_sending(client, pending, db):
    enter(client, pending)
    first = upload(client, "identity", files.jpeg(text="A"))
    page_id = int(re.search(r'id="page-(\d+)"', first.text).group(1))
    replaced = upload(client, "identity", files.jpeg(text="B"), replace=page_id)
    new_id = int(re.search(r'id="page-(\d+)"', replaced.text).group(1))
    assert new_id != page_id and db.session.get(DocumentPage, page_id) is None
    response = client.post(f"/documentos/envio/paginas/{new_id}/remover", headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert db.session.execute(select(func.count(DocumentPage.id))).scalar_one() == 0
    assert db.session.execute(select(func.count(StoredFile.sha256))).scalar_one() == 0
    storage = get_storage()
    assert list(storage.iter_sha256()) == []


def test_identical_file_shared_by_two_requests_is_not_removed(client, factory, mailbox, db, app):
    first = factory.request()
    second = factory.request(person=factory.person(cpf="11144477735", email="b@cliente.example"))
    photo = files.jpeg(text="MESMA")
    enter(client, first)
    upload(client, "identity", photo)
    client2 = app.test_client()
    enter(client2, second)
    r = upload(client2, "identity", photo)
    second_page = int(re.search(r'id="page-(\d+)"', r.text).group(1))
    assert db.session.execute(select(func.count(StoredFile.sha256))).scalar_one() == 3
    client2.post(f"/documentos/envio/paginas/{second_page}/remover")
    first_page = db.session.execute(select(DocumentPage)).scalar_one()
    storage = get_storage()
    assert storage.exists(first_page.original_sha256)
    assert client.get(f"/documentos/envio/paginas/{first_page.id}/miniatura").status_code == 200


@pytest.mark.parametrize("name,data,message", [
    ("vazio.jpg", b"", "vazio"),
    ("programa.jpg", b"MZ\x90\x00" + b"\x00" * 2000, "imagem"),
    ("documento.pdf", b"<!doctype html><html><body>%PDF-1.4 fake</body></html>", "PDF"),
    ("cortada.jpg", None, "incomplet"),
])
def test_bad_files_are_refused_and_nothing_stored(client, pending, db, name, data, message):
    if data is None:
        data = files.jpeg()[:5000]
    enter(client, pending)
    response = upload(client, "identity", data, name)
    assert response.status_code == 422
    assert message.lower() in response.text.lower()
    assert db.session.execute(select(func.count(DocumentPage.id))).scalar_one() == 0
    assert list(get_storage().iter_sha256()) == []


def test_file_name_with_path_and_control_characters(client, pending, db):
    enter(client, pending)
    upload(client, "identity", files.png(), "../../etc/\x00pass\x1bwd.png")
    page = db.session.execute(select(DocumentPage)).scalar_one()
    assert page.display_name == "passwd.png"
    blob_paths = [str(p) for p in get_storage().root.rglob("*") if p.is_file()]
    assert not any("passwd" in p or ".." in p for p in blob_paths)


def test_page_limit(app, client, pending, db):
    app.config["UPLOAD_MAX_PAGES_PER_KIND"] = 3
    enter(client, pending)
    statuses = [upload(client, "identity", files.png(width=100 + i)).status_code for i in range(5)]
    assert statuses == [200, 200, 200, 422, 422]
    assert db.session.execute(select(func.count(DocumentPage.id))).scalar_one() == 3


def test_staff_cannot_open_files_without_login_and_client_only_own(client, pending, factory, db):
    enter(client, pending)
    upload(client, "identity", files.png())
    page = db.session.execute(select(DocumentPage)).scalar_one()
    other = factory.request(person=factory.person(cpf="11144477735", email="b@cliente.example"))
    client2 = client.application.test_client()
    enter(client2, other)
    assert client2.get(f"/documentos/envio/paginas/{page.id}/miniatura").status_code == 404
    assert client2.get(f"/solicitacoes/{pending.id}/documentos/paginas/{page.id}/original/0").status_code == 302


def test_file_over_the_size_limit(app, client, pending, db):
    app.config["UPLOAD_MAX_BYTES"] = 100_000
    enter(client, pending)
    big = files.jpeg(width=3000, height=2200, quality=97)
    assert len(big) > 100_000
    response = upload(client, "identity", big)
    assert response.status_code == 422
    assert "passa do limite" in response.text
    assert db.session.execute(select(func.count(DocumentPage.id))).scalar_one() == 0
    assert list(get_storage().iter_sha256()) == []
    assert get_storage().temp_files() == []


def test_decompression_bomb_is_refused_before_decoding(client, pending, db):
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    # A PNG declaring 40000×40000 pixels, a few hundred bytes long.
    header = struct.pack(">IIBBBBB", 40000, 40000, 8, 2, 0, 0, 0)
    bomb = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b""))
    enter(client, pending)
    response = upload(client, "identity", bomb, "bomba.png")
    assert response.status_code == 422
    assert "megapixels" in response.text
    assert list(get_storage().iter_sha256()) == []


def test_fifty_pages_at_once(client, pending, db, app):
    enter(client, pending)
    photo = files.png(width=64, height=48)
    statuses = [upload(client, "identity", photo).status_code for _ in range(50)]
    limit = app.config["UPLOAD_MAX_PAGES_PER_KIND"]
    assert statuses.count(200) == limit and statuses.count(422) == 50 - limit
    last = upload(client, "identity", photo)
    assert "o máximo permitido" in last.text
    assert db.session.execute(select(func.count(DocumentPage.id))).scalar_one() == limit
    # The same photo fifty times is one blob in the storage.
    assert db.session.execute(select(func.count(StoredFile.sha256))).scalar_one() == 3


def test_client_session_cookie_and_idle_expiry(app, client, pending):
    response = enter(client, pending)
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert client.get("/documentos/envio").status_code == 200
    app.config["CLIENT_IDLE_MINUTES"] = 0
    response = client.get("/documentos/envio")
    assert response.status_code == 401
    assert "Sua sessão expirou" in response.text


def test_request_not_waiting_for_documents(client, pending, db):
    from app.services import workflow

    workflow.transition(pending, "cancelled", reason="teste")
    db.session.commit()
    token = links.token_for(links.current_link(pending, "documents"))
    response = client.get(f"/documentos/{token}")
    assert response.status_code == 409
    assert "não está aguardando documentos" in response.text


def test_staff_view_of_each_file_is_audited_with_who(client, auth, agent, pending, db):
    enter(client, pending)
    upload(client, "identity", files.png())
    page = db.session.execute(select(DocumentPage)).scalar_one()
    auth.login(agent.email)
    client.get(f"/solicitacoes/{pending.id}/documentos/paginas/{page.id}/thumbnail/0")
    event = db.session.execute(select(AuditEvent).where(AuditEvent.action == "document.view")).scalar_one()
    assert event.actor_label == agent.email and event.request_id == pending.id
    assert "thumbnail:0" in event.details


def test_pdf_is_rendered_in_a_child_process(app, client, pending, db, monkeypatch):
    """PDFium runs in a child: the worker gets the same renditions, and a PDF that makes the
    child die (here: PDFium itself made to crash) is refused, not fatal to the web worker."""
    from app.services import pdf_render, uploads

    pdf = files.pdf(pages=3)
    in_process = uploads.process_upload(pdf)  # outside an app context: rendered here
    with app.app_context():
        isolated = uploads.process_upload(pdf)
    assert isolated.pages == in_process.pages == 3
    assert [r.web.data for r in isolated.renditions] == [r.web.data for r in in_process.renditions]

    enter(client, pending)
    assert upload(client, "identity", pdf, "cnh.pdf").status_code == 200
    # A child that is killed (as PDFium crashing would) gives the client the broken-PDF message.
    import subprocess

    real_run = subprocess.run

    def crashing_run(argv, **kwargs):
        return real_run([argv[0], "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"],
                        **kwargs)

    monkeypatch.setattr(pdf_render.subprocess, "run", crashing_run)
    response = upload(client, "identity", files.pdf(pages=2), "outro.pdf")
    assert response.status_code == 422 and "O PDF está corrompido ou incompleto" in response.text


def test_too_long_and_password_protected_pdfs_through_the_child(app, client, pending):
    app.config["UPLOAD_MAX_PDF_PAGES"] = 2
    enter(client, pending)
    response = upload(client, "identity", files.pdf(pages=3), "longo.pdf")
    assert response.status_code == 422 and "O PDF tem 3 páginas; o limite é 2" in response.text
    encrypted = b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R/Encrypt<</Filter/Standard/V 1/R 2/O(x)/U(y)/P -4>>>>\n%%EOF"
    response = upload(client, "identity", encrypted, "senha.pdf")
    assert response.status_code == 422
    assert "O PDF" in response.text  # protected or broken: refused with a PDF message


def test_resubmission_is_marked_in_the_queue(client, auth, agent, pending, db):
    enter(client, pending)
    upload(client, "identity", files.pdf(pages=2), "cnh.pdf")
    client.post("/documentos/envio/enviar")
    auth.login(agent.email)
    queue = client.get("/painel/?estado=documents_submitted").text
    assert pending.protocol in queue and ">reenvio<" not in queue
    doc = db.session.execute(select(RequestDocument)).scalar_one()
    client.post(f"/solicitacoes/{pending.id}/documentos/{doc.id}/pendencia", data={"reason": "illegible"})
    auth.logout()
    enter(client, pending)
    upload(client, "identity", files.pdf(pages=2), "cnh-nova.pdf")
    client.post("/documentos/envio/enviar")
    auth.login(agent.email)
    queue = client.get("/painel/?estado=documents_submitted").text
    assert pending.protocol in queue and ">reenvio<" in queue
