"""Private links to the client's pages: random, request-bound, expiring, revocable."""
import base64
import hashlib
import hmac
import secrets
from datetime import timedelta

from flask import current_app
from flask_babel import lazy_gettext as _l
from sqlalchemy import select

from ..extensions import db
from ..models import AccessLink, utcnow
from . import ServiceError, audit


class LinkError(ServiceError):
    pass


def _token_for_nonce(nonce: str) -> str:
    key = current_app.config["SECRET_KEY"].encode()
    mac = hmac.new(key, f"access-link:{nonce}".encode(), hashlib.sha256).digest()
    # 256 bits, URL-safe.
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_for(link: AccessLink) -> str:
    return _token_for_nonce(link.nonce)


def create_link(cert_request, purpose: str, *, days: int | None = None, actor=None) -> AccessLink:
    """Create a new link for `purpose`, revoking the request's earlier links of that purpose."""
    if purpose not in AccessLink.PURPOSES:
        raise ValueError(purpose)
    now = utcnow()
    for old in cert_request.links:
        if old.purpose == purpose and old.revoked_at is None:
            old.revoked_at = now
    days = days if days is not None else current_app.config["LINK_VALID_DAYS"]
    nonce = secrets.token_hex(16)
    link = AccessLink(
        request=cert_request, purpose=purpose, nonce=nonce,
        token_digest=_digest(_token_for_nonce(nonce)), created_at=now,
        expires_at=now + timedelta(days=days),
    )
    db.session.add(link)
    db.session.flush()
    audit.record("link.create", actor=actor, obj=link, cert_request=cert_request,
                 details={"purpose": purpose, "expires_at": link.expires_at.isoformat()})
    return link


def current_link(cert_request, purpose: str) -> AccessLink | None:
    for link in reversed(cert_request.links):
        if link.purpose == purpose and link.revoked_at is None:
            return link
    return None


def url_for_link(link: AccessLink) -> str:
    paths = {"documents": "/documentos/", "conference": "/conferencia/", "issuance": "/emissao/"}
    return f"{current_app.config['PUBLIC_URL']}{paths[link.purpose]}{token_for(link)}"


def resolve(token: str, purpose: str) -> AccessLink:
    """Return the live link for `token`, or raise LinkError with the reason the client reads."""
    if not token or len(token) > 100:
        raise LinkError(_l("Este link não é válido. Confira se copiou o endereço completo do e-mail."))
    link = db.session.execute(
        select(AccessLink).where(AccessLink.token_digest == _digest(token))
    ).scalar_one_or_none()
    if link is None or link.purpose != purpose:
        raise LinkError(_l("Este link não é válido. Confira se copiou o endereço completo do e-mail."))
    if link.revoked_at is not None:
        raise LinkError(_l("Este link foi substituído por um mais recente. Use o último e-mail recebido."))
    if link.expires_at <= utcnow():
        raise LinkError(_l("Este link expirou. Fale com a Autoridade de Registro para receber um novo."))
    return link
