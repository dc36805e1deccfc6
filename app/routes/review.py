"""The agent's review of a request's documents: view, approve, raise a pendência."""
from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import lazy_gettext as _l
from flask_login import current_user

from ..auth import role_required, staff_blueprint_guard
from ..db_setup import writes_db
from ..extensions import db
from ..models import CertificateRequest
from ..models.documents import DocumentPage, RequestDocument
from ..services import documents
from ..services.audit import staff_actor
from .client_documents import send_blob, serves_files

bp = Blueprint("review", __name__, url_prefix="/solicitacoes/<int:request_id>/documentos")
staff_blueprint_guard(bp, "agent", "verifier", "admin")


def _request(request_id) -> CertificateRequest:
    return db.get_or_404(CertificateRequest, request_id)


def _document(cert_request, document_id) -> RequestDocument:
    doc = db.session.get(RequestDocument, document_id)
    if doc is None or doc.request_id != cert_request.id:
        abort(404)
    return doc


@bp.route("/")
@writes_db
def review(request_id):
    """Every page large, with zoom and rotation; approve or raise a pendência per kind."""
    cert_request = _request(request_id)
    docs = documents.ensure_documents(cert_request)
    db.session.commit()
    return render_template("review/review.html", cert_request=cert_request, docs=docs,
                           kinds=documents.KINDS, reasons=documents.PENDENCY_REASONS)


@bp.route("/<int:document_id>/aprovar", methods=["POST"])
@role_required("agent")
def approve_document(request_id, document_id):
    """Approve one kind of document."""
    cert_request = _request(request_id)
    doc = _document(cert_request, document_id)
    try:
        documents.approve_document(doc, current_user, actor=staff_actor(current_user))
    except documents.DocumentError as exc:
        db.session.rollback()
        flash(exc.message, "error")
    else:
        db.session.commit()
        flash(_l("“%(title)s” aprovado.", title=documents.KINDS[doc.kind].title), "success")
    return redirect(url_for(".review", request_id=cert_request.id))


@bp.route("/<int:document_id>/pendencia", methods=["POST"])
@role_required("agent")
def raise_pendency(request_id, document_id):
    """Raise a pendência on one kind: the client is emailed and may send it again."""
    cert_request = _request(request_id)
    doc = _document(cert_request, document_id)
    try:
        documents.raise_pendency(doc, request.form.get("reason", ""), request.form.get("note"),
                                 current_user, actor=staff_actor(current_user))
    except documents.DocumentError as exc:
        db.session.rollback()
        flash(exc.message, "error")
    else:
        db.session.commit()
        flash(_l("Pendência registrada. O cliente recebeu um e-mail com o motivo."), "success")
    return redirect(url_for(".review", request_id=cert_request.id))


@bp.route("/paginas/<int:page_id>/<variant>/<int:index>")
@writes_db
@serves_files
def page_file(request_id, page_id, variant, index):
    """A page's image (web size or thumbnail) or its original file; every view is audited."""
    cert_request = _request(request_id)
    page = db.session.get(DocumentPage, page_id)
    if page is None or page.document.request_id != cert_request.id:
        abort(404)
    if variant == "original":
        blob, mime = page.original_sha256, page.mime
        ext = {"image/jpeg": "jpg", "image/png": "png", "image/heic": "heic",
               "image/heif": "heif", "application/pdf": "pdf"}.get(page.mime, "bin")
        name, attachment = f"{cert_request.protocol}-{page.document.kind}-{page.id}.{ext}", True
    elif variant in ("web", "thumbnail") and 0 <= index < len(page.renditions):
        rendition = page.renditions[index]
        blob = rendition.web_sha256 if variant == "web" else rendition.thumbnail_sha256
        mime, name, attachment = "image/jpeg", f"pagina-{page.id}-{index + 1}.jpg", False
    else:
        abort(404)
    documents.record_view(page, variant if variant == "original" else f"{variant}:{index}",
                          actor=staff_actor(current_user))
    db.session.commit()
    return send_blob(blob, mime, name, as_attachment=attachment)
