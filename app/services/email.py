"""Email: recorded in the database, then sent by a worker job over SMTP (or to the outbox).

Flow: `queue_email` renders the pt-BR message, stores an `EmailMessage` and, once the caller's
transaction commits, enqueues `send_email_job` (job id `email-<id>`, retried with backoff). The
job checks the record before sending (a retried job never sends a message already marked sent),
sends with the record's stable Message-ID, and marks it sent. When Redis was down at commit
time, or lost the job, the periodic sweep (`app.jobs.email.sweep_unsent_emails`) enqueues it
again.

The one window where a duplicate is still possible: the SMTP server accepted the message and
the process died (or the database refused the commit) before the record was committed as sent;
the retry then sends it again with the same Message-ID, which receiving servers and clients use
to drop duplicates. docs/email-and-jobs.md tells the whole story.
"""
import logging
import smtplib
import ssl
import uuid
from email.message import EmailMessage as MimeMessage
from email.utils import formatdate, make_msgid, parseaddr
from importlib import import_module
from pathlib import Path
from typing import NamedTuple

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


def sender_address() -> str:
    return parseaddr(current_app.config["MAIL_FROM"])[1] or "nao-responda@localhost"


def sender_domain() -> str:
    return _domain()


class Attachment(NamedTuple):
    filename: str
    content: str  # text attachments only, so far (an .ics)
    subtype: str  # text/<subtype>
    params: dict | None = None


# Email kinds whose message is completed only when it is sent: the function (dotted path)
# gets the record and returns (body_text, body_html, attachments). The record then keeps no
# secret meant for the recipient alone (a videoconference's access code) and no bulky part.
# The function must give the same result on every retry.
COMPLETERS = {
    "conference_scheduled": "app.services.scheduling.complete_email",
    "conference_instant": "app.services.scheduling.complete_email",
}


def _complete(message: EmailMessage):
    path = COMPLETERS.get(message.kind)
    if path is None:
        return message.body_text, message.body_html, []
    module, _, name = path.rpartition(".")
    return getattr(import_module(module), name)(message)


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
    """Enqueue the sending of a recorded message; a no-op while its job waits or runs."""
    from rq import Retry

    from ..jobs import enqueue

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
    body_text, body_html, attachments = _complete(message)
    mime.set_content(body_text)
    mime.add_alternative(body_html, subtype="html")
    for attachment in attachments:
        mime.add_attachment(attachment.content, subtype=attachment.subtype,
                            filename=attachment.filename, params=attachment.params or {})
    return mime


def transmit(mime: MimeMessage, email_id: int) -> str:
    """Send a built message over SMTP, or write it to the outbox when SMTP_HOST is empty.
    Touches no database: callers hold no transaction while the server takes its time."""
    cfg = current_app.config
    if not cfg["SMTP_HOST"]:
        # Rewriting the same file makes a retry harmless.
        outbox = Path(cfg["INSTANCE_DIR"]) / "outbox"
        outbox.mkdir(parents=True, exist_ok=True)
        (outbox / f"{email_id:08d}.eml").write_bytes(mime.as_bytes())
        return "outbox"
    if cfg["SMTP_SSL"]:
        smtp = smtplib.SMTP_SSL(cfg["SMTP_HOST"], cfg["SMTP_PORT"], timeout=cfg["SMTP_TIMEOUT"],
                                context=ssl.create_default_context())
    else:
        smtp = smtplib.SMTP(cfg["SMTP_HOST"], cfg["SMTP_PORT"], timeout=cfg["SMTP_TIMEOUT"])
    try:
        if cfg["SMTP_STARTTLS"] and not cfg["SMTP_SSL"]:
            smtp.starttls(context=ssl.create_default_context())
        if cfg["SMTP_USER"]:
            smtp.login(cfg["SMTP_USER"], cfg["SMTP_PASSWORD"])
        smtp.send_message(mime)
    except BaseException:
        smtp.close()
        raise
    # The server has accepted the message: a failed goodbye must not make the job retry
    # (and send it again).
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()
    return "smtp"


def is_permanent(exc: Exception) -> bool:
    """A refusal that no retry will change: the recipient or the message rejected with 5xx.
    Everything else (server down, timeouts, 4xx, authentication) is worth retrying."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return bool(exc.recipients) and all(code >= 500 for code, _ in exc.recipients.values())
    if isinstance(exc, smtplib.SMTPDataError):
        return exc.smtp_code >= 500
    return False


def _give_up(message: EmailMessage, reason: str | None = None):
    message.status = "failed"
    if reason:
        message.last_error = reason[:1000]
    audit.record("email.failed", obj=message, cert_request=message.request,
                 details={"attempts": message.attempts})


def send(email_id: int) -> str:
    """Send one recorded message unless it was already sent (or given up). Returns what
    happened: "sent", "already-sent", "failed" or "missing".

    Counts the attempt and commits before talking to the server. On a temporary failure it
    records the error and raises it, so the job is retried with backoff; after
    MAIL_MAX_ATTEMPTS attempts, or on a permanent refusal, the message is marked `failed`.
    """
    message = db.session.get(EmailMessage, email_id)
    if message is None:
        return "missing"
    if message.status == "sent":
        return "already-sent"
    if message.status == "failed":
        return "failed"
    max_attempts = current_app.config["MAIL_MAX_ATTEMPTS"]
    if message.attempts >= max_attempts:
        # Every attempt was spent, the last ones dying before they could say so.
        _give_up(message)
        db.session.commit()
        return "failed"
    message.status = "sending"
    message.attempts += 1
    mime = build_mime(message)
    db.session.commit()
    # No transaction is open while the server answers: on SQLite one would hold the write
    # lock (jobs begin IMMEDIATE) for the whole conversation, up to SMTP_TIMEOUT.
    try:
        transport = transmit(mime, email_id)
    except (smtplib.SMTPException, OSError) as exc:
        error = f"{type(exc).__name__}: {exc}"[:1000]
        if is_permanent(exc):
            _give_up(message, error)
            db.session.commit()
            log.warning("email %s refused by the server: %s", message.id, error)
            return "failed"
        message.status = "queued"
        message.last_error = error
        if message.attempts >= max_attempts:
            _give_up(message)
        db.session.commit()
        raise
    message.status = "sent"
    message.transport = transport
    message.sent_at = utcnow()
    message.last_error = None
    audit.record("email.sent", obj=message, cert_request=message.request,
                 details={"attempts": message.attempts, "transport": transport})
    db.session.commit()
    return "sent"
