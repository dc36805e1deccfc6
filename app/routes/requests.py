"""A certificate request as the agent sees it."""
from flask import Blueprint, flash, redirect, render_template, url_for
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from sqlalchemy import select

from ..auth import staff_blueprint_guard
from ..extensions import db
from ..forms import CancelRequestForm
from ..models import AuditEvent, CertificateRequest, EmailMessage
from ..services import documents, issuance, links, requests as request_service
from ..services.audit import staff_actor

bp = Blueprint("requests", __name__, url_prefix="/solicitacoes")
staff_blueprint_guard(bp, "agent", "verifier", "admin")


def _get(request_id) -> CertificateRequest:
    return db.get_or_404(CertificateRequest, request_id)


@bp.route("/<int:request_id>")
def detail(request_id):
    """The request: holder, product, state, the client's link, emails and audit trail."""
    cert_request = _get(request_id)
    documents_link = links.current_link(cert_request, "documents")
    events = db.session.execute(
        select(AuditEvent).where(AuditEvent.request_id == cert_request.id).order_by(AuditEvent.seq)
    ).scalars().all()
    emails = db.session.execute(
        select(EmailMessage).where(EmailMessage.request_id == cert_request.id)
        .order_by(EmailMessage.id)
    ).scalars().all()
    return render_template(
        "requests/detail.html", cert_request=cert_request, documents_link=documents_link,
        documents_url=links.url_for_link(documents_link) if documents_link else None,
        events=events, emails=emails, cancel_form=CancelRequestForm(), kinds=documents.KINDS,
        revocation_reasons=issuance.REVOCATION_REASONS,
    )


@bp.route("/<int:request_id>/link-documentos", methods=["POST"])
def renew_documents_link(request_id):
    """Replace the client's document link with a new one and email it."""
    cert_request = _get(request_id)
    try:
        request_service.renew_documents_link(cert_request, actor=staff_actor(current_user))
    except request_service.RequestError as exc:
        db.session.rollback()
        flash(exc.message, "error")
    else:
        db.session.commit()
        flash(_l("Novo link gerado e enviado ao cliente. O link anterior deixou de funcionar."),
              "success")
    return redirect(url_for("requests.detail", request_id=cert_request.id))


@bp.route("/<int:request_id>/cancelar", methods=["POST"])
def cancel(request_id):
    """Cancel the request, with a reason."""
    cert_request = _get(request_id)
    form = CancelRequestForm()
    if not form.validate_on_submit():
        flash(_l("Informe o motivo do cancelamento."), "error")
        return redirect(url_for("requests.detail", request_id=cert_request.id))
    try:
        request_service.cancel_request(cert_request, form.reason.data,
                                       actor=staff_actor(current_user))
    except request_service.RequestError as exc:
        db.session.rollback()
        flash(exc.message, "error")
    else:
        db.session.commit()
        flash(_l("Solicitação cancelada."), "success")
    return redirect(url_for("requests.detail", request_id=cert_request.id))
