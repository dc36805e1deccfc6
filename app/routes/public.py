"""Public pages: the office's home and the client's entry by private link."""
from flask import Blueprint, render_template

from ..db_setup import writes_db
from ..extensions import db
from ..models import utcnow
from ..services import links
from ..services.audit import client_actor
from ..services import audit

bp = Blueprint("public", __name__)


@bp.route("/")
def home():
    """The office's public page: ask for a certificate, or staff login."""
    return render_template("public/home.html")


@bp.route("/documentos/<token>")
@writes_db
def documents_entry(token):
    """The "Importe seus documentos" link: checks the private token before anything else."""
    try:
        link = links.resolve(token, "documents")
    except links.LinkError as exc:
        return render_template("public/link_error.html", message=exc.message), 404
    cert_request = link.request
    if link.last_used_at is None:
        audit.record("link.open", actor=client_actor(cert_request), obj=link,
                     cert_request=cert_request)
    link.last_used_at = utcnow()
    cert_request.last_client_activity_at = link.last_used_at
    db.session.commit()
    return render_template("public/documents_entry.html", cert_request=cert_request)
