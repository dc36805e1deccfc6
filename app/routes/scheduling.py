"""The agent's side of scheduling (request page): "Agendar videoconferência", "Reagendar",
"Reenviar e-mail", and opening the e-Notariado room at once."""
from datetime import datetime

from flask import Blueprint, flash, g, redirect, url_for
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from wtforms import DateField, TimeField
from wtforms.validators import DataRequired

from ..auth import staff_blueprint_guard
from ..extensions import db
from ..forms import REQUIRED, FlaskForm
from ..models import CertificateRequest, Conference, utcnow
from ..services import links, scheduling, workflow

bp = Blueprint("scheduling", __name__, url_prefix="/solicitacoes")
staff_blueprint_guard(bp, "agent", "admin")


class ScheduleConferenceForm(FlaskForm):
    """The date and time agreed with the client, in the office's time zone."""

    date = DateField(_l("Data"), validators=[DataRequired(REQUIRED)])
    time = TimeField(_l("Horário"), validators=[DataRequired(REQUIRED)])

    def when(self) -> datetime:
        return datetime.combine(self.date.data, self.time.data)


def room_path(conference) -> str:
    """The agent's room ("Entrar na conferência", endpoint console.room)."""
    return f"/conferencias/{conference.id}"


@bp.app_context_processor
def _conference_panel():
    return {"conference_panel": conference_panel, "now_utc": utcnow}


def conference_panel(cert_request) -> dict:
    """What templates/conference/_agent_section.html shows for `cert_request`."""
    conference = scheduling.live_conference(cert_request)
    live = conference if conference is not None and conference.state in scheduling.LIVE_STATES \
        and cert_request.state in workflow.OPEN_STATES else None
    link = scheduling.current_link(live) if live is not None else None
    product = cert_request.product
    return dict(
        conference=live,
        link_url=links.url_for_link(link) if link is not None else None,
        room_path=room_path(live) if live is not None else None,
        can_schedule=cert_request.state == "documents_approved",
        can_reschedule=cert_request.state == "scheduled" and live is not None
        and live.kind == "scheduled",
        can_open_instant=not product.needs_documents and cert_request.state == "requested"
        and live is None,
        ecpf=product.kind == "e_cpf",
        form=g.get("schedule_form") or ScheduleConferenceForm(formdata=None),
        tz=scheduling.zone_label(),
        past=[c for c in reversed(cert_request.conferences) if c is not live],
        may_act=current_user.is_authenticated and (current_user.is_agent or current_user.is_admin),
    )


def _get(request_id) -> CertificateRequest:
    return db.get_or_404(CertificateRequest, request_id)


def _back(cert_request):
    return redirect(url_for("requests.detail", request_id=cert_request.id) + "#videoconferencia")


def _schedule(request_id, done_message):
    cert_request = _get(request_id)
    form = ScheduleConferenceForm()
    if form.validate_on_submit():
        try:
            scheduling.schedule(cert_request, form.when(), current_user)
        except scheduling.TimeRefused as exc:
            db.session.rollback()
            form.date.errors = [*form.date.errors, exc.message]
        except scheduling.SchedulingError as exc:
            db.session.rollback()
            flash(exc.message, "error")
            return _back(cert_request)
        else:
            db.session.commit()
            flash(done_message, "success")
            return _back(cert_request)
    # The request page again, with this form and its errors.
    from .requests import detail

    g.schedule_form = form
    return detail(request_id), 422


@bp.route("/<int:request_id>/videoconferencia/agendar", methods=["POST"])
def schedule_conference(request_id):
    """"Agendar videoconferência": the room, its code and link, the email to the client."""
    return _schedule(request_id, _l("Videoconferência agendada. O cliente recebeu o e-mail com "
                                    "o código de acesso e o link."))


@bp.route("/<int:request_id>/videoconferencia/reagendar", methods=["POST"])
def reschedule_conference(request_id):
    """"Reagendar": a new room, code and link; the old ones stop working."""
    return _schedule(request_id, _l("Videoconferência reagendada. O cliente recebeu um novo "
                                    "e-mail; o código e o link anteriores não valem mais."))


@bp.route("/<int:request_id>/videoconferencia/<int:conference_id>/reenviar", methods=["POST"])
def resend_invitation(request_id, conference_id):
    """"Reenviar e-mail": the same code and link."""
    cert_request = _get(request_id)
    conference = db.get_or_404(Conference, conference_id)
    if conference.request_id != cert_request.id:
        return _back(cert_request)
    try:
        scheduling.resend_invitation(conference, current_user)
    except scheduling.SchedulingError as exc:
        db.session.rollback()
        flash(exc.message, "error")
    else:
        db.session.commit()
        flash(_l("E-mail reenviado ao cliente, com o mesmo código de acesso."), "success")
    return _back(cert_request)


@bp.route("/<int:request_id>/videoconferencia/abrir", methods=["POST"])
def open_instant_room(request_id):
    """Open the e-Notariado room now (again, after a call the client did not join)."""
    cert_request = _get(request_id)
    try:
        scheduling.open_instant_room(cert_request, current_user)
    except scheduling.SchedulingError as exc:
        db.session.rollback()
        flash(exc.message, "error")
    else:
        db.session.commit()
        flash(_l("Sala aberta. Copie o link de acesso e envie ao cliente; o código de acesso "
                 "foi enviado por e-mail."), "success")
    return _back(cert_request)
