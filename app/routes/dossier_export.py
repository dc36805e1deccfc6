"""The dossier export (a signed ZIP of everything a request holds) and the LGPD export of
everything held about one CPF. See docs/dossier.md."""
import os

from flask import Blueprint, flash, redirect, send_file, url_for
from flask_login import current_user

from ..auth import role_required, staff_blueprint_guard
from ..extensions import db
from ..models import CertificateRequest, Person
from ..services import ServiceError, dossier_export
from ..services.audit import staff_actor
from .client_documents import serves_files

bp = Blueprint("dossier_export", __name__)
staff_blueprint_guard(bp, "agent", "verifier", "admin")


def _refused(exc: ServiceError) -> None:
    if isinstance(exc, dossier_export.DossierIntegrityError):
        db.session.commit()  # the refusal is audited
        flash(exc.message, "error")
        for problem in exc.problems:
            flash(str(problem), "error")
    else:
        db.session.rollback()
        flash(exc.message, "error")


def _send_zip(path, download_name: str):
    """Stream the ZIP; its name is unlinked at once, so nothing stays behind even when the
    download stops halfway (the open file lives until the response is closed)."""
    stream = open(path, "rb")
    try:
        size = os.fstat(stream.fileno()).st_size
    finally:
        os.unlink(path)
    response = send_file(stream, mimetype="application/zip", as_attachment=True,
                         download_name=download_name, max_age=0, conditional=False)
    response.content_length = size
    response.headers["Cache-Control"] = "private, no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@bp.route("/solicitacoes/<int:request_id>/dossie/exportar", methods=["POST"])
@serves_files
def export_request(request_id):
    """Download the request's dossier as a signed ZIP."""
    cert_request = db.get_or_404(CertificateRequest, request_id)
    protocol = cert_request.protocol
    try:
        path = dossier_export.export_request(cert_request, actor=staff_actor(current_user))
    except ServiceError as exc:
        _refused(exc)
        return redirect(url_for("dossier.dossier", request_id=request_id))
    except Exception:
        db.session.rollback()
        raise
    db.session.commit()
    return _send_zip(path, f"dossie-{protocol}.zip")


@bp.route("/pessoas/<int:person_id>/dados/exportar", methods=["POST"])
@role_required("admin")
@serves_files
def export_person(person_id):
    """LGPD: download everything held about the person's CPF as a signed ZIP."""
    person = db.get_or_404(Person, person_id)
    cpf = person.cpf
    try:
        path = dossier_export.export_person(person, actor=staff_actor(current_user))
    except ServiceError as exc:
        _refused(exc)
        return redirect(url_for("people.detail", person_id=person_id))
    except Exception:
        db.session.rollback()
        raise
    db.session.commit()
    return _send_zip(path, f"dados-pessoais-{cpf}.zip")
