"""The client's document import (client manual: "Importe seus documentos" up to "Seus
documentos foram enviados com sucesso!")."""
from flask import (Blueprint, abort, current_app, redirect, render_template, request, send_file,
                   url_for)
from flask_babel import lazy_gettext as _l

from .. import client_session
from .. import db_setup
from ..db_setup import writes_db
from ..extensions import db, limiter
from ..jobs import redis_connection
from ..models import CertificateRequest, utcnow
from ..models.documents import DocumentPage
from ..services import audit, documents, links, robot_check, uploads, workflow
from ..services.audit import client_actor
from ..services.requests import is_valid_protocol
from ..services.storage import get_storage

bp = Blueprint("client_documents", __name__, url_prefix="/documentos")
PURPOSE = "documents"

# Talisman's per-view options (what its `@talisman(...)` decorator sets): files are served
# with a policy that lets them run nothing and embed nothing.
FILE_HEADERS = {"content_security_policy": {"default-src": "'none'", "sandbox": ""},
                "frame_options": "DENY"}


def serves_files(view):
    view.talisman_view_options = FILE_HEADERS
    return view


@bp.errorhandler(401)
def _session_gone(exc):
    return render_template("public/link_error.html", message=_l(
        "Sua sessão expirou. Abra novamente o link recebido por e-mail e informe o protocolo.")), 401


def _bound():
    cert_request, link = client_session.require(PURPOSE)
    return cert_request, link


def _protocol_tries_key(link_id):
    return f"videoar:protocol-tries:{link_id}"


def _too_many_tries(link) -> bool:
    conn = redis_connection()
    return int(conn.get(_protocol_tries_key(link.id)) or 0) >= \
        current_app.config["PROTOCOL_MAX_TRIES"]


def _count_wrong_try(link):
    conn = redis_connection()
    key = _protocol_tries_key(link.id)
    with conn.pipeline() as pipe:
        pipe.incr(key)
        pipe.expire(key, current_app.config["PROTOCOL_LOCK_MINUTES"] * 60)
        pipe.execute()


@bp.route("/<token>", methods=["GET", "POST"])
@writes_db
@limiter.limit(lambda: current_app.config["PROTOCOL_RATE_LIMIT"], methods=["POST"])
def entry(token):
    """The email's link: the protocol and "Não sou um robô" before anything else."""
    try:
        link = links.resolve(token, PURPOSE)
    except links.LinkError as exc:
        return render_template("public/link_error.html", message=exc.message), 404
    cert_request = link.request
    bound = client_session.current(PURPOSE)
    if bound is not None and bound[1].id == link.id and request.method == "GET":
        return redirect(url_for(".instructions"))
    if not documents.accepts_uploads(cert_request) and cert_request.state != "documents_submitted":
        return render_template("public/link_error.html", message=_l(
            "Esta solicitação não está aguardando documentos. Se tiver dúvidas, fale com a "
            "Autoridade de Registro.")), 409
    error = None
    if request.method == "POST":
        protocol = "".join(ch for ch in request.form.get("protocol", "") if ch.isdigit())
        if _too_many_tries(link):
            error = _l("Muitas tentativas com o protocolo errado. Aguarde %(n)s minutos e tente "
                       "novamente.", n=current_app.config["PROTOCOL_LOCK_MINUTES"])
        else:
            try:
                robot_check.verify(request.form.get("altcha"))
            except robot_check.RobotCheckError as exc:
                error = exc.message
            else:
                if protocol != cert_request.protocol:
                    _count_wrong_try(link)
                    audit.record("link.protocol_wrong", actor=client_actor(cert_request),
                                 obj=link, cert_request=cert_request)
                    db.session.commit()
                    error = _l("Protocolo incorreto. Confira o número no e-mail recebido.") \
                        if is_valid_protocol(protocol) or not protocol else \
                        _l("Protocolo inválido: são 10 números, como no e-mail recebido.")
                else:
                    client_session.bind(link)
                    link.last_used_at = cert_request.last_client_activity_at = \
                        utcnow()
                    audit.record("link.open", actor=client_actor(cert_request), obj=link,
                                 cert_request=cert_request)
                    db.session.commit()
                    return redirect(url_for(".instructions"))
    return render_template("documents/entry.html", token=token, error=error), (
        422 if error else 200)


@bp.route("/instrucoes/")
@bp.route("/instrucoes/<int:step>")
def instructions(step=1):
    """The instructions of each kind of document ("Próximo", then "Prosseguir")."""
    cert_request, _ = _bound()
    if cert_request.state == "documents_submitted":
        return redirect(url_for(".done"))
    kinds = [documents.KINDS[k] for k in documents.required_kinds(cert_request.product)]
    if not 1 <= step <= len(kinds):
        abort(404)
    return render_template("documents/instructions.html", cert_request=cert_request,
                           kind=kinds[step - 1], step=step, steps=len(kinds))


def _upload_context(cert_request, problems=None):
    docs = documents.ensure_documents(cert_request)
    return dict(cert_request=cert_request, docs=docs, kinds=documents.KINDS,
                reasons=documents.PENDENCY_REASONS,
                problems=problems or [], max_pages=current_app.config["UPLOAD_MAX_PAGES_PER_KIND"],
                max_mb=current_app.config["UPLOAD_MAX_BYTES"] // (1024 * 1024))


@bp.route("/envio")
@writes_db
def upload_page():
    """"IMPORTAÇÃO DE DOCUMENTOS…": one section per kind, its pages, "Adicionar +"."""
    cert_request, _ = _bound()
    if cert_request.state == "documents_submitted":
        return redirect(url_for(".done"))
    context = _upload_context(cert_request)
    db.session.commit()
    return render_template("documents/upload.html", **context)


def _page_fragment(page, status=200, error=None):
    return render_template("documents/_page.html", page=page, error=error), status


@bp.route("/envio/<kind>/paginas", methods=["POST"])
def add_page(kind):
    """Receive one file (streamed to the storage) as a new page of `kind`.

    Three steps, so that no database transaction (on SQLite: the write lock) is held while
    the file is stored and rendered: check the session and the kind, store the file, then
    record the page in one short transaction that checks again.
    """
    with db_setup.sqlite_lock(immediate=False):
        cert_request, _ = _bound()
        if kind not in documents.required_kinds(cert_request.product):
            abort(404)
        upload = request.files.get("file")
        if upload is None:
            return render_template("documents/_upload_error.html",
                                   error=_l("Escolha um arquivo.")), 422
        replace_id = request.form.get("replace", type=int)
        try:
            replace = _own_page(cert_request, replace_id) if replace_id else None
            documents.check_can_add(cert_request, kind, replace)
        except documents.DocumentError as exc:
            db.session.rollback()
            return render_template("documents/_upload_error.html", error=exc.message), 422
        request_id = cert_request.id
        db.session.rollback()  # end the read: nothing is held while the file is processed
    try:
        stored = documents.store_file(upload.stream)
    except uploads.UploadRejected as exc:
        return render_template("documents/_upload_error.html", error=exc.message), 422
    cert_request = db.session.get(CertificateRequest, request_id)
    replace = _own_page(cert_request, replace_id) if replace_id else None
    try:
        page = documents.add_page(cert_request, kind, stored, upload.filename,
                                  ip=request.remote_addr, actor=client_actor(cert_request),
                                  replace=replace)
        replaced_blobs = documents.blobs_of(replace) if replace is not None else set()
        db.session.commit()
    except documents.DocumentError as exc:
        db.session.rollback()
        documents.release_unreferenced(documents.blobs_of_upload(stored))
        return render_template("documents/_upload_error.html", error=exc.message), 422
    if replaced_blobs:
        documents.release_unreferenced(replaced_blobs)
    if request.headers.get("HX-Request"):
        return _page_fragment(page)
    return redirect(url_for(".upload_page"))


def _own_page(cert_request, page_id) -> DocumentPage | None:
    page = db.session.get(DocumentPage, page_id or 0)
    if page is None or page.document.request_id != cert_request.id:
        raise documents.DocumentError(_l("Página não encontrada."))
    return page


@bp.route("/envio/paginas/<int:page_id>/remover", methods=["POST"])
def remove_page(page_id):
    """Remove a page before sending."""
    cert_request, _ = _bound()
    page = db.session.get(DocumentPage, page_id)
    if page is None or page.document.request_id != cert_request.id:
        abort(404)
    blobs = documents.blobs_of(page)
    try:
        documents.remove_page(cert_request, page, actor=client_actor(cert_request))
        db.session.commit()
    except documents.DocumentError as exc:
        db.session.rollback()
        return render_template("documents/_upload_error.html", error=exc.message), 409
    documents.release_unreferenced(blobs)
    if request.headers.get("HX-Request"):
        return ""
    return redirect(url_for(".upload_page"))


@bp.route("/envio/paginas/<int:page_id>/miniatura")
@serves_files
def thumbnail(page_id):
    """A page's thumbnail, for the client who sent it, while the upload page is open."""
    cert_request, _ = _bound()
    page = db.session.get(DocumentPage, page_id)
    if page is None or page.document.request_id != cert_request.id:
        abort(404)
    return send_blob(page.renditions[0].thumbnail_sha256, "image/jpeg", f"pagina-{page.id}.jpg")


def send_blob(sha256, mime, download_name, as_attachment=False, ranges=False):
    """A stored file with the headers that keep a browser from running it; with `ranges`, it
    answers Range requests (a video player seeking)."""
    storage = get_storage()
    response = send_file(storage.open(sha256), mimetype=mime, as_attachment=as_attachment,
                         download_name=download_name, max_age=0, conditional=False,
                         etag=sha256)
    if ranges:
        response = response.make_conditional(request, accept_ranges=True,
                                             complete_length=storage.size(sha256))
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "private, no-store"
    return response


@bp.route("/envio/confirmar")
def confirm():
    """"Você tem certeza?" (the page behind the dialog, for browsers without JavaScript)."""
    cert_request, _ = _bound()
    if cert_request.state == "documents_submitted":
        return redirect(url_for(".done"))
    return render_template("documents/confirm.html", cert_request=cert_request)


@bp.route("/envio/enviar", methods=["POST"])
def submit():
    """"Continuar": send the documents for review, once, whatever the number of clicks."""
    cert_request, _ = _bound()
    try:
        documents.submit(cert_request, actor=client_actor(cert_request))
        db.session.commit()
    except documents.DocumentError as exc:
        db.session.rollback()
        context = _upload_context(cert_request, problems=[exc.message])
        return render_template("documents/upload.html", **context), 422
    return redirect(url_for(".done"))


@bp.route("/enviado")
def done():
    """"Seus documentos foram enviados com sucesso!"."""
    cert_request, _ = _bound()
    if cert_request.state in workflow.AWAITING_CLIENT:
        return redirect(url_for(".upload_page"))
    return render_template("documents/done.html", cert_request=cert_request)
