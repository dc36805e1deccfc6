"""The client's access to their own pages: a session bound to one request and one link.

A client has no account. After the private link's token and the protocol (plus the robot
check) are accepted, the session holds the request id, the link id, the purpose and the time
of the last request; it is refused when idle longer than CLIENT_IDLE_MINUTES, when the link
was revoked or expired, or when another request is asked for. The cookie itself is Flask's
session cookie: HttpOnly, SameSite=Lax, Secure under HTTPS (app/config.py).
"""
import time

from flask import abort, current_app, session

from .extensions import db
from .models import AccessLink, CertificateRequest, utcnow

KEY = "client"


def bind(link: AccessLink):
    """Give this browser access to `link`'s request (after the protocol was checked)."""
    # Kept: a staff login in the same browser, the language, and the CSRF token (a page that
    # binds by fetch, like the issuance page, goes on posting with the token it was given).
    staff = {k: session[k] for k in ("_user_id", "_fresh", "_id", "lang", "csrf_token")
             if k in session}
    session.clear()  # a new binding never inherits another client's data
    session.update(staff)
    session[KEY] = {"request_id": link.request_id, "link_id": link.id, "purpose": link.purpose,
                    "seen": int(time.time())}


def unbind():
    session.pop(KEY, None)


def current(purpose: str) -> tuple[CertificateRequest, AccessLink] | None:
    """The request this browser may act on for `purpose`, or None."""
    data = session.get(KEY)
    if not data or data.get("purpose") != purpose:
        return None
    idle = current_app.config["CLIENT_IDLE_MINUTES"] * 60
    if time.time() - data.get("seen", 0) > idle:
        unbind()
        return None
    link = db.session.get(AccessLink, data["link_id"])
    if link is None or link.request_id != data["request_id"] or link.revoked_at is not None \
            or link.expires_at <= utcnow():
        unbind()
        return None
    data["seen"] = int(time.time())
    session[KEY] = data
    return link.request, link


def require(purpose: str) -> tuple[CertificateRequest, AccessLink]:
    bound = current(purpose)
    if bound is None:
        abort(401)
    return bound
