"""After the call, on the staff side: "Continuar", the verifier's second check on the dossier,
the issuance invitation, the certificate's state, the termo and revocation by staff."""
from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from sqlalchemy import select

from ..auth import role_required, staff_blueprint_guard
from ..db_setup import writes_db
from ..extensions import db
from ..models import AuditEvent, CertificateRequest
from ..services import audit, ca as ca_service, documents, issuance
from ..services import termo as termo_service
from ..services.audit import staff_actor
from .client_documents import send_blob, serves_files
from .issuance import certificate_download

bp = Blueprint("dossier", __name__, url_prefix="/solicitacoes/<int:request_id>")
staff_blueprint_guard(bp, "agent", "verifier", "admin")


def _get(request_id) -> CertificateRequest:
    return db.get_or_404(CertificateRequest, request_id)


def _back(cert_request, anchor="emissao"):
    return redirect(url_for("requests.detail", request_id=cert_request.id, _anchor=anchor))


def _act(cert_request, action, success, *, target=None):
    """Run `action`, commit and flash `success` (or `success(result)`), or flash its error."""
    try:
        result = action()
    except (issuance.IssuanceError, termo_service.TermoError) as exc:
        db.session.rollback()
        flash(exc.message, "error")
    else:
        db.session.commit()
        flash(success(result) if callable(success) else success, "success")
    return target or _back(cert_request)


@bp.route("/continuar", methods=["POST"])
@role_required("agent")
def continue_after_call(request_id):
    """"Continuar" after the call, with the holder's data confirmed."""
    cert_request = _get(request_id)
    if not request.form.get("confirm"):
        flash(_l("Confirme que os dados do titular estão corretos."), "error")
        return _back(cert_request)
    return _act(cert_request, lambda: issuance.continue_after_call(
        cert_request, staff=current_user, actor=staff_actor(current_user)),
        lambda state: _l("Solicitação enviada para a segunda conferência.")
        if state == "second_check" else
        _l("Convite de emissão enviado ao titular por e-mail e SMS."))


@bp.route("/dossie")
@writes_db
def dossier(request_id):
    """Everything the request holds on one page: the verifier's second check."""
    cert_request = _get(request_id)
    conference = issuance.last_call(cert_request)
    events = db.session.execute(
        select(AuditEvent).where(AuditEvent.request_id == cert_request.id).order_by(AuditEvent.seq)
    ).scalars().all()
    id_pages = [page for doc in cert_request.documents if doc.kind == "identity"
                for page in doc.pages_of_round()]
    audit.record("dossier.view", actor=staff_actor(current_user), obj=cert_request,
                 cert_request=cert_request)
    db.session.commit()
    return render_template(
        "dossier/dossier.html", cert_request=cert_request, conference=conference,
        events=events, id_pages=id_pages,
        face=next((c for c in conference.captures if c.kind == "face" and c.status == "accepted"),
                  None) if conference else None,
        stills=[c for c in conference.captures if c.kind == "still" and c.file_sha256]
        if conference else [],
        may_verify=issuance.may_verify(cert_request, current_user),
        certificate=issuance.current_certificate(cert_request),
        termo=termo_service.current_termo(cert_request),
        reasons=issuance.REVOCATION_REASONS, kinds=documents.KINDS)


@bp.route("/segunda-conferencia/aprovar", methods=["POST"])
@role_required("verifier")
def approve(request_id):
    cert_request = _get(request_id)
    return _act(cert_request, lambda: issuance.approve(
        cert_request, staff=current_user, actor=staff_actor(current_user),
        override=request.form.get("override")),
        _l("Dossiê aprovado. O titular recebeu o convite de emissão por e-mail e SMS."),
        target=redirect(url_for(".dossier", request_id=cert_request.id)))


@bp.route("/segunda-conferencia/devolver", methods=["POST"])
@role_required("verifier")
def return_to_agent(request_id):
    cert_request = _get(request_id)
    return _act(cert_request, lambda: issuance.return_to_agent(
        cert_request, staff=current_user, actor=staff_actor(current_user),
        reason=request.form.get("reason", "")),
        _l("Dossiê devolvido ao agente."),
        target=redirect(url_for(".dossier", request_id=cert_request.id)))


@bp.route("/convite-emissao", methods=["POST"])
@role_required("agent")
def resend_invitation(request_id):
    cert_request = _get(request_id)
    return _act(cert_request, lambda: issuance.resend_invitation(
        cert_request, actor=staff_actor(current_user)),
        _l("Convite de emissão reenviado por e-mail e SMS."))


@bp.route("/emissao")
def issuance_state(request_id):
    """The request page's issuance section; polled by htmx until the certificate is issued."""
    cert_request = _get(request_id)
    shown = request.args.get("estado")
    if shown and shown != cert_request.state and request.headers.get("HX-Request"):
        # The state moved on (e.g. the holder issued): the whole page changes (state badge,
        # history), so htmx reloads it.
        response = current_app.response_class(status=204)
        response.headers["HX-Refresh"] = "true"
        return response
    return render_template("dossier/_issuance.html", cert_request=cert_request,
                           certificate=issuance.current_certificate(cert_request),
                           termo=termo_service.current_termo(cert_request),
                           reasons=issuance.REVOCATION_REASONS)


@bp.route("/certificado/revogar", methods=["POST"])
@role_required("agent", "verifier", "admin")
def revoke(request_id):
    cert_request = _get(request_id)
    issued = issuance.current_certificate(cert_request)
    if issued is None:
        abort(404)
    note = (request.form.get("note") or "").strip()
    if not note:
        flash(_l("Descreva o motivo da revogação."), "error")
        return _back(cert_request)
    return _act(cert_request, lambda: issuance.revoke(
        issued, request.form.get("reason", ""), actor=staff_actor(current_user),
        by=current_user.name, note=note), _l("Certificado revogado. A LCR foi atualizada."))


@bp.route("/certificado.cer")
def certificate_file(request_id):
    cert_request = _get(request_id)
    issued = issuance.current_certificate(cert_request)
    if issued is None:
        abort(404)
    return certificate_download(cert_request, issued)


@bp.route("/termo/gerar", methods=["POST"])
@role_required("agent", "admin")
def create_termo(request_id):
    """Make the termo of an issued certificate whose termo could not be made at issuance; the
    holder then signs it with their own software or accepts it with the password."""
    cert_request = _get(request_id)
    issued = issuance.current_certificate(cert_request)
    if issued is None or termo_service.current_termo(cert_request) is not None:
        abort(409)

    def make():
        try:
            return termo_service.create(issued, actor=staff_actor(current_user))
        except ca_service.CaUnavailable as exc:
            raise termo_service.TermoError(exc.message) from None

    return _act(cert_request, make, _l("Termo gerado e contra-assinado. O titular pode assiná-lo "
                                       "ou aceitá-lo na página do certificado."))


@bp.route("/termo.pdf")
@writes_db
@serves_files
def termo_file(request_id):
    cert_request = _get(request_id)
    termo = termo_service.current_termo(cert_request)
    if termo is None:
        abort(404)
    audit.record("termo.download", actor=staff_actor(current_user), obj=termo,
                 cert_request=cert_request)
    db.session.commit()
    return send_blob(termo.sha256, "application/pdf",
                     f"termo-de-titularidade-{cert_request.protocol}.pdf", as_attachment=True)
