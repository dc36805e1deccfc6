"""The life of a certificate request: its states and the only place they change."""
from flask_babel import lazy_gettext as _l

from ..models import utcnow
from . import ServiceError, audit

STATE_LABELS = {
    "requested": _l("Solicitado"),
    "documents_pending": _l("Aguardando documentos"),
    "documents_submitted": _l("Documentos enviados"),
    "pendency": _l("Pendência"),
    "documents_approved": _l("Documentos aprovados"),
    "scheduled": _l("Agendado"),
    "in_conference": _l("Em videoconferência"),
    "conference_done": _l("Videoconferência concluída"),
    "second_check": _l("Segunda conferência"),
    "approved": _l("Aprovado"),
    "issued": _l("Emitido"),
    "revoked": _l("Revogado"),
    "cancelled": _l("Cancelado"),
    "expired": _l("Expirado"),
}
STATES = tuple(STATE_LABELS)

_ENDS = ("cancelled", "expired")
TRANSITIONS = {
    # e-Notariado skips documents and scheduling: the agent opens the room at once.
    "requested": ("documents_pending", "in_conference", *_ENDS),
    "documents_pending": ("documents_submitted", *_ENDS),
    "documents_submitted": ("pendency", "documents_approved", "cancelled"),
    "pendency": ("documents_submitted", *_ENDS),
    "documents_approved": ("scheduled", *_ENDS),
    # A no-show goes back to scheduling.
    "scheduled": ("in_conference", "documents_approved", *_ENDS),
    # A room ended without the client: back to scheduling (e-Notariado: to a new room).
    "in_conference": ("conference_done", "documents_approved", "requested", "cancelled"),
    # A verifier's return lands in conference_done; the agent may redo the call.
    "conference_done": ("second_check", "approved", "documents_approved", "cancelled"),
    "second_check": ("approved", "conference_done", "cancelled"),
    "approved": ("issued", *_ENDS),
    "issued": ("revoked",),
    "revoked": (),
    "cancelled": (),
    "expired": (),
}
# States in which the client is expected to act: reminders and expiry apply to these.
AWAITING_CLIENT = ("documents_pending", "pendency")
OPEN_STATES = tuple(s for s in STATES if s not in ("issued", "revoked", "cancelled", "expired"))


class InvalidTransition(ServiceError):
    pass


def label(state: str) -> str:
    return str(STATE_LABELS.get(state, state))


def can_transition(cert_request, to_state: str) -> bool:
    return to_state in TRANSITIONS.get(cert_request.state, ())


def transition(cert_request, to_state: str, *, actor=None, reason=None, details=None):
    """Move `cert_request` to `to_state` and audit it, in the caller's transaction.

    Raises InvalidTransition when the life of a request does not allow that step from its
    current state (for example a second click on a button that already acted).
    """
    from_state = cert_request.state
    if not can_transition(cert_request, to_state):
        raise InvalidTransition(
            _l("Esta solicitação está em “%(current)s” e não pode passar para “%(target)s”.",
               current=label(from_state), target=label(to_state))
        )
    cert_request.state = to_state
    cert_request.state_changed_at = utcnow()
    audit.record(
        "request.transition", actor=actor, obj=cert_request, cert_request=cert_request,
        from_state=from_state, to_state=to_state, reason=reason, details=details,
    )
    return cert_request
