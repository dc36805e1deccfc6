"""Scheduling the videoconference and the client's way into the room (domain steps 4–5).

- `schedule` (and rescheduling) makes a `Conference` with its access code and link and emails
  the client the manual's "EMISSÃO POR VIDEOCONFERÊNCIA" message with an `.ics` invitation;
  `open_instant_room` is the e-Notariado path (the agent opens the room at once).
- The 6-digit access code is never stored: it is HMAC(SECRET_KEY, "conference-code:" + the
  room's `code_nonce`), so the database alone does not reveal it and the agent can resend the
  same code. Not in the email's record either: the stored body holds a placeholder that
  `complete_email` fills in when the message is sent (`app.services.email.COMPLETERS`). The
  code is never logged nor put in audit details.
- `check_admission` is the 30-minute rule; `check_code` counts wrong codes on the room and
  pauses it after CONFERENCE_CODE_MAX_TRIES; `mark_client_entry` records the first entry.
- `mark_no_show` is run by the periodic job `app.jobs.conference.mark_no_shows`.

Every function writes in the caller's transaction and raises a `ServiceError` subclass with
the message the user reads.
"""
import hashlib
import hmac
import math
import re
import secrets
from datetime import datetime, timedelta, timezone

from flask import current_app
from flask_babel import force_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import select

from ..extensions import db
from ..models import CertificateRequest, Conference, utcnow
from . import ServiceError, audit, email, links, workflow
from .office import get_settings, office_tz

# Friendlier names for the zones people say by a city's name.
ZONE_LABELS = {"America/Sao_Paulo": "Brasília"}
LIVE_STATES = ("scheduled", "open")
# Where the stored email body holds the code of room N, until the message is sent.
CODE_PLACEHOLDER = "[[access-code:{id}]]"
_PLACEHOLDER_RE = re.compile(r"\[\[access-code:(\d+)\]\]")
_LINK_RE = re.compile(r"https?://\S+?/conferencia/[\w-]+")


# The manual's checklist, in the scheduling email ("Lembre-se de certificar-se …").
CHECKLIST = (
    _l("Webcam;"),
    _l("Microfone e auto falantes (preferencialmente headset);"),
    _l("Boa conexão com a Internet;"),
    _l("Estar em local silencioso e iluminado, preferencialmente com fundo neutro;"),
    _l("A sua imagem na câmera deverá estar nítida e não poderá estar usando acessórios como: "
       "óculos, boné, toca ou chapéu."),
    _l("O mesmo documento de identificação importado no sistema, deverá ser mostrado na câmera "
       "durante a validação por videoconferência."),
)


class SchedulingError(ServiceError):
    pass


class TimeRefused(SchedulingError):
    """The date and time asked for cannot be used (the form shows it by the fields)."""


class AdmissionError(ServiceError):
    """The client may not enter the room now; `message` says why and what to do."""


class NotYetOpen(AdmissionError):
    pass


class WindowOver(AdmissionError):
    pass


class RoomEnded(AdmissionError):
    pass


class CodeError(ServiceError):
    pass


class WrongCode(CodeError):
    def __init__(self, message, tries_left: int):
        super().__init__(message)
        self.tries_left = tries_left


class CodePaused(CodeError):
    def __init__(self, message, until: datetime):
        super().__init__(message)
        self.until = until


# --- time -------------------------------------------------------------------------------------

def zone_label(tz_name: str | None = None) -> str:
    """"Brasília" for America/Sao_Paulo, the zone's own name otherwise."""
    tz_name = tz_name or get_settings().time_zone
    return ZONE_LABELS.get(tz_name, tz_name.replace("_", " "))


def to_utc(when: datetime) -> datetime:
    """A moment typed in the office's zone (naive) or given with its zone, in UTC."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=office_tz())
    return when.astimezone(timezone.utc)


def local(value: datetime) -> datetime:
    return value.astimezone(office_tz())


def _date(value: datetime) -> str:
    return local(value).strftime("%d/%m/%Y")


def _time(value: datetime) -> str:
    return local(value).strftime("%H:%M")


# --- the access code --------------------------------------------------------------------------

def access_code(conference) -> str:
    """The room's 6-digit access code (derived, never stored)."""
    key = current_app.config["SECRET_KEY"].encode()
    mac = hmac.new(key, f"conference-code:{conference.code_nonce}".encode(), hashlib.sha256)
    return f"{int.from_bytes(mac.digest(), 'big') % 10**6:06d}"


def _lock(conference) -> Conference:
    """The room's row, locked and read again (two tries at once count twice, not once)."""
    return db.session.execute(
        select(Conference).where(Conference.id == conference.id).with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one()


def paused_until(conference, now=None) -> datetime | None:
    now = now or utcnow()
    if conference.locked_until is not None and conference.locked_until > now:
        return conference.locked_until
    return None


def _paused(until) -> CodePaused:
    return CodePaused(_l("Muitas tentativas com o código errado. A entrada nesta sala está "
                         "pausada até %(time)s (horário de %(tz)s). Tente novamente depois "
                         "desse horário.", time=_time(until), tz=zone_label()), until)


def ensure_not_paused(conference, now=None) -> None:
    """Raise CodePaused while too many wrong codes keep the room's entry paused."""
    until = paused_until(conference, now)
    if until is not None:
        raise _paused(until)


def check_code(conference, typed: str, *, now=None) -> None:
    """Accept the room's access code, compared in constant time.

    A wrong code is counted on the room (and audited, without the code); the
    CONFERENCE_CODE_MAX_TRIES-th pauses the room for CONFERENCE_CODE_LOCK_MINUTES. While
    paused, no code is accepted, not even the right one. Raises WrongCode (with the tries
    left) or CodePaused (with the time it ends). The caller commits in both cases.
    """
    now = now or utcnow()
    conference = _lock(conference)
    until = paused_until(conference, now)
    if until is not None:
        raise _paused(until)
    digits = "".join(ch for ch in (typed or "") if ch.isdigit())[:12]
    if hmac.compare_digest(digits.encode(), access_code(conference).encode()):
        conference.failed_codes = 0
        conference.locked_until = None
        return
    cfg = current_app.config
    conference.failed_codes = (conference.failed_codes or 0) + 1
    tries_left = cfg["CONFERENCE_CODE_MAX_TRIES"] - conference.failed_codes
    actor = audit.client_actor(conference.request)
    if tries_left <= 0:
        conference.failed_codes = 0
        conference.locked_until = now + timedelta(minutes=cfg["CONFERENCE_CODE_LOCK_MINUTES"])
        audit.record("conference.code_paused", actor=actor, obj=conference,
                     cert_request=conference.request,
                     details={"until": conference.locked_until.isoformat()})
        raise _paused(conference.locked_until)
    audit.record("conference.code_wrong", actor=actor, obj=conference,
                 cert_request=conference.request, details={"tries_left": tries_left})
    if len(digits) != 6:
        message = _l("O código de acesso tem 6 números. Confira o e-mail recebido. Tentativas "
                     "restantes: %(n)s.", n=tries_left)
    else:
        message = _l("Código de acesso incorreto. Confira o código no e-mail recebido. "
                     "Tentativas restantes: %(n)s.", n=tries_left)
    raise WrongCode(message, tries_left)


# --- admission --------------------------------------------------------------------------------

def live_conference(cert_request) -> Conference | None:
    """The request's latest room that was not cancelled (it may have ended)."""
    for conference in reversed(cert_request.conferences):
        if conference.state != "cancelled":
            return conference
    return None


def _window_over(conference):
    return WindowOver(_l("O prazo de %(n)s minutos para entrar na videoconferência terminou. "
                         "Aguarde o contato do Agente de Registro para reagendar.",
                         n=conference.window_minutes))


def check_admission(conference, now=None) -> None:
    """Whether the client may enter `conference` now; raises an AdmissionError if not.

    A room that ended (or was cancelled) admits no one. The client's first entry is admitted
    from `opens_at`; in a scheduled room only for `window_minutes` after it, unless the agent
    has already started the call (the agent is there, waiting). After the first entry, the
    client may come back (a reload, a dropped connection) until the room ends.
    """
    now = now or utcnow()
    if conference is None or conference.state == "cancelled" or conference.state == "ended" \
            or (conference.ended_at is not None and conference.state != "no_show"):
        raise RoomEnded(_l("Esta videoconferência já foi encerrada."))
    if conference.state == "no_show":
        raise _window_over(conference)
    if conference.client_first_entry_at is not None:
        return
    if now < conference.opens_at:
        raise NotYetOpen(_l("A sala abre em %(date)s às %(time)s (horário de %(tz)s). Volte "
                            "nesse horário.", date=_date(conference.opens_at),
                            time=_time(conference.opens_at), tz=zone_label()))
    if conference.kind == "scheduled" and now >= conference.closes_at \
            and conference.started_at is None:
        raise _window_over(conference)


def mark_client_entry(conference, now=None) -> bool:
    """Record the client's first entry into the room (once); True when it was the first."""
    if conference.client_first_entry_at is not None:
        return False
    conference.client_first_entry_at = now or utcnow()
    conference.request.last_client_activity_at = conference.client_first_entry_at
    audit.record("conference.client_entry", actor=audit.client_actor(conference.request),
                 obj=conference, cert_request=conference.request)
    return True


# --- scheduling -------------------------------------------------------------------------------

def retire_live_rooms(cert_request, actor, reason: str) -> list[int]:
    """Cancel the request's rooms still waiting (their codes die with them); a room whose call
    had started ends instead."""
    now = utcnow()
    retired = []
    for old in cert_request.conferences:
        if old.state not in LIVE_STATES:
            continue
        old.state = "ended" if old.started_at is not None else "cancelled"
        old.ended_at = now
        audit.record("conference.cancel", actor=actor, obj=old, cert_request=cert_request,
                     reason=reason, details={"state": old.state})
        retired.append(old.id)
    return retired


def _new_room(cert_request, *, kind, state, opens_at, agent, now) -> Conference:
    conference = Conference(
        request=cert_request, kind=kind, state=state, opens_at=opens_at,
        window_minutes=current_app.config["CONFERENCE_WINDOW_MINUTES"],
        code_nonce=secrets.token_hex(16), agent=agent, created_by=agent, created_at=now,
    )
    db.session.add(conference)
    db.session.flush()
    return conference


def _link_days(opens_at, now) -> int:
    """The link lives LINK_VALID_DAYS past the day of the appointment."""
    ahead = max(0.0, (opens_at - now).total_seconds()) / 86400
    return current_app.config["LINK_VALID_DAYS"] + math.ceil(ahead)


def schedule(cert_request, when: datetime, agent, *, now=None) -> Conference:
    """Schedule the videoconference at `when` (naive: in the office's zone) with `agent`.

    From `documents_approved` the request moves to `scheduled`. From `scheduled` it is a
    reschedule: the old room is cancelled (its code and link stop working) and a new room,
    code and link replace it. Either way the client gets the email with the code, the link,
    the date and time and an `.ics` invitation. Raises SchedulingError for a request in
    another state or a moment in the past.
    """
    now = now or utcnow()
    if cert_request.state not in ("documents_approved", "scheduled"):
        raise SchedulingError(_l("A videoconferência só pode ser agendada depois que os "
                                 "documentos forem aprovados."))
    opens_at = to_utc(when)
    if opens_at < now.replace(second=0, microsecond=0):
        raise TimeRefused(_l("Escolha uma data e um horário que ainda não passaram."))
    actor = audit.staff_actor(agent)
    rescheduling = cert_request.state == "scheduled"
    retired = retire_live_rooms(cert_request, actor, "reagendamento")
    conference = _new_room(cert_request, kind="scheduled", state="scheduled", opens_at=opens_at,
                           agent=agent, now=now)
    link = links.create_link(cert_request, "conference", days=_link_days(opens_at, now),
                             actor=actor)
    details = {"conference_id": conference.id, "opens_at": opens_at.isoformat(),
               "window_minutes": conference.window_minutes}
    if not rescheduling:
        workflow.transition(cert_request, "scheduled", actor=actor, details=details)
    if cert_request.assigned_agent is None and agent.is_agent:
        cert_request.assigned_agent = agent
    audit.record("conference.reschedule" if rescheduling else "conference.schedule",
                 actor=actor, obj=conference, cert_request=cert_request,
                 details={**details, "replaces": retired})
    send_invitation(conference, link, rescheduled=rescheduling)
    return conference


def open_instant_room(cert_request, agent, *, now=None) -> Conference:
    """The e-Notariado path ("Iniciar"): open the room now, with its link and code, and email
    the client the code. Only for a product without documents, while the request is
    `requested`; a room already open is returned as it is (a second click)."""
    now = now or utcnow()
    if cert_request.product.needs_documents:
        raise SchedulingError(_l("Este produto exige documentos: agende a videoconferência "
                                 "depois da aprovação."))
    if cert_request.state != "requested":
        raise SchedulingError(_l("Esta solicitação está em “%(state)s”: não é possível abrir "
                                 "a sala agora.", state=workflow.label(cert_request.state)))
    current = live_conference(cert_request)
    if current is not None and current.state in LIVE_STATES and current.kind == "instant":
        return current
    actor = audit.staff_actor(agent)
    retire_live_rooms(cert_request, actor, "nova sala")
    conference = _new_room(cert_request, kind="instant", state="open", opens_at=now, agent=agent,
                           now=now)
    link = links.create_link(cert_request, "conference", actor=actor)
    if cert_request.assigned_agent is None and agent.is_agent:
        cert_request.assigned_agent = agent
    audit.record("conference.open", actor=actor, obj=conference, cert_request=cert_request,
                 details={"conference_id": conference.id, "kind": "instant"})
    send_invitation(conference, link)
    return conference


def current_link(conference):
    """The live link of `conference` (the request's current conference link), or None."""
    if conference is None or conference.state not in LIVE_STATES:
        return None
    link = links.current_link(conference.request, "conference")
    if link is None or link.expires_at <= utcnow():
        return None
    return link


def resend_invitation(conference, agent) -> None:
    """"Reenviar e-mail": the same code and link, once more."""
    link = current_link(conference)
    if link is None or live_conference(conference.request) is not conference:
        raise SchedulingError(_l("Esta videoconferência não está mais aberta: agende outra."))
    audit.record("conference.resend", actor=audit.staff_actor(agent), obj=conference,
                 cert_request=conference.request)
    send_invitation(conference, link, resent=True)


# --- emails -----------------------------------------------------------------------------------

def email_context(conference) -> dict:
    return dict(conference=conference, date=_date(conference.opens_at),
                time=_time(conference.opens_at), closes=_time(conference.closes_at),
                tz=zone_label(), window=conference.window_minutes, checklist=CHECKLIST,
                code=CODE_PLACEHOLDER.format(id=conference.id))


def send_invitation(conference, link, *, rescheduled=False, resent=False):
    """The manual's email: the code (filled in when sent), protocol, link, date and time."""
    cert_request = conference.request
    with force_locale("pt_BR"):
        if conference.kind == "instant":
            kind, template = "conference_instant", "conference_instant"
            subject = _("Sua videoconferência está pronta — protocolo %(protocol)s",
                        protocol=cert_request.protocol)
        else:
            kind, template = "conference_scheduled", "conference_scheduled"
            subject = (_("Videoconferência reagendada — protocolo %(protocol)s",
                         protocol=cert_request.protocol) if rescheduled else
                       _("Videoconferência agendada — protocolo %(protocol)s",
                         protocol=cert_request.protocol))
        return email.queue_email(kind, cert_request.holder.email, subject, template,
                                 cert_request=cert_request, link_url=links.url_for_link(link),
                                 link=link, rescheduled=rescheduled, resent=resent,
                                 **email_context(conference))


def _conference_of(message) -> Conference:
    """The room whose code placeholder the stored message holds (of the message's request)."""
    match = _PLACEHOLDER_RE.search(message.body_text)
    conference = db.session.get(Conference, int(match.group(1))) if match else None
    if conference is None or conference.request_id != message.request_id:
        raise LookupError(f"email {message.id}: no conference of its request")
    return conference


def complete_email(message):
    """Called when the message is sent (`email.build_mime`): the code in place of its
    placeholder and, for a scheduled room, the `.ics` invitation."""
    conference = _conference_of(message)
    code = access_code(conference)

    def fill(text):
        return _PLACEHOLDER_RE.sub(
            lambda m: code if int(m.group(1)) == conference.id else m.group(0), text)

    attachments = []
    if conference.kind == "scheduled":
        # The link this message gives (a later reschedule makes another one).
        found = _LINK_RE.search(message.body_text)
        link_url = found.group(0) if found else None
        attachments.append(email.Attachment(
            "videoconferencia.ics", calendar_invitation(conference, link_url, message),
            "calendar", {"method": "REQUEST"}))
    return fill(message.body_text), fill(message.body_html), attachments


def calendar_uid(conference) -> str:
    """Stable per room, and says nothing of its code."""
    tag = hashlib.sha256(f"conference-uid:{conference.code_nonce}".encode()).hexdigest()[:16]
    domain = email.sender_domain()
    return f"videoar-conference-{conference.id}-{tag}@{domain}"


def calendar_invitation(conference, link_url, message=None) -> str:
    """The room as an iCalendar invitation (METHOD:REQUEST), in the office's zone with its
    VTIMEZONE. Carries the link but never the access code."""
    from icalendar import Calendar, Event, vCalAddress, vText

    settings = get_settings()
    tz = office_tz()
    cert_request = conference.request
    cal = Calendar()
    cal.add("prodid", "-//VideoAR//Videoconferencia//PT-BR")
    cal.add("version", "2.0")
    cal.add("method", "REQUEST")
    event = Event()
    event.add("uid", calendar_uid(conference))
    event.add("dtstamp", (message.created_at if message is not None else conference.created_at)
              .astimezone(timezone.utc))
    event.add("dtstart", conference.opens_at.astimezone(tz))
    event.add("dtend", conference.closes_at.astimezone(tz))
    event.add("sequence", 0)
    with force_locale("pt_BR"):
        event.add("summary", _("Videoconferência para emissão do certificado digital — "
                               "protocolo %(protocol)s", protocol=cert_request.protocol))
        lines = [
            _("Os seus documentos foram aprovados e estamos prontos para realizar o processo de "
              "videoconferência."),
            _("Protocolo: %(protocol)s", protocol=cert_request.protocol),
            _("Você terá o prazo de %(n)s minutos para acessar a videoconferência; caso não seja "
              "possível, aguarde o contato do Agente de Registro para o reagendamento da "
              "sessão.", n=conference.window_minutes),
            _("O código de acesso está no e-mail recebido."),
        ]
        if link_url:
            lines.insert(2, _("Sala virtual: %(url)s", url=link_url))
    event.add("description", "\n\n".join(lines))
    if link_url:
        event.add("location", link_url)
        event.add("url", link_url)
    organizer_email = settings.email or email.sender_address()
    organizer = vCalAddress(f"mailto:{organizer_email}")
    organizer.params["cn"] = vText(settings.authority_name or "VideoAR")
    event.add("organizer", organizer)
    attendee = vCalAddress(f"mailto:{cert_request.holder.email}")
    attendee.params["cn"] = vText(cert_request.holder.name)
    attendee.params["role"] = vText("REQ-PARTICIPANT")
    attendee.params["rsvp"] = vText("FALSE")
    event.add("attendee", attendee)
    cal.add_component(event)
    day = local(conference.opens_at).date()
    cal.add_missing_timezones(first_date=day - timedelta(days=1),
                              last_date=day + timedelta(days=2))
    return cal.to_ical().decode()


# --- no-show ----------------------------------------------------------------------------------

def no_show_candidates(now=None) -> list[int]:
    """Ids of scheduled rooms whose time has come, without the client or the agent yet."""
    now = now or utcnow()
    return db.session.execute(
        select(Conference.id).where(
            Conference.kind == "scheduled", Conference.state.in_(LIVE_STATES),
            Conference.client_first_entry_at.is_(None), Conference.started_at.is_(None),
            Conference.opens_at <= now,
        ).order_by(Conference.id)
    ).scalars().all()


def mark_no_show(conference_id: int, now=None) -> bool:
    """End a scheduled room whose window closed without the client nor the agent: the room
    becomes `no_show`, the request goes back to `documents_approved` and the client is told.
    Locks the request and the room and reads them again, so two runs at once act once.
    Returns whether it acted."""
    now = now or utcnow()
    request_id = db.session.execute(
        select(Conference.request_id).where(Conference.id == conference_id)).scalar_one_or_none()
    if request_id is None:
        return False
    cert_request = db.session.execute(
        select(CertificateRequest).where(CertificateRequest.id == request_id).with_for_update()
        .execution_options(populate_existing=True)).scalar_one()
    conference = db.session.execute(
        select(Conference).where(Conference.id == conference_id).with_for_update()
        .execution_options(populate_existing=True)).scalar_one()
    if conference.state not in LIVE_STATES or conference.kind != "scheduled" \
            or conference.client_first_entry_at is not None or conference.started_at is not None \
            or conference.closes_at > now:
        return False
    conference.ended_at = now
    if cert_request.state != "scheduled":
        # The request moved on (cancelled, expired): the room just goes.
        conference.state = "cancelled"
        audit.record("conference.cancel", actor=audit.SYSTEM, obj=conference,
                     cert_request=cert_request, reason="solicitação encerrada",
                     details={"state": "cancelled"})
        return True
    conference.state = "no_show"
    reason = (f"o cliente não entrou na videoconferência nos {conference.window_minutes} "
              "minutos do agendamento")
    audit.record("conference.no_show", actor=audit.SYSTEM, obj=conference,
                 cert_request=cert_request, reason=reason,
                 details={"opens_at": conference.opens_at.isoformat()})
    workflow.transition(cert_request, "documents_approved", actor=audit.SYSTEM, reason=reason,
                        details={"conference_id": conference.id})
    with force_locale("pt_BR"):
        email.queue_email("conference_no_show", cert_request.holder.email,
                          _("Videoconferência não realizada — protocolo %(protocol)s",
                            protocol=cert_request.protocol),
                          "conference_no_show", cert_request=cert_request,
                          **email_context(conference))
    return True
