"""The call itself: starting it, connections to the media process, recording, captures, the
revocation password, leaving and ending.

Scheduling and the client's way in live in `scheduling`; the processing of the recording in
`recording`. Room events reach the browsers through Redis pub/sub (`publish`), sent only
after the transaction that made them commits, so a browser that reacts to an event finds the
data in the database.
"""
import json
import logging
import re
import secrets
from pathlib import Path

from argon2 import PasswordHasher
from flask import current_app
from flask_babel import lazy_gettext as _l
from sqlalchemy import event, select

from ..extensions import db
from ..models import (ConferenceCapture, ConferenceConnection, ConferenceConsent, StoredFile,
                      utcnow)
from ..media import room_channel
from . import ServiceError, audit, workflow

log = logging.getLogger(__name__)

# The manual's consent text, accepted with the checkbox "Estou ciente …" on the device page.
CONSENT_TEXT = _l("Estou ciente do processo de identificação, bem como autorizo a captura de "
                  "fotografias, imagens, voz, documentos de identificação, inclusive para "
                  "manutenção da gravação em dossiê.")
PASSWORD_RE = re.compile(r"[A-Za-z0-9]{8,15}")
CAPTURE_MAX_BYTES = 8 * 1024 * 1024
_password_hasher = PasswordHasher()


MEDIA_DOWN = _l("O servidor de vídeo não respondeu. Tente novamente em alguns segundos; se "
                "continuar, avise o suporte.")


class ConferenceError(ServiceError):
    pass


class PasswordRejected(ConferenceError):
    pass


def _redis():
    from ..jobs import redis_connection

    return redis_connection()


# --- events to the browsers -------------------------------------------------------------

def publish(conference, type_: str, **data):
    """Publish a room event once the current transaction commits."""
    pending = db.session.info.setdefault("videoar_room_events", [])
    pending.append((conference.id, {"event": "room", "type": type_, **data}))


@event.listens_for(db.session.__class__, "after_commit", propagate=True)
def _publish_after_commit(session):
    pending = session.info.pop("videoar_room_events", None)
    if not pending:
        return
    try:
        connection = _redis()
        for conference_id, message in pending:
            connection.publish(room_channel(conference_id), json.dumps(message))
    except Exception as exc:  # the browsers also poll; a lost event is not lost data
        log.warning("room event not published: %s", exc)


@event.listens_for(db.session.__class__, "after_rollback", propagate=True)
def _drop_after_rollback(session):
    session.info.pop("videoar_room_events", None)


# --- the media process --------------------------------------------------------------------

def node_heartbeat(ident: str | None, connection=None) -> dict | None:
    """The heartbeat of one media process, None when it is gone (or `ident` is None)."""
    if not ident:
        return None
    from ..media import NODE_PREFIX

    raw = (connection or _redis()).get(NODE_PREFIX + ident)
    return json.loads(raw) if raw else None


def media_call(op: str, timeout: float | None = None, node: str | None = None,
               **payload) -> dict:
    """A command to a media process (`node`, or any); raises ConferenceError when it does not
    answer."""
    from ..media.client import call

    timeout = timeout or current_app.config["MEDIA_TIMEOUT"]
    try:
        reply = call(_redis(), op, timeout=timeout, node=node, **payload)
    except Exception as exc:
        log.warning("media %s failed: %s", op, exc)
        reply = None
    if reply is None:
        raise ConferenceError(MEDIA_DOWN)
    return reply


def place(conference) -> str:
    """The media process for this room: the one holding it while it lives; otherwise the live
    one with the most free capacity (a process that died or restarted lost the room: the
    recording is marked incomplete). Raises ConferenceError when none can take it."""
    from ..media.client import nodes

    connection = _redis()
    if node_heartbeat(conference.media_node, connection):
        return conference.media_node
    if conference.media_node and conference.recording_state == "recording":
        _mark_media_lost(conference)
    live = [n for n in nodes(connection) if n.get("ident")]
    if not live:
        raise ConferenceError(MEDIA_DOWN)
    # Rooms placed in the last seconds are not in the heartbeat yet (it comes every 5 s).
    recent = {n["ident"]: int(connection.get(f"videoar:media:placed:{n['ident']}") or 0)
              for n in live}
    load = {n["ident"]: n.get("calls", 0) + recent[n["ident"]] for n in live}
    free = [n for n in live if load[n["ident"]] < n.get("capacity", 1)]
    if not free:
        raise ConferenceError(_media_error({"error": "capacity"}))
    best = min(free, key=lambda n: (load[n["ident"]] / max(1, n.get("capacity", 1)),
                                    load[n["ident"]]))["ident"]
    with connection.pipeline() as pipe:
        pipe.incr(f"videoar:media:placed:{best}")
        pipe.expire(f"videoar:media:placed:{best}", 10)
        pipe.execute()
    conference.media_node = best
    return best


def record_dir(conference) -> Path:
    from .recording import recordings_root

    return Path(recordings_root(current_app.config)) / str(conference.id)


def _media_error(reply: dict):
    error = reply.get("error")
    if error == "capacity":
        return _l("O servidor de vídeo está com todas as salas ocupadas. Aguarde o fim de uma "
                  "videoconferência ou peça ao administrador para aumentar a capacidade.")
    if error == "disk":
        return _l("Não há espaço livre em disco para gravar (%(free)s MB livres). Avise o "
                  "administrador antes de continuar.", free=reply.get("free_mb", "?"))
    return _l("O servidor de vídeo recusou a conexão. Recarregue a página e tente de novo.")


# --- the room -----------------------------------------------------------------------------

def is_live(conference) -> bool:
    return conference.state in ("scheduled", "open") and conference.ended_at is None


def start(conference, *, actor):
    """"Iniciar conferência": the agent opens the call; the request is now in conference."""
    if not is_live(conference):
        raise ConferenceError(_l("Esta videoconferência já foi encerrada."))
    if conference.started_at is not None:
        return conference
    now = utcnow()
    conference.started_at = now
    conference.state = "open"
    cert_request = conference.request
    if cert_request.state in ("scheduled", "requested", "documents_approved"):
        workflow.transition(cert_request, "in_conference", actor=actor)
    audit.record("conference.start", actor=actor, obj=conference, cert_request=cert_request)
    publish(conference, "started")
    return conference


def open_connection(conference, role: str, *, staff=None, ip=None, user_agent=None):
    """A browser's new connection to the room; an older one of the same role is replaced."""
    if not is_live(conference):
        raise ConferenceError(_l("Esta videoconferência já foi encerrada."))
    now = utcnow()
    replaced = []
    for old in conference.connections:
        if old.role == role and old.left_at is None:
            old.left_at = now
            old.end_reason = "replaced"
            replaced.append(old.conn_id)
    connection = ConferenceConnection(
        conference=conference, role=role, conn_id=secrets.token_hex(16),
        staff_id=staff.id if staff is not None else None, joined_at=now, ip=ip,
        user_agent=(user_agent or "")[:400] or None,
    )
    db.session.add(connection)
    db.session.flush()
    actor = audit.staff_actor(staff) if staff is not None else audit.client_actor(conference.request)
    audit.record("conference.connect", actor=actor, obj=conference,
                 cert_request=conference.request,
                 details={"role": role, "conn": connection.conn_id, "replaced": replaced})
    if replaced:
        publish(conference, "replaced", role=role, conns=replaced, by=connection.conn_id)
    return connection


def join_media(conference, connection, sdp: str) -> str:
    """Hand the browser's offer to the room's media process; returns the answer's SDP."""
    node = place(conference)
    recording = conference.recording_state == "recording"
    reply = media_call("join", node=node, room=str(conference.id), conn=connection.conn_id,
                       role=connection.role, sdp=sdp, type="offer", record=recording,
                       record_dir=str(record_dir(conference)))
    if not reply.get("ok"):
        raise ConferenceError(_media_error(reply))
    return reply["sdp"]


def close_connection(connection, reason: str):
    """The browser went away ("Sair", a closed tab, a dropped network)."""
    if connection.left_at is not None:
        return
    connection.left_at = utcnow()
    connection.end_reason = reason
    conference = connection.conference
    if is_live(conference) and conference.media_node:
        try:
            media_call("leave", node=conference.media_node, room=str(conference.id),
                       conn=connection.conn_id)
        except ConferenceError:
            pass
    audit.record("conference.disconnect", actor=audit.SYSTEM if reason != "left" else None,
                 obj=conference, cert_request=conference.request,
                 details={"role": connection.role, "conn": connection.conn_id, "reason": reason})
    publish(conference, "left", role=connection.role, conn=connection.conn_id, reason=reason)


def _mark_media_lost(conference):
    if conference.recording_incomplete:
        return
    conference.recording_incomplete = True
    notes = dict(conference.recording_notes or {})
    notes.setdefault("events", []).append({"at": utcnow().isoformat(), "media_lost": True})
    conference.recording_notes = notes
    audit.record("recording.media_lost", actor=audit.SYSTEM, obj=conference,
                 cert_request=conference.request)
    publish(conference, "media_lost")


def check_media(conference) -> bool:
    """True when the media process holding the room is alive; marks the recording incomplete
    (once) when it died or restarted mid-call."""
    if not conference.media_node:
        return True
    alive = node_heartbeat(conference.media_node) is not None
    if not alive and conference.recording_state == "recording":
        _mark_media_lost(conference)
    return alive


def start_recording(conference, *, actor):
    """"Iniciar gravação"."""
    if not is_live(conference) or conference.started_at is None:
        raise ConferenceError(_l("Inicie a conferência antes de gravar."))
    if conference.recording_state == "recording":
        return conference
    if conference.recording_state != "none":
        raise ConferenceError(_l("A gravação desta videoconferência já foi encerrada."))
    reply = media_call("record", node=place(conference), room=str(conference.id), on=True,
                       record_dir=str(record_dir(conference)))
    if not reply.get("ok"):
        audit.record("recording.refused", actor=actor, obj=conference,
                     cert_request=conference.request, details={"error": reply.get("error")})
        raise ConferenceError(_media_error(reply))
    conference.recording_state = "recording"
    conference.recording_started_at = utcnow()
    audit.record("recording.start", actor=actor, obj=conference, cert_request=conference.request)
    publish(conference, "recording", on=True)
    return conference


def end(conference, *, actor):
    """"Encerrar conferência": the session ends, the recording stops, its segments are hashed
    into the dossier at once and the processing job is enqueued. Returns the conference."""
    from . import recording

    if conference.state == "ended":
        return conference
    if not is_live(conference):
        raise ConferenceError(_l("Esta videoconferência já foi encerrada."))
    media_gone = False
    if node_heartbeat(conference.media_node):
        try:
            media_call("end", node=conference.media_node, room=str(conference.id))
        except ConferenceError:
            media_gone = True
    elif conference.media_node:
        media_gone = True
    if media_gone and conference.recording_state == "recording":
        # What the dead media process had closed is on disk; the segments it had open are lost.
        _mark_media_lost(conference)
    now = utcnow()
    conference.state = "ended"
    conference.ended_at = now
    conference.ended_by_id = actor.id if actor.type == "staff" else None
    for connection in conference.connections:
        if connection.left_at is None:
            connection.left_at = now
            connection.end_reason = "ended"
    cert_request = conference.request
    client_came = conference.client_first_entry_at is not None or any(
        c.role == "client" for c in conference.connections)
    if conference.recording_state == "recording":
        conference.recording_stopped_at = now
        recording.ingest_segments(conference)
        if conference.segments:
            recording.enqueue_processing(conference)
        else:
            conference.recording_state = "failed"
            conference.recording_notes = {**(conference.recording_notes or {}),
                                          "error": "no segments were recorded"}
    audit.record("conference.end", actor=actor, obj=conference, cert_request=cert_request,
                 details={"recorded": conference.recording_state != "none",
                          "client_came": client_came})
    if cert_request.state == "in_conference":
        if client_came:
            workflow.transition(cert_request, "conference_done", actor=actor)
        else:
            back = "documents_approved" if cert_request.product.needs_documents else "requested"
            workflow.transition(cert_request, back, actor=actor,
                                reason=str(_l("O cliente não entrou na videoconferência.")))
    publish(conference, "ended")
    return conference


# --- consent, captures, password -------------------------------------------------------------

def record_consent(conference, *, text: str, locale: str, ip=None, user_agent=None):
    consent = ConferenceConsent(conference=conference, text=text, locale=locale,
                                accepted_at=utcnow(), ip=ip,
                                user_agent=(user_agent or "")[:400] or None)
    db.session.add(consent)
    db.session.flush()
    audit.record("conference.consent", actor=audit.client_actor(conference.request),
                 obj=consent, cert_request=conference.request, details={"locale": locale})
    return consent


def request_capture(conference, kind: str, *, actor, staff=None):
    if kind not in ConferenceCapture.KINDS:
        raise ValueError(kind)
    if not is_live(conference) or conference.started_at is None:
        raise ConferenceError(_l("Inicie a conferência antes de capturar imagens."))
    for old in conference.captures:
        if old.kind == kind and old.status == "requested":
            old.status = "cancelled"
    capture = ConferenceCapture(conference=conference, kind=kind, status="requested",
                                requested_by_id=staff.id if staff is not None else None,
                                requested_at=utcnow())
    db.session.add(capture)
    db.session.flush()
    audit.record("capture.request", actor=actor, obj=capture, cert_request=conference.request,
                 details={"kind": kind})
    publish(conference, "capture_requested", capture=capture.id, kind=kind)
    return capture


def receive_capture(conference, capture_id: int, stream):
    """The client's browser sends the image it took for `capture_id` (JPEG or PNG)."""
    from .storage import encrypting
    from .uploads import UploadRejected, store_upload

    capture = db.session.get(ConferenceCapture, capture_id)
    if capture is None or capture.conference_id != conference.id:
        raise ConferenceError(_l("Esta captura não foi pedida pelo agente."))
    if capture.status != "requested":
        raise ConferenceError(_l("Esta captura já foi enviada."))
    try:
        # A face photo and the stills of an ID: encrypted at rest, renditions too (LGPD).
        stored = store_upload(stream, encrypting(), max_bytes=CAPTURE_MAX_BYTES)
    except UploadRejected as exc:
        raise ConferenceError(exc.message) from None
    if stored.processed.mime not in ("image/jpeg", "image/png"):
        raise ConferenceError(_l("A imagem enviada não é uma foto válida."))
    blob = stored.original
    if db.session.get(StoredFile, blob.sha256) is None:
        db.session.add(StoredFile(sha256=blob.sha256, size=blob.size, mime=stored.processed.mime))
    capture.file_sha256 = blob.sha256
    capture.width = stored.processed.width
    capture.height = stored.processed.height
    capture.status = "received"
    capture.received_at = utcnow()
    audit.record("capture.receive", actor=audit.client_actor(conference.request), obj=capture,
                 cert_request=conference.request,
                 details={"kind": capture.kind, "sha256": blob.sha256, "width": capture.width,
                          "height": capture.height})
    publish(conference, "capture_received", capture=capture.id, kind=capture.kind)
    return capture


def decide_face(conference, capture_id: int, accept: bool, *, actor):
    capture = db.session.get(ConferenceCapture, capture_id)
    if capture is None or capture.conference_id != conference.id or capture.kind != "face":
        raise ConferenceError(_l("Foto não encontrada."))
    if capture.status != "received":
        raise ConferenceError(_l("Esta foto já foi avaliada."))
    capture.status = "accepted" if accept else "rejected"
    capture.decided_at = utcnow()
    if accept:
        for other in conference.captures:
            if other is not capture and other.kind == "face" and other.status == "accepted":
                other.status = "rejected"
    audit.record("capture.accept" if accept else "capture.reject", actor=actor, obj=capture,
                 cert_request=conference.request)
    publish(conference, "face_decided", capture=capture.id, accepted=accept)
    return capture


def accepted_face(conference):
    for capture in reversed(conference.captures):
        if capture.kind == "face" and capture.status == "accepted":
            return capture
    return None


def request_password(conference, *, actor):
    if not is_live(conference) or conference.started_at is None:
        raise ConferenceError(_l("Inicie a conferência antes de pedir a senha."))
    audit.record("password.request", actor=actor, obj=conference, cert_request=conference.request)
    publish(conference, "password_requested")


def check_new_password(password: str, confirmation: str):
    """The manual's rules: 8 to 15 letters A–Z/a–z and digits 0–9, typed twice."""
    if not password or not (8 <= len(password) <= 15):
        raise PasswordRejected(_l("A senha deve conter entre 8 e 15 dígitos."))
    if not PASSWORD_RE.fullmatch(password):
        raise PasswordRejected(_l("São aceitas somente letras de A à Z, maiúsculas ou "
                                  "minúsculas e números de 0 à 9."))
    if password != confirmation:
        raise PasswordRejected(_l("A confirmação não é igual à senha. Digite a mesma senha "
                                  "nos dois campos."))


def set_password(conference, password: str, confirmation: str):
    """Store only an argon2 hash of the client's revocation/installation password."""
    if not is_live(conference):
        raise ConferenceError(_l("Esta videoconferência já foi encerrada."))
    check_new_password(password, confirmation)
    cert_request = conference.request
    cert_request.revocation_password_hash = _password_hasher.hash(password)
    cert_request.revocation_password_set_at = utcnow()
    audit.record("password.set", actor=audit.client_actor(cert_request), obj=conference,
                 cert_request=cert_request)
    publish(conference, "password_set")


def verify_password(cert_request, password: str) -> bool:
    if not cert_request.revocation_password_hash:
        return False
    try:
        return _password_hasher.verify(cert_request.revocation_password_hash, password or "")
    except Exception:
        return False


def current_connection(conference, role: str):
    return db.session.execute(
        select(ConferenceConnection).where(ConferenceConnection.conference_id == conference.id,
                                           ConferenceConnection.role == role,
                                           ConferenceConnection.left_at.is_(None))
        .order_by(ConferenceConnection.id.desc())
    ).scalars().first()
