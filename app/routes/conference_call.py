"""The client's side of the call (client manual: "Ao acessar a videoconferência" to the end):
the device page with the consent, the call, captures taken by the client's own browser, and
"Cadastre sua senha". The way in (access code, instructions) is `conference_entry`."""
from flask import Blueprint, current_app, render_template, request
from flask_babel import get_locale
from flask_babel import lazy_gettext as _l

from .. import client_session, signaling
from ..extensions import db, limiter, sock
from ..models import utcnow
from ..services import conference as conference_service
from ..services.audit import client_ip
from ..services.conference import CONSENT_TEXT

bp = Blueprint("conference_call", __name__, url_prefix="/conferencia")
PURPOSE = "conference"


@bp.errorhandler(401)
def _session_gone(exc):
    return render_template("public/link_error.html", message=_l(
        "Sua sessão expirou. Abra novamente o link recebido por e-mail e informe o código de "
        "acesso.")), 401


def _live_conference(cert_request):
    conferences = [c for c in cert_request.conferences if c.state != "cancelled"]
    return conferences[-1] if conferences else None


def _admit(conference):
    """Raise ServiceError when the client may not be in this room now."""
    if conference is None:
        raise conference_service.ConferenceError(_l("Não há videoconferência marcada."))
    from ..services import scheduling

    check = getattr(scheduling, "check_admission", None)
    if check is not None:
        check(conference, utcnow())
    elif not conference_service.is_live(conference):
        raise conference_service.ConferenceError(_l("Esta videoconferência já foi encerrada."))


def _bound():
    cert_request, link = client_session.require(PURPOSE)
    conference = _live_conference(cert_request)
    return cert_request, conference


@bp.route("/dispositivos")
def devices():
    """"CONFIRMAÇÃO DE CADASTRO DE TITULAR/RESPONSÁVEL": camera, microphone, consent, and then,
    on the same page (the camera stays open), the call itself."""
    cert_request, conference = _bound()
    try:
        _admit(conference)
    except conference_service.ServiceError as exc:
        return render_template("public/link_error.html", message=exc.message), 409
    from ..services import turn

    ice = turn.ice_servers(f"client-{conference.id}")
    return render_template("conference/call_client.html", cert_request=cert_request,
                           conference=conference, consent_text=CONSENT_TEXT, ice_servers=ice,
                           ice_policy=turn.transport_policy())


@bp.route("/consentimento", methods=["POST"])
def consent():
    """The "Estou ciente …" box: the exact text, time, address and browser go to the dossier."""
    cert_request, conference = _bound()
    if request.form.get("accept") != "1":
        return {"error": str(_l("Marque “Estou ciente” para continuar."))}, 422
    try:
        _admit(conference)
    except conference_service.ServiceError as exc:
        return {"error": str(exc.message)}, 409
    conference_service.record_consent(conference, text=str(CONSENT_TEXT),
                                      locale=str(get_locale()), ip=client_ip(),
                                      user_agent=request.user_agent.string)
    db.session.commit()
    return {"ok": True}


@bp.route("/captura/<int:capture_id>", methods=["POST"])
def capture(capture_id):
    """The image the client's browser took from its camera for the agent's request."""
    cert_request, conference = _bound()
    upload = request.files.get("image")
    if upload is None:
        return {"error": str(_l("Nenhuma imagem recebida."))}, 400
    try:
        captured = conference_service.receive_capture(conference, capture_id, upload.stream)
    except conference_service.ServiceError as exc:
        db.session.rollback()
        return {"error": str(exc.message)}, 422
    db.session.commit()
    return {"ok": True, "width": captured.width, "height": captured.height}


@bp.route("/senha", methods=["POST"])
@limiter.limit(lambda: current_app.config["PASSWORD_RATE_LIMIT"])
def password():
    """"Cadastre sua senha" → "Senha cadastrada com sucesso"."""
    cert_request, conference = _bound()
    try:
        conference_service.set_password(conference, request.form.get("password", ""),
                                        request.form.get("confirmation", ""))
    except conference_service.ServiceError as exc:
        db.session.rollback()
        return render_template("conference/_password.html", error=exc.message), 422
    db.session.commit()
    return render_template("conference/_password.html", done=True)


@sock.route("/sinal", bp=bp)
def signal(ws):
    """The client's WebSocket: WebRTC offer/answer and the room's events."""
    if not signaling.origin_allowed():
        ws.close(reason=1008, message="origin")
        return
    bound = client_session.current(PURPOSE)
    if bound is None:
        ws.close(reason=1008, message="session")
        return
    conference = _live_conference(bound[0])
    if conference is None:
        ws.close(reason=1008, message="room")
        return
    conference_id = conference.id
    db.session.remove()
    signaling.run(ws, conference_id, "client", admit=_admit)
