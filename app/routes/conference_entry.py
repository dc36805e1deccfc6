"""The client's way into the videoconference (client manual: the scheduling email's link,
"CONFIRMAÇÃO DE CADASTRO DE TITULAR", then "INSTRUÇÕES VIDEOCONFERÊNCIA" with "Próximo" and
"Prosseguir"). The devices page and the call itself are `conference_call`'s."""
from flask import Blueprint, abort, current_app, redirect, render_template, request, url_for
from flask_babel import lazy_gettext as _l

from .. import client_session
from ..db_setup import writes_db
from ..extensions import db, limiter
from ..models import utcnow
from ..services import audit, links, robot_check, scheduling
from ..services.audit import client_actor

bp = Blueprint("conference_entry", __name__, url_prefix="/conferencia")
PURPOSE = "conference"
INSTRUCTION_PAGES = 2
DEVICES_PATH = "/conferencia/dispositivos"  # conference_call.devices


@bp.errorhandler(401)
def _session_gone(exc):
    return render_template("public/link_error.html", message=_l(
        "Sua sessão expirou. Abra novamente o link recebido por e-mail e informe o código de "
        "acesso.")), 401


def _refused(exc: scheduling.AdmissionError):
    status = 200 if isinstance(exc, scheduling.NotYetOpen) else 409
    return render_template("conference/entry_closed.html", message=exc.message,
                           not_yet=isinstance(exc, scheduling.NotYetOpen)), status


# Tokens are 43 characters: shorter paths (sinal, dispositivos, …) belong to other routes.
@bp.route("/<string(minlength=40, maxlength=100):token>", methods=["GET", "POST"])
@writes_db
@limiter.limit(lambda: current_app.config["CONFERENCE_CODE_RATE_LIMIT"], methods=["POST"])
def entry(token):
    """The email's link: the access code and "Não sou um robô" before the room."""
    try:
        link = links.resolve(token, PURPOSE)
    except links.LinkError as exc:
        return render_template("public/link_error.html", message=exc.message), 404
    cert_request = link.request
    conference = scheduling.live_conference(cert_request)
    try:
        scheduling.check_admission(conference)
    except scheduling.AdmissionError as exc:
        return _refused(exc)
    bound = client_session.current(PURPOSE)
    if bound is not None and bound[1].id == link.id and request.method == "GET":
        return redirect(url_for(".instructions", step=1))
    error = None
    if request.method == "POST":
        try:
            scheduling.ensure_not_paused(conference)
            robot_check.verify(request.form.get("altcha"))
            scheduling.check_code(conference, request.form.get("code", ""))
        except robot_check.RobotCheckError as exc:
            error = exc.message
        except scheduling.CodeError as exc:
            db.session.commit()  # a wrong code counts
            error = exc.message
        else:
            client_session.bind(link)
            now = utcnow()
            link.last_used_at = cert_request.last_client_activity_at = now
            audit.record("link.open", actor=client_actor(cert_request), obj=link,
                         cert_request=cert_request)
            scheduling.mark_client_entry(conference, now)
            db.session.commit()
            return redirect(url_for(".instructions", step=1))
    return render_template("conference/entry_code.html", token=token, error=error,
                           window=conference.window_minutes,
                           scheduled=conference.kind == "scheduled"), (422 if error else 200)


@bp.route("/instrucoes/<int:step>")
def instructions(step):
    """"INSTRUÇÕES VIDEOCONFERÊNCIA": page 1 ("Próximo") and page 2 ("Prosseguir")."""
    cert_request, _ = client_session.require(PURPOSE)
    if not 1 <= step <= INSTRUCTION_PAGES:
        abort(404)
    try:
        scheduling.check_admission(scheduling.live_conference(cert_request))
    except scheduling.AdmissionError as exc:
        return _refused(exc)
    next_url = url_for(".instructions", step=step + 1) if step < INSTRUCTION_PAGES \
        else DEVICES_PATH
    return render_template(f"conference/instructions_{step}.html", cert_request=cert_request,
                           step=step, steps=INSTRUCTION_PAGES, next_url=next_url)
