"""Email: recorded in the database, then sent by a worker job over SMTP (or to the outbox).

Flow: `queue_email` renders the pt-BR message, stores an `EmailMessage` and, once the caller's
transaction commits, enqueues `send_email_job`. The job checks the record before sending (a
retried job never sends a message already marked sent), sends with the record's stable
Message-ID, and marks it sent. The one window where a duplicate is still possible: the SMTP
server accepted the message and the process died before the record was committed as sent; the
retry then sends it again with the same Message-ID, which receiving servers and clients use to
drop duplicates.
"""
import logging
import smtplib
import ssl
import uuid
from email.message import EmailMessage as MimeMessage
from email.utils import formatdate, make_msgid, parseaddr
from pathlib import Path

from flask import current_app, render_template
from sqlalchemy import event

from ..extensions import db
from ..models import EmailMessage, utcnow
from . import audit
from .office import get_settings

log = logging.getLogger(__name__)


def _domain() -> str:
    addr = parseaddr(current_app.config["MAIL_FROM"])[1]
    return addr.rpartition("@")[2] or "localhost"


def queue_email(kind: str, to: str, subject: str, template: str, *, cert_request=None,
                **context) -> EmailMessage:
    """Render `emails/<template>.txt|.html`, record the message and enqueue its sending after
    the current transaction commits."""
    context.setdefault("office", get_settings())
    context.setdefault("cert_request", cert_request)
    body_text = render_template(f"emails/{template}.txt", **context)
    body_html = render_template(f"emails/{template}.html", subject=subject, **context)
    message = EmailMessage(
        message_id=make_msgid(idstring=f"videoar.{uuid.uuid4().hex}", domain=_domain()),
        kind=kind, request_id=cert_request.id if cert_request is not None else None,
        to_address=to, subject=subject, body_text=body_text, body_html=body_html,
        status="queued",
    )
    db.session.add(message)
    db.session.flush()
    audit.record("email.queue", obj=message, cert_request=cert_request,
                 details={"kind": kind, "to": to})
    _enqueue_after_commit(message.id)
    return message


def _enqueue_after_commit(email_id: int):
    session = db.session()
    pending = session.info.setdefault("videoar_emails_to_enqueue", [])
    pending.append(email_id)


@event.listens_for(db.session.__class__, "after_commit", propagate=True)
def _after_commit(session):  # pragma: no cover - exercised through every email test
    pending = session.info.pop("videoar_emails_to_enqueue", None)
    if not pending:
        return
    for email_id in pending:
        try:
            enqueue_send(email_id)
        except Exception:  # Redis down: the periodic sweep enqueues it later.
            log.warning("email %s recorded but not enqueued; the sweep will retry", email_id)


@event.listens_for(db.session.__class__, "after_rollback", propagate=True)
def _after_rollback(session):
    session.info.pop("videoar_emails_to_enqueue", None)


def enqueue_send(email_id: int):
    from ..jobs import enqueue
    from rq import Retry

    intervals = current_app.config["MAIL_RETRY_INTERVALS"]
    max_retries = current_app.config["MAIL_MAX_ATTEMPTS"] - 1
    return enqueue(
        "app.jobs.email.send_email_job", email_id, queue="email",
        job_id=f"email-{email_id}", name="send_email",
        description=f"email {email_id}",
        retry=Retry(max=max_retries, interval=intervals[:max_retries] or [10]),
    )


def build_mime(message: EmailMessage) -> MimeMessage:
    mime = MimeMessage()
    mime["From"] = current_app.config["MAIL_FROM"]
    mime["To"] = message.to_address
    mime["Subject"] = message.subject
    mime["Message-ID"] = message.message_id
    mime["Date"] = formatdate(message.created_at.timestamp(), localtime=False)
    mime.set_content(message.body_text)
    mime.add_alternative(message.body_html, subtype="html")
    return mime


def deliver(message: EmailMessage) -> str:
    """Hand one message to the configured transport; returns its name. Raises on failure."""
    cfg = current_app.config
    mime = build_mime(message)
    if not cfg["SMTP_HOST"]:
        outbox = Path(cfg["INSTANCE_DIR"]) / "outbox"
        outbox.mkdir(parents=True, exist_ok=True)
        (outbox / f"{message.id:08d}.eml").write_bytes(mime.as_bytes())
        return "outbox"
    if cfg["SMTP_SSL"]:
        smtp = smtplib.SMTP_SSL(cfg["SMTP_HOST"], cfg["SMTP_PORT"], timeout=cfg["SMTP_TIMEOUT"],
                                context=ssl.create_default_context())
    else:
        smtp = smtplib.SMTP(cfg["SMTP_HOST"], cfg["SMTP_PORT"], timeout=cfg["SMTP_TIMEOUT"])
    with smtp:
        if cfg["SMTP_STARTTLS"] and not cfg["SMTP_SSL"]:
            smtp.starttls(context=ssl.create_default_context())
        if cfg["SMTP_USER"]:
            smtp.login(cfg["SMTP_USER"], cfg["SMTP_PASSWORD"])
        smtp.send_message(mime)
    return "smtp"


def send(email_id: int) -> str:
    """Send one recorded message unless it was already sent. Returns what happened.

    Raises the transport's error after recording it, so the job is retried with backoff.
    """
    message = db.session.get(EmailMessage, email_id)
    if message is None:
        return "missing"
    if message.status == "sent":
        return "already-sent"
    message.status = "sending"
    message.attempts += 1
    db.session.commit()
    try:
        transport = deliver(message)
    except (smtplib.SMTPException, OSError) as exc:
        message.status = "queued"
        message.last_error = f"{type(exc).__name__}: {exc}"[:1000]
        if message.attempts >= current_app.config["MAIL_MAX_ATTEMPTS"]:
            message.status = "failed"
            audit.record("email.failed", obj=message, details={"attempts": message.attempts})
        db.session.commit()
        raise
    message.status = "sent"
    message.transport = transport
    message.sent_at = utcnow()
    message.last_error = None
    audit.record("email.sent", obj=message, details={"attempts": message.attempts,
                                                     "transport": transport})
    db.session.commit()
    return "sent"
