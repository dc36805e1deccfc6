"""The document journey: the client's uploads, sending for review, the agent's review.

State of each kind of document (`RequestDocument.status`): open → submitted → approved, or
submitted → pendency → (new round of pages) submitted. The request follows with
`documents_pending → documents_submitted ⇄ pendency → documents_approved`.

Blobs are shared by content (`StoredFile`, named by SHA-256): a blob leaves the storage only
after the commit that removed its last reference (`release_unreferenced`).
"""
import re
import unicodedata
from dataclasses import dataclass

from flask import current_app
from flask_babel import force_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import func, select, union_all

from ..extensions import db
from ..models import CertificateRequest, utcnow
from ..models.documents import (DocumentPage, PageRendition, Pendency, RequestDocument,
                                StoredFile)
from . import ServiceError, audit, email, links, workflow
from .storage import get_storage
from .uploads import StoredUpload, store_upload


@dataclass(frozen=True)
class DocumentKind:
    code: str
    title: object
    instructions: tuple


KINDS = {
    "identity": DocumentKind(
        "identity", _l("DOCUMENTO OFICIAL DE PESSOA FÍSICA"),
        (_l("Os documentos devem ser originais e em cores e devem apresentar todos os dados visíveis."),
         _l("Os documentos devem estar fora do plástico e abertos, exceto quando forem plastificados "
            "pelo órgão emissor. EM TODOS os casos, devem ser enviados a frente e o verso dos documentos."),
         _l("Caso envie a CNH Digital, o QR Code deve ficar visível."))),
    "company": DocumentKind(
        "company", _l("DOCUMENTO DE CONSTITUIÇÃO DE EMPRESA"),
        (_l("Os documentos de pessoa jurídica devem ser originais e conter os registros."),
         _l("Caso os documentos de pessoa jurídica sejam digitais, o rodapé deverá ficar visível "
            "aparecendo o número de protocolo e a chave de segurança."))),
}

PENDENCY_REASONS = {
    "illegible": _l("documento ilegível"),
    "missing_back": _l("falta o verso do documento"),
    "expired_document": _l("documento vencido"),
    "different_document": _l("documento diferente do solicitado"),
    "articles": _l("ato constitutivo"),
    "not_original": _l("cópia em vez do documento original"),
    "other": _l("outro motivo"),
}


class DocumentError(ServiceError):
    pass


def required_kinds(product) -> list[str]:
    return ["identity", "company"] if product.is_company else ["identity"]


def ensure_documents(cert_request) -> list[RequestDocument]:
    """The request's document rows, creating those its product requires."""
    existing = {d.kind: d for d in cert_request.documents}
    for kind in required_kinds(cert_request.product):
        if kind not in existing:
            doc = RequestDocument(request=cert_request, kind=kind, status="open")
            db.session.add(doc)
            existing[kind] = doc
    db.session.flush()
    return [existing[k] for k in required_kinds(cert_request.product)]


def _document(cert_request, kind) -> RequestDocument:
    for doc in ensure_documents(cert_request):
        if doc.kind == kind:
            return doc
    raise DocumentError(_l("Este tipo de documento não faz parte desta solicitação."))


def accepts_uploads(cert_request) -> bool:
    return cert_request.state in workflow.AWAITING_CLIENT


def _check_open(cert_request, doc):
    if not accepts_uploads(cert_request):
        raise DocumentError(_l("Seus documentos já foram enviados para análise. Não é possível "
                               "incluir outros até que a conferência seja realizada."))
    if doc.status not in ("open", "pendency"):
        raise DocumentError(_l("Este documento já foi enviado e não precisa ser reenviado."))


def safe_display_name(filename: str | None) -> str | None:
    """A name fit to show: no path, no control characters, at most 120 characters."""
    if not filename:
        return None
    name = unicodedata.normalize("NFC", filename).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip(" .")
    name = re.sub(r"\s+", " ", name)
    return name[:120] or None


def _record_blob(blob, mime):
    if db.session.get(StoredFile, blob.sha256) is None:
        db.session.add(StoredFile(sha256=blob.sha256, size=blob.size, mime=mime))


def check_can_add(cert_request, kind: str, replace: DocumentPage | None = None) -> RequestDocument:
    """Raise DocumentError when `kind` of this request takes no new page now."""
    doc = _document(cert_request, kind)
    _check_open(cert_request, doc)
    if replace is not None and (replace.document_id != doc.id or replace.round != doc.round):
        raise DocumentError(_l("Esta página não pode mais ser substituída."))
    limit = current_app.config["UPLOAD_MAX_PAGES_PER_KIND"]
    if replace is None and len(doc.pages_of_round()) >= limit:
        raise DocumentError(_l("Você já enviou %(n)s páginas deste documento, o máximo "
                               "permitido. Remova uma para incluir outra.", n=limit))
    return doc


def store_file(stream):
    """Stream an uploaded file into the storage and check it (`uploads.store_upload`); no
    database work, so it runs outside any transaction. Raises uploads.UploadRejected."""
    return store_upload(stream)


def add_page(cert_request, kind: str, stored, filename: str | None, *, ip=None,
             actor=None, replace: DocumentPage | None = None) -> DocumentPage:
    """Record a stored file (from `store_file`) as a page of `kind`, or in place of `replace`.

    Raises DocumentError when the request or this kind does not accept pages (any more), or
    the page limit is reached; the caller then releases the stored blobs.
    """
    doc = check_can_add(cert_request, kind, replace)
    current = doc.pages_of_round()
    processed = stored.processed
    _record_blob(stored.original, processed.mime)
    for blobs, made in zip(stored.renditions, processed.renditions):
        _record_blob(blobs.web, made.web.mime)
        _record_blob(blobs.thumbnail, made.thumbnail.mime)
    db.session.flush()
    page = DocumentPage(
        document=doc, round=doc.round, kind=processed.kind, mime=processed.mime,
        original_sha256=stored.original.sha256, width=processed.width, height=processed.height,
        page_count=processed.pages, display_name=safe_display_name(filename),
        uploaded_at=utcnow(), uploaded_ip=ip,
        position=replace.position if replace is not None else
        max((p.position for p in current), default=0) + 1,
    )
    db.session.add(page)
    for index, (blobs, made) in enumerate(zip(stored.renditions, processed.renditions)):
        page.renditions.append(PageRendition(index=index, web_sha256=blobs.web.sha256,
                                             thumbnail_sha256=blobs.thumbnail.sha256,
                                             width=made.web.width, height=made.web.height))
    db.session.add(page)
    db.session.flush()
    storage = get_storage()
    if not all(storage.exists(sha) for sha in blobs_of(page)):
        # A blob shared with a page being deleted right now went away: ask for it again.
        raise DocumentError(_l("Não foi possível salvar o arquivo. Envie-o novamente."))
    if replace is not None:
        _delete_page(replace, actor, "document.page_replace", replaced_by=page.id)
    audit.record("document.page_add", actor=actor, obj=page, cert_request=cert_request,
                 details={"kind": kind, "sha256": stored.original.sha256, "mime": processed.mime,
                          "size": stored.original.size, "pages": processed.pages,
                          "round": doc.round})
    cert_request.last_client_activity_at = utcnow()
    return page


def _delete_page(page, actor, action, **details):
    cert_request = page.document.request
    audit.record(action, actor=actor, obj=page, cert_request=cert_request,
                 details={"kind": page.document.kind, "sha256": page.original_sha256, **details})
    db.session.delete(page)
    db.session.flush()


def remove_page(cert_request, page: DocumentPage, actor=None):
    """Remove a page the client added in the current round, before sending."""
    doc = page.document
    if doc.request_id != cert_request.id:
        raise DocumentError(_l("Página não encontrada."))
    _check_open(cert_request, doc)
    if page.round != doc.round:
        raise DocumentError(_l("Esta página já foi enviada e não pode ser removida."))
    _delete_page(page, actor, "document.page_remove")


def _page_count(pages) -> int:
    return sum(p.page_count for p in pages)


def missing_for_submission(cert_request) -> list[str]:
    """What still blocks "Enviar para análise", as messages for the client."""
    problems = []
    for doc in ensure_documents(cert_request):
        if doc.status not in ("open", "pendency"):
            continue
        pages = doc.pages_of_round()
        title = KINDS[doc.kind].title
        if not pages:
            problems.append(_l("Adicione as páginas de “%(title)s”.", title=title))
        elif doc.kind == "identity" and _page_count(pages) < 2 and pages[0].kind != "pdf":
            problems.append(_l("Envie a frente e o verso do documento de identificação "
                               "(ou a CNH Digital em PDF)."))
    return problems


def submit(cert_request, actor=None) -> bool:
    """"Enviar para análise": send every open kind for review. Returns False when the
    documents were already sent (a double click or a second tab), True when this call sent
    them. Raises DocumentError listing what is missing."""
    if cert_request.state == "documents_submitted":
        return False
    if not accepts_uploads(cert_request):
        raise DocumentError(_l("Esta solicitação não está aguardando documentos."))
    problems = missing_for_submission(cert_request)
    if problems:
        raise DocumentError(" ".join(str(p) for p in problems))
    now = utcnow()
    sent = []
    for doc in ensure_documents(cert_request):
        if doc.status in ("open", "pendency"):
            doc.status = "submitted"
            doc.submitted_at = now
            sent.append(doc.kind)
            for pendency in doc.pendencies:
                if pendency.resolved_at is None:
                    pendency.resolved_at = now
    resubmission = cert_request.state == "pendency"
    workflow.transition(cert_request, "documents_submitted", actor=actor,
                        details={"kinds": sent, "resubmission": resubmission})
    cert_request.last_client_activity_at = now
    return True


def _lock_request(cert_request):
    """Serialize reviews of one request (PostgreSQL; SQLite writers are serialized anyway)."""
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(select(CertificateRequest.id).where(
            CertificateRequest.id == cert_request.id).with_for_update())
        db.session.refresh(cert_request)


def approve_document(doc: RequestDocument, reviewer, actor=None):
    """Approve one kind; when every kind is approved the request is `documents_approved`."""
    cert_request = doc.request
    _lock_request(cert_request)
    db.session.refresh(doc)
    if doc.status != "submitted":
        raise DocumentError(_l("Este documento não está aguardando análise."))
    doc.status = "approved"
    doc.reviewed_at = utcnow()
    doc.reviewed_by = reviewer
    audit.record("document.approve", actor=actor, obj=doc, cert_request=cert_request,
                 details={"kind": doc.kind, "round": doc.round})
    if all(d.status == "approved" for d in ensure_documents(cert_request)) and \
            cert_request.state == "documents_submitted":
        workflow.transition(cert_request, "documents_approved", actor=actor)


def raise_pendency(doc: RequestDocument, reason: str, note: str | None, reviewer, actor=None):
    """Raise a pendência on one kind: it reopens for a new round of pages, the request goes to
    `pendency` and the client gets the manual's email with the reason and a link."""
    if reason not in PENDENCY_REASONS:
        raise DocumentError(_l("Escolha o motivo da pendência."))
    note = (note or "").strip() or None
    if reason == "other" and not note:
        raise DocumentError(_l("Descreva o motivo da pendência."))
    cert_request = doc.request
    _lock_request(cert_request)
    db.session.refresh(doc)
    if doc.status != "submitted":
        raise DocumentError(_l("Este documento não está aguardando análise."))
    now = utcnow()
    doc.status = "pendency"
    doc.round += 1
    doc.reviewed_at = now
    doc.reviewed_by = reviewer
    pendency = Pendency(document=doc, reason=reason, note=note, raised_by=reviewer, raised_at=now)
    db.session.add(pendency)
    db.session.flush()
    audit.record("document.pendency", actor=actor, obj=doc, cert_request=cert_request,
                 reason=str(PENDENCY_REASONS[reason]) + (f": {note}" if note else ""),
                 details={"kind": doc.kind, "reason": reason})
    if cert_request.state == "documents_submitted":
        workflow.transition(cert_request, "pendency", actor=actor,
                            reason=str(PENDENCY_REASONS[reason]))
    link = links.current_link(cert_request, "documents")
    if link is None or link.expires_at <= now:
        link = links.create_link(cert_request, "documents", actor=actor)
    with force_locale("pt_BR"):
        reason_text = str(PENDENCY_REASONS[reason]) + (f" — {note}" if note else "")
        email.queue_email(
            "pendency", cert_request.holder.email,
            _("Pendência nos seus documentos — protocolo %(protocol)s",
              protocol=cert_request.protocol),
            "pendency", cert_request=cert_request, reason_text=reason_text,
            link_url=links.url_for_link(link), link=link)
    return pendency


def record_view(page: DocumentPage, variant: str, actor=None):
    """Every staff view of a document is audited."""
    audit.record("document.view", actor=actor, obj=page, cert_request=page.document.request,
                 details={"variant": variant, "kind": page.document.kind})


def referenced_blobs(candidates) -> set[str]:
    """Which of `candidates` are still referenced by any row."""
    candidates = set(candidates)
    if not candidates:
        return set()
    refs = union_all(
        select(DocumentPage.original_sha256.label("sha")).where(
            DocumentPage.original_sha256.in_(candidates)),
        select(PageRendition.web_sha256).where(PageRendition.web_sha256.in_(candidates)),
        select(PageRendition.thumbnail_sha256).where(PageRendition.thumbnail_sha256.in_(candidates)),
    ).subquery()
    return set(db.session.execute(select(func.distinct(refs.c.sha))).scalars())


def blobs_of_upload(stored: StoredUpload) -> set[str]:
    shas = {stored.original.sha256}
    for page in stored.renditions:
        shas |= {page.web.sha256, page.thumbnail.sha256}
    return shas


def blobs_of(page: DocumentPage) -> set[str]:
    shas = {page.original_sha256}
    for r in page.renditions:
        shas |= {r.web_sha256, r.thumbnail_sha256}
    return shas


def release_unreferenced(candidates) -> int:
    """Delete from the storage the blobs of `candidates` that no row references any more
    (call after the commit that removed the references). Returns how many went.

    Each blob's `stored_file` row is locked and its references counted again before the file
    goes, and an upload that records the same blob meanwhile re-checks that the file exists
    (`add_page`), so a shared file is never removed from under a live reference.
    """
    gone = 0
    storage = get_storage()
    for sha in sorted(set(candidates)):
        stmt = select(StoredFile).where(StoredFile.sha256 == sha)
        if db.session.get_bind().dialect.name == "postgresql":
            stmt = stmt.with_for_update()
        row = db.session.execute(stmt).scalar_one_or_none()
        if row is None or referenced_blobs({sha}):
            db.session.rollback()
            continue
        db.session.delete(row)
        db.session.flush()
        storage.delete(sha)
        db.session.commit()
        gone += 1
    return gone
