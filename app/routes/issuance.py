"""The holder's issuance pages (client manual, the end): the invitation's link, the password
created in the call, the key pair made in the browser (A1) or the token's request uploaded
(A3), the certificate, the termo, and revocation by the holder."""
import base64

from flask import (Blueprint, abort, current_app, jsonify, redirect, render_template, request,
                   url_for)
from flask_babel import lazy_gettext as _l

from .. import client_session
from ..db_setup import writes_db
from ..extensions import db, limiter
from ..models import CertificateRequest, utcnow
from ..services import audit, issuance, links, robot_check, termo as termo_service
from ..services.audit import client_actor
from .client_documents import send_blob, serves_files

bp = Blueprint("issuance", __name__, url_prefix="/emissao")
PURPOSE = "issuance"
CSR_MAX_BYTES = 64 * 1024
PDF_MAX_BYTES = 20 * 1024 * 1024


def _password_limit():
    return current_app.config["PASSWORD_RATE_LIMIT"]


@bp.errorhandler(401)
def _session_gone(exc):
    if request.accept_mimetypes.best == "application/json" or request.is_json:
        return jsonify(error=str(_l("Sua sessão expirou. Abra novamente o link de emissão."))), 401
    return render_template("public/link_error.html", message=_l(
        "Sua sessão expirou. Abra novamente o link de emissão recebido por e-mail ou SMS.")), 401


def _page(cert_request, link, **extra):
    certificate = issuance.current_certificate(cert_request)
    return render_template(
        "issuance/issue.html", cert_request=cert_request, link=link, certificate=certificate,
        token=extra.pop("token", None), locked_until=issuance.locked_until(cert_request),
        token_product=cert_request.product.key_storage == "token", **extra)


# The token is 43 characters; shorter paths (requisicao, termo, …) are the other routes'.
@bp.route("/<string(minlength=40, maxlength=100):token>", methods=["GET"])
@writes_db
def start(token):
    """The invitation's link: the certificate's data and the password field."""
    try:
        link = links.resolve(token, PURPOSE)
    except links.LinkError as exc:
        return render_template("public/link_error.html", message=exc.message), 404
    cert_request = link.request
    if cert_request.state not in ("approved", "issued"):
        message = (_l("Este certificado foi revogado.") if cert_request.state == "revoked" else
                   _l("Esta solicitação não está liberada para emissão."))
        return render_template("public/link_error.html", message=message), 409
    link.last_used_at = utcnow()
    db.session.commit()
    return _page(cert_request, link, token=token)


@bp.route("/<string(minlength=40, maxlength=100):token>/senha", methods=["POST"])
@writes_db
@limiter.limit(_password_limit)
def unlock(token):
    """The revocation password typed by the holder (JSON for the A1 page, a form for A3)."""
    wants_json = request.is_json
    data = (request.get_json(silent=True) or {}) if wants_json else request.form
    try:
        link = links.resolve(token, PURPOSE)
    except links.LinkError as exc:
        return (jsonify(error=str(exc.message)), 404) if wants_json else \
            (render_template("public/link_error.html", message=exc.message), 404)
    cert_request = link.request
    error = None
    issued_view = cert_request.state in ("issued", "revoked") and not wants_json
    if cert_request.state != "approved" and not issued_view:
        error = _l("Este certificado já foi emitido.") if cert_request.state == "issued" else \
            _l("Esta solicitação não está liberada para emissão.")
    else:
        try:
            if not wants_json:
                robot_check.verify(data.get("altcha"))
            issuance.check_password(cert_request, data.get("password", ""), purpose="issuance")
        except robot_check.RobotCheckError as exc:
            error = exc.message
        except issuance.WrongPassword as exc:
            db.session.commit()  # a wrong password counts
            error = exc.message
    if error is not None:
        if wants_json:
            return jsonify(error=str(error)), 422
        return _page(cert_request, link, token=token, error=error), 422
    client_session.bind(link)
    cert_request.last_client_activity_at = utcnow()
    db.session.commit()
    if wants_json:
        return jsonify(ok=True)
    if issued_view:  # later visits: the certificate and the termo, at any time
        return redirect(url_for(".issued"))
    return redirect(url_for(".token_request"))


def _bound():
    cert_request, link = client_session.require(PURPOSE)
    return cert_request, link


def _bound_certificate():
    """The bound request and its issued certificate (404 before issuance)."""
    cert_request, _ = _bound()
    issued = issuance.current_certificate(cert_request)
    if issued is None:
        abort(404)
    return cert_request, issued


def certificate_download(cert_request, issued):
    """The certificate (DER, no private key) as a download; staff pages use it too."""
    return current_app.response_class(
        issued.der, mimetype="application/pkix-cert",
        headers={"Content-Disposition":
                 f'attachment; filename="certificado-{cert_request.protocol}.cer"'})


def _unlocked(cert_request, link):
    """The password was typed right since this link was bound to the browser."""
    return issuance.password_checked(cert_request, link.created_at)


def _certificate_payload(issued):
    return {
        "serial": issued.serial,
        "certificate": base64.b64encode(issued.der).decode(),
        "chain": list(issued.chain_der),
        "not_after": issued.not_after.isoformat(),
        "fingerprint": issued.fingerprint_sha256,
    }


@bp.route("/requisicao", methods=["POST"])
@writes_db
def submit_request():
    """A1: the PKCS#10 request the browser made with its new key; answers with the certificate
    and what the holder signs in the termo."""
    cert_request, link = _bound()
    if cert_request.product.key_storage != "software":
        abort(404)
    data = request.get_json(silent=True) or {}
    try:
        csr = base64.b64decode(data.get("csr", ""), validate=True)
    except (ValueError, TypeError):
        csr = b""
    if not csr or len(csr) > CSR_MAX_BYTES:
        return jsonify(error=str(issuance.CSR_MESSAGES["malformed"])), 422
    if not _unlocked(cert_request, link):
        return jsonify(error=str(_l("Digite a senha de revogação antes de emitir."))), 403
    try:
        issued = issuance.issue(cert_request, csr, key_storage="software",
                                actor=client_actor(cert_request))
        db.session.commit()
    except issuance.IssuanceError as exc:
        db.session.commit()  # the refusal is audited
        return jsonify(error=str(exc.message)), 409
    except Exception:
        db.session.rollback()
        raise
    payload = _certificate_payload(issued)
    # The certificate is issued and committed: whatever happens to the termo now, the browser
    # must get the certificate, or the key it holds is lost. A termo that could not be
    # prepared is made later by staff and signed or accepted from the holder's page.
    try:
        payload["termo"] = termo_service.start_holder_signature(issued)
        db.session.commit()
    except Exception:
        db.session.rollback()
        current_app.logger.exception("termo not prepared for certificate %s", issued.serial)
        payload["termo"] = None
    return jsonify(payload)


@bp.route("/termo/assinatura", methods=["POST"])
@writes_db
def sign_termo():
    """A1: the holder's signature of the termo, made in the browser with the new key."""
    cert_request, _ = _bound()
    data = request.get_json(silent=True) or {}
    issued = issuance.current_certificate(cert_request)
    if issued is None:
        abort(404)
    try:
        signature = base64.b64decode(data.get("signature", ""), validate=True)
    except (ValueError, TypeError):
        signature = b""
    try:
        termo_service.finish_holder_signature(issued, signature,
                                              actor=client_actor(cert_request))
    except termo_service.TermoError as exc:
        db.session.rollback()
        return jsonify(error=str(exc.message)), 422
    db.session.commit()
    return jsonify(ok=True, termo_url=url_for(".termo_file"))


@bp.route("/concluir", methods=["POST"])
@writes_db
def saved():
    """The holder confirmed the PKCS#12 file is saved."""
    cert_request, issued = _bound_certificate()
    audit.record("certificate.holder_saved", actor=client_actor(cert_request), obj=issued,
                 cert_request=cert_request)
    db.session.commit()
    return jsonify(ok=True)


@bp.route("/token", methods=["GET", "POST"])
@writes_db
def token_request():
    """A3: the holder uploads the request made by the token's software."""
    cert_request, link = _bound()
    error = None
    if request.method == "POST" and cert_request.state == "approved":
        upload = request.files.get("csr")
        data = upload.read(CSR_MAX_BYTES + 1) if upload else b""
        if not data:
            error = _l("Escolha o arquivo da requisição (.csr, .req ou .p10).")
        elif len(data) > CSR_MAX_BYTES:
            error = issuance.CSR_MESSAGES["malformed"]
        elif not _unlocked(cert_request, link):
            error = _l("Digite a senha de revogação antes de emitir.")
        else:
            try:
                issued = issuance.issue(cert_request, data, key_storage="token",
                                        actor=client_actor(cert_request))
                termo_service.prepare_for_token(issued)
            except issuance.IssuanceError as exc:
                error = exc.message
            db.session.commit()
            if error is None:
                return redirect(url_for(".token_request"))
    return render_template("issuance/token.html", cert_request=cert_request,
                           certificate=issuance.current_certificate(cert_request), error=error,
                           termo=termo_service.current_termo(cert_request)), (422 if error else 200)


@bp.route("/termo", methods=["POST"])
@writes_db
def holder_termo():
    """The termo signed by the holder's own software (A3's token, or an A1 whose termo was made
    after issuance), or accepted with the password."""
    cert_request, issued = _bound_certificate()
    error = None
    try:
        if request.form.get("accept"):
            issuance.check_password(cert_request, request.form.get("password", ""),
                                    purpose="termo")
            termo_service.accept_with_password(issued, actor=client_actor(cert_request))
        else:
            upload = request.files.get("termo")
            data = upload.read(PDF_MAX_BYTES + 1) if upload else b""
            termo_service.upload_holder_signed(issued, data, actor=client_actor(cert_request))
    except issuance.WrongPassword as exc:
        error = exc.message
    except termo_service.TermoError as exc:
        db.session.rollback()
        error = exc.message
    db.session.commit()
    page = "issuance/token.html" if issued.key_storage == "token" else "issuance/issued.html"
    return render_template(page, cert_request=cert_request, certificate=issued,
                           error=error, termo=termo_service.current_termo(cert_request)), \
        (422 if error else 200)


@bp.route("/certificado")
def issued():
    """After issuance, at any time: the certificate's data, its file and the termo."""
    cert_request, _ = _bound()
    certificate = issuance.current_certificate(cert_request)
    if certificate is None:
        return redirect(url_for(".token_request"))
    return render_template("issuance/issued.html", cert_request=cert_request,
                           certificate=certificate,
                           termo=termo_service.current_termo(cert_request))


@bp.route("/certificado.cer")
@writes_db
def certificate_file():
    return certificate_download(*_bound_certificate())


@bp.route("/termo.pdf")
@writes_db
@serves_files
def termo_file():
    cert_request, _ = _bound()
    termo = termo_service.current_termo(cert_request)
    if termo is None:
        abort(404)
    return send_blob(termo.sha256, "application/pdf",
                     f"termo-de-titularidade-{cert_request.protocol}.pdf", as_attachment=True)


# --- revocation by the holder ------------------------------------------------------------------

@bp.route("/revogar", methods=["GET", "POST"])
@writes_db
@limiter.limit(_password_limit, methods=["POST"])
def revoke():
    """The holder revokes with the protocol, the revocation password and a reason."""
    error = done = None
    form = request.form
    if request.method == "POST":
        protocol = "".join(ch for ch in form.get("protocol", "") if ch.isdigit())
        cert_request = db.session.execute(db.select(CertificateRequest).where(
            CertificateRequest.protocol == protocol)).scalar_one_or_none() if protocol else None
        issued = issuance.current_certificate(cert_request) if cert_request else None
        try:
            robot_check.verify(form.get("altcha"))
            if issued is None or cert_request.state != "issued":
                raise issuance.IssuanceError(_l(
                    "Não há certificado emitido e válido com este protocolo."))
            if form.get("reason") not in issuance.HOLDER_REVOCATION_REASONS:
                raise issuance.IssuanceError(_l("Escolha o motivo da revogação."))
            issuance.check_password(cert_request, form.get("password", ""), purpose="revocation")
            issuance.revoke(issued, form["reason"], actor=client_actor(cert_request),
                            by="titular")
        except robot_check.RobotCheckError as exc:
            error = exc.message
        except issuance.IssuanceError as exc:
            db.session.commit()  # wrong passwords count
            error = exc.message
        else:
            db.session.commit()
            done = issued
    return render_template("issuance/revoke.html", error=error, done=done,
                           reasons={k: issuance.REVOCATION_REASONS[k]
                                    for k in issuance.HOLDER_REVOCATION_REASONS}), \
        (422 if error else 200)
