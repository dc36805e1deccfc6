"""The agent's console (agent manual steps 7–20): "Entrar na conferência", "Iniciar
conferência", "Iniciar gravação", stills, the face photo, the password, "Sair" and
"Encerrar conferência", and the recording's "processando" → "concluído"."""
from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import lazy_gettext as _l
from flask_login import current_user

from .. import signaling
from ..auth import role_required, staff_blueprint_guard
from ..db_setup import writes_db
from ..extensions import db, sock
from ..models import Conference, ConferenceCapture
from ..services import audit, conference as conference_service, links
from ..services.audit import staff_actor
from .client_documents import send_blob, serves_files

bp = Blueprint("console", __name__, url_prefix="/conferencias")
staff_blueprint_guard(bp, "agent", "verifier", "admin")


def _get(conference_id) -> Conference:
    return db.get_or_404(Conference, conference_id)


def _access_url(conference):
    link = links.current_link(conference.request, "conference")
    return links.url_for_link(link) if link is not None else None


def _panel_context(conference):
    captures = [c for c in conference.captures if c.status != "cancelled"]
    return dict(conference=conference, cert_request=conference.request,
                stills=[c for c in captures if c.kind == "still"],
                faces=[c for c in captures if c.kind == "face"],
                face=conference_service.accepted_face(conference))


@bp.route("/<int:conference_id>")
def room(conference_id):
    """The room as the agent sees it; the call starts with "Iniciar conferência"."""
    conference = _get(conference_id)
    from ..services import scheduling, turn

    ice = turn.ice_servers(f"agent-{conference.id}")

    return render_template("conference/console.html", access_url=_access_url(conference),
                           access_code=scheduling.access_code(conference),
                           ice_servers=ice, ice_policy=turn.transport_policy(),
                           **_panel_context(conference))


@bp.route("/<int:conference_id>/painel")
def panel(conference_id):
    """The side panel (captures, password, recording), refreshed by htmx on room events."""
    conference = _get(conference_id)
    return render_template("conference/_console_panel.html", **_panel_context(conference))


def _act(conference_id, action, success=None):
    conference = _get(conference_id)
    try:
        action(conference)
    except conference_service.ServiceError as exc:
        db.session.rollback()
        message, category = exc.message, "error"
    else:
        db.session.commit()
        message, category = success, "success"
    if request.headers.get("HX-Request"):
        context = _panel_context(conference)
        return render_template("conference/_console_panel.html", message=message,
                               category=category, **context)
    if message:
        flash(message, category)
    return redirect(url_for(".room", conference_id=conference.id))


@bp.route("/<int:conference_id>/iniciar", methods=["POST"])
@role_required("agent", "admin")
def start(conference_id):
    return _act(conference_id, lambda c: conference_service.start(
        c, actor=staff_actor(current_user)))


@bp.route("/<int:conference_id>/gravar", methods=["POST"])
@role_required("agent", "admin")
def record(conference_id):
    return _act(conference_id, lambda c: conference_service.start_recording(
        c, actor=staff_actor(current_user)), _l("Gravação iniciada."))


@bp.route("/<int:conference_id>/capturas", methods=["POST"])
@role_required("agent", "admin")
def request_capture(conference_id):
    kind = request.form.get("kind")
    if kind not in ConferenceCapture.KINDS:
        abort(400)
    message = _l("Pedido enviado: o cliente verá o guia de enquadramento.") if kind == "face" \
        else _l("Capturando a imagem da câmera do cliente…")
    return _act(conference_id, lambda c: conference_service.request_capture(
        c, kind, actor=staff_actor(current_user), staff=current_user), message)


@bp.route("/<int:conference_id>/capturas/<int:capture_id>/decisao", methods=["POST"])
@role_required("agent", "admin")
def decide(conference_id, capture_id):
    accept = request.form.get("decision") == "accept"
    return _act(conference_id, lambda c: conference_service.decide_face(
        c, capture_id, accept, actor=staff_actor(current_user)),
        _l("Foto do rosto aceita.") if accept else _l("Foto recusada. Peça uma nova captura."))


@bp.route("/<int:conference_id>/senha", methods=["POST"])
@role_required("agent", "admin")
def request_password(conference_id):
    return _act(conference_id, lambda c: conference_service.request_password(
        c, actor=staff_actor(current_user)),
        _l("Pedido enviado: o cliente está cadastrando a senha."))


@bp.route("/<int:conference_id>/encerrar", methods=["POST"])
@role_required("agent", "admin")
def end(conference_id):
    conference = _get(conference_id)
    try:
        conference_service.end(conference, actor=staff_actor(current_user))
    except conference_service.ServiceError as exc:
        db.session.rollback()
        flash(exc.message, "error")
    else:
        db.session.commit()
        flash(_l("Conferência encerrada. A gravação está sendo processada; você não precisa "
                 "esperar para continuar."), "success")
    return redirect(url_for(".room", conference_id=conference.id))


@bp.route("/<int:conference_id>/gravacao/estado")
def recording_state(conference_id):
    """The recording's state ("processando" / "concluído"), polled by htmx while processing."""
    conference = _get(conference_id)
    return render_template("conference/_recording.html", conference=conference)


@bp.route("/<int:conference_id>/capturas/<int:capture_id>/imagem")
@writes_db
@serves_files
def capture_image(conference_id, capture_id):
    conference = _get(conference_id)
    capture = db.session.get(ConferenceCapture, capture_id)
    if capture is None or capture.conference_id != conference.id or not capture.file_sha256:
        abort(404)
    audit.record("capture.view", actor=staff_actor(current_user), obj=capture,
                 cert_request=conference.request)
    db.session.commit()
    return send_blob(capture.file_sha256, capture.file.mime,
                 f"{conference.request.protocol}-{capture.kind}-{capture.id}.jpg")


@bp.route("/<int:conference_id>/gravacao/arquivo")
@writes_db
@serves_files
def recording_file(conference_id):
    """The processed recording; answers Range requests so the player can seek."""
    conference = _get(conference_id)
    if conference.recording_state != "done" or not conference.recording_sha256:
        abort(404)
    download = request.args.get("baixar") == "1"
    if download or not request.range:
        audit.record("recording.download" if download else "recording.view",
                     actor=staff_actor(current_user), obj=conference,
                     cert_request=conference.request)
        db.session.commit()
    mime = conference.recording.mime
    ext = "mp4" if mime == "video/mp4" else "webm"
    return send_blob(conference.recording_sha256, mime,
                     f"videoconferencia-{conference.request.protocol}.{ext}",
                     as_attachment=download, ranges=True)


@bp.route("/<int:conference_id>/gravacao/miniatura")
@serves_files
def recording_thumbnail(conference_id):
    conference = _get(conference_id)
    if not conference.recording_thumbnail_sha256:
        abort(404)
    return send_blob(conference.recording_thumbnail_sha256, "image/jpeg", "miniatura.jpg")


@sock.route("/<int:conference_id>/sinal", bp=bp)
def signal(ws, conference_id):
    """The agent's WebSocket: WebRTC offer/answer and the room's events."""
    if not signaling.origin_allowed():
        ws.close(reason=1008, message="origin")
        return
    if not (current_user.has_role("agent") or current_user.has_role("admin")):
        ws.close(reason=1008, message="role")
        return
    conference = _get(conference_id)
    user_id = current_user.id
    db.session.remove()
    signaling.run(ws, conference.id, "agent", staff_id=user_id)
