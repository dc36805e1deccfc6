"""WebSocket signaling between a browser and the media process, and room events to the browser.

One WebSocket per browser page (flask-sock, one thread of the web process while it lasts).
The browser sends `{"type": "offer", "sdp"}`; the handler records a new connection (replacing
an older one of the same role), hands the offer to the media process over Redis and answers
`{"type": "answer", "sdp"}` or `{"type": "error", "message"}`. Room events published on Redis
(`videoar:room:<id>`, by `web` after a commit or by the media process) are forwarded as
`{"type": "event", ...}`, filtered by role. Every few seconds the handler checks that the media
process holding the room is the same one (a restart loses the segment in progress: the
recording is marked incomplete and the agent told) and that the room is still live.

Any web process can serve any participant: the only shared state is the database and Redis.
"""
import json
import logging
import time
from urllib.parse import urlsplit

from flask import current_app, request
from flask_babel import gettext as _
from simple_websocket import ConnectionClosed

from .db_setup import sqlite_lock
from .extensions import db
from .jobs import redis_connection
from .media import room_channel
from .models import Conference, ConferenceConnection
from .services import conference as conference_service

log = logging.getLogger(__name__)
CHECK_SECONDS = 3

# Which room events each side sees.
CLIENT_EVENTS = {"started", "capture_requested", "password_requested", "password_set",
                 "face_decided", "recording", "ended", "replaced", "media_lost", "left"}


def origin_allowed() -> bool:
    """A WebSocket upgrade must come from one of our own pages."""
    origin = request.headers.get("Origin")
    if not origin:
        return False
    allowed = {_origin(current_app.config["PUBLIC_URL"]), _origin(request.host_url)}
    return _origin(origin) in allowed


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def _unit(fn):
    """Run `fn` as one short transaction (taking SQLite's write lock up front)."""
    with sqlite_lock(True):
        try:
            result = fn()
            db.session.commit()
            return result
        except Exception:
            db.session.rollback()
            raise
        finally:
            db.session.remove()


def _send(ws, **message):
    ws.send(json.dumps(message))


def run(ws, conference_id: int, role: str, *, staff_id=None, admit=None):
    """Serve one browser until it goes away. `admit(conference)` raises ServiceError when
    this client may not (re)join now."""
    ip = request.remote_addr
    user_agent = request.user_agent.string
    connection = redis_connection()
    pubsub = connection.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(room_channel(conference_id))
    state = {"conn": None, "closed": False}
    last_check = time.monotonic()
    try:
        while not state["closed"]:
            raw = ws.receive(timeout=0.2)
            if raw:
                _handle(ws, raw, conference_id, role, staff_id, admit, ip, user_agent, state)
            while True:
                message = pubsub.get_message(timeout=0)
                if message is None:
                    break
                _forward(ws, message, role, state)
            if time.monotonic() - last_check > CHECK_SECONDS:
                last_check = time.monotonic()
                _check(ws, conference_id, role, state)
    except ConnectionClosed:
        pass
    finally:
        try:
            pubsub.close()
        except Exception:
            pass
        if state["conn"] and not state.get("replaced"):
            _unit(lambda: _close(state["conn"], "left" if state.get("leaving") else "dropped"))


def _close(conn_id, reason):
    connection = db.session.query(ConferenceConnection).filter_by(conn_id=conn_id).one_or_none()
    if connection is not None:
        conference_service.close_connection(connection, reason)


def _handle(ws, raw, conference_id, role, staff_id, admit, ip, user_agent, state):
    try:
        message = json.loads(raw)
    except ValueError:
        message = None
    if not isinstance(message, dict):
        return _send(ws, type="error", message=_("Mensagem inválida."))
    kind = message.get("type")
    if kind == "ping":
        return _send(ws, type="pong")
    if kind == "leave":
        state["leaving"] = True
        state["closed"] = True
        return
    if kind != "offer" or not isinstance(message.get("sdp"), str) or len(message["sdp"]) > 100_000:
        return _send(ws, type="error", message=_("Mensagem inválida."))

    def open_conn():
        conference = db.session.get(Conference, conference_id)
        if admit is not None:
            admit(conference)
        if not conference_service.is_live(conference):
            raise conference_service.ConferenceError(
                _("Esta videoconferência já foi encerrada."))
        staff = None
        if staff_id is not None:
            from .models import StaffUser
            staff = db.session.get(StaffUser, staff_id)
        return conference_service.open_connection(conference, role, staff=staff, ip=ip,
                                                  user_agent=user_agent).conn_id

    try:
        conn_id = _unit(open_conn)
        state["conn"] = conn_id
        state.pop("replaced", None)

        def join():
            conference = db.session.get(Conference, conference_id)
            connection = db.session.query(ConferenceConnection).filter_by(conn_id=conn_id).one()
            return conference_service.join_media(conference, connection, message["sdp"])

        answer = _unit(join)
    except conference_service.ServiceError as exc:
        if state.get("conn"):
            _unit(lambda: _close(state["conn"], "refused"))
            state["conn"] = None
        return _send(ws, type="error", message=str(exc.message))
    _send(ws, type="answer", sdp=answer, conn=conn_id, seq=message.get("seq"))
    # Who is already in the room (their "connected" event went out before we joined).
    other = "agent" if role == "client" else "client"

    def present():
        conference = db.session.get(Conference, conference_id)
        current = conference_service.current_connection(conference, other)
        return current.conn_id if current is not None else None

    other_conn = _unit(present)
    if other_conn:
        _send(ws, type="event", event="peer", role=other, state="connected", conn=other_conn)


def _forward(ws, message, role, state):
    try:
        data = json.loads(message["data"])
    except (ValueError, KeyError, TypeError):
        return
    event = data.get("event")
    if event == "room":
        kind = data.get("type")
        if kind == "replaced" and data.get("role") == role and state["conn"] in data.get("conns", ()):
            state["replaced"] = True
            state["closed"] = True
            return _send(ws, type="event", event="superseded")
        if kind == "replaced" and data.get("role") == role:
            return  # our own reconnection replaced our previous connection
        if role == "client" and kind not in CLIENT_EVENTS:
            return
        if kind == "left" and data.get("role") == role:
            return
        payload = {k: v for k, v in data.items() if k not in ("event", "type")}
        return _send(ws, type="event", event=kind, **payload)
    if event == "peer":
        if data.get("role") == role:
            if data.get("conn") == state["conn"]:
                _send(ws, type="event", event="media_state", state=data.get("state"))
            return
        return _send(ws, type="event", event="peer", role=data.get("role"),
                     state=data.get("state"), conn=data.get("conn"))
    if event == "recording_error" and role == "agent":
        return _send(ws, type="event", event="recording_error", error=data.get("error"),
                     free_mb=data.get("free_mb"))


def _check(ws, conference_id, role, state):
    def check():
        conference = db.session.get(Conference, conference_id)
        if conference is None or not conference_service.is_live(conference):
            return "ended"
        if state["conn"]:
            conference_service.check_media(conference)
        return "ok"

    try:
        if _unit(check) == "ended":
            _send(ws, type="event", event="ended")
            state["closed"] = True
    except Exception as exc:  # a database or Redis hiccup: try again at the next check
        log.warning("room check failed: %s", exc)
