"""SMS: recorded in the database, then sent by a worker job through a gateway.

Same flow as email (app/services/email.py): `queue_sms` stores an `SmsMessage` and, once the
caller's transaction commits, enqueues `app.jobs.sms.send_sms_job` (job id `sms-<id>`, retried
with backoff). The job reads the record before sending (a message already sent is never sent
again), counts the attempt and commits, talks to the gateway with no transaction open, and
marks the message sent, or failed on a permanent refusal or after SMS_MAX_ATTEMPTS attempts.
When Redis was down at commit time, or lost the job, the periodic sweep
(`app.jobs.sms.sweep_unsent_sms`) enqueues it again.

The gateway sits behind a small interface, `SmsGateway`: `send(to, body, *, reference=None)`
returns the gateway's id for the message or raises `SmsError(permanent=...)`. Two
implementations: `HttpSmsGateway` (JSON over HTTPS, bearer token) and `OutboxSmsGateway` (one
JSON file per message in a directory, written atomically). `get_gateway(app)` picks one from
SMS_BACKEND. docs/sms.md tells the whole story.

Bodies are stored and sent in the GSM-7 alphabet: `gsm7` replaces what it lacks (ã, ç, õ, á,
ê, dashes, curly quotes...) by its plain form, so a Portuguese text keeps 160 characters per
SMS instead of the 70 of UCS-2. A body longer than one SMS (160 GSM-7 characters, `^{}[]~|€\\`
counting two) is sent anyway, as a concatenated SMS, with a warning in the log.

Nothing secret is logged: logs name a message by its id, never its number, text or the
gateway's token; errors coming back from the gateway are stored with the number and the token
blanked out.
"""
import http.client
import ipaddress
import json
import logging
import os
import re
import socket
import ssl
import tempfile
import unicodedata
import urllib.error
import urllib.request
import uuid
from contextlib import suppress
from importlib import import_module
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit

import phonenumbers
from flask import current_app
from sqlalchemy import event

from ..extensions import db
from ..models import utcnow
from ..models.sms import SmsMessage
from . import audit
from .validators import normalize_phone

log = logging.getLogger(__name__)

DEFAULT_RETRY_INTERVALS = [10, 30, 60, 120, 300, 600, 1800]
DEFAULT_MAX_ATTEMPTS = 8
DEFAULT_TIMEOUT = 15.0
SINGLE_SMS = 160  # GSM-7 characters in one SMS
PART_SMS = 153  # per part of a concatenated SMS (the rest is the concatenation header)
MAX_BODY = 6 * PART_SMS  # beyond six parts, gateways truncate or refuse: a bug in the caller


# --- settings ---------------------------------------------------------------------------

def setting(app, name, default):
    """A setting from the app's config, else from the environment (for a worker whose Config
    does not name it), else `default`. Lists in the environment are comma-separated."""
    if name in app.config:
        return app.config[name]
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    if isinstance(default, bool):
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    if isinstance(default, list):
        return [int(x) for x in raw.split(",") if x.strip()]
    return raw


# --- the GSM-7 alphabet -----------------------------------------------------------------

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")  # two characters each (escape + code)
_PLAIN = {
    "\u2013": "-", "\u2014": "-", "\u2012": "-", "\u2212": "-", "\u2010": "-", "\u2011": "-",
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u2032": "'", "\u00b4": "'", "`": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2033": '"', "\u00ab": '"', "\u00bb": '"',
    "\u2026": "...", "\u2022": "-", "\u00b7": "-", "\u00b0": "o", "\t": " ",
}


def gsm7(text: str) -> str:
    """`text` in the GSM-7 alphabet: what it lacks becomes its plain form (ç → c, ã → a,
    — → -, “ ” → "), and what has none becomes "?"."""
    out = []
    for char in text:
        if char in GSM7_BASIC or char in GSM7_EXTENSION:
            out.append(char)
            continue
        plain = _PLAIN.get(char)
        if plain is None:
            decomposed = unicodedata.normalize("NFKD", char)
            plain = "".join(c for c in decomposed if not unicodedata.combining(c))
        out.append("".join(c if c in GSM7_BASIC or c in GSM7_EXTENSION else "?"
                           for c in plain) or "?")
    return "".join(out)


def gsm7_length(text: str) -> int:
    """Characters `text` takes in GSM-7 (the extension characters count two)."""
    return sum(2 if c in GSM7_EXTENSION else 1 for c in text)


def sms_parts(text: str) -> int:
    """How many SMS a GSM-7 text is sent as."""
    length = gsm7_length(text)
    return 1 if length <= SINGLE_SMS else -(-length // PART_SMS)


# --- the gateways -----------------------------------------------------------------------

class SmsError(Exception):
    """A gateway did not take the message. `permanent`: no retry will change that (the
    gateway refused the number or the message); otherwise the job tries again later.
    The message never holds the number, the text or a credential: it is stored and logged."""

    def __init__(self, message: str, *, permanent: bool):
        super().__init__(message)
        self.permanent = permanent


class SmsConfigurationError(ValueError):
    """The SMS settings name no usable gateway."""


@runtime_checkable
class SmsGateway(Protocol):
    name: str

    def send(self, to: str, body: str, *, reference: str | None = None) -> str | None:
        """Hand one SMS to `to` (E.164) to the gateway; return the gateway's id for it (None
        if the gateway gives none). `reference` is stable across the retries of one message
        and unique to it: a gateway that can use it drops a second copy. Raises SmsError."""


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is not followed: urllib would carry the Authorization header (the token)
    to wherever it points. It comes back as an HTTPError with its 3xx code."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class HttpSmsGateway:
    """A generic JSON-over-HTTPS gateway: POST `{"to", "from", "text"}` to `url` with
    `Authorization: Bearer <token>` (and `Idempotency-Key: <reference>`); a 2xx answer
    accepts the message and its JSON body's "id" is the gateway's id for it.

    4xx: permanent (except 408, 425 and 429, which say "later"); 3xx: permanent (redirects
    are not followed: fix the URL); 5xx, timeouts and connection errors: temporary.
    Plain http:// is accepted only for this machine (a local relay, the tests): the token
    never crosses a network in the clear. A provider with another JSON shape: subclass and
    override `payload` and `provider_id` (docs/sms.md)."""

    name = "http"
    TEMPORARY_4XX = frozenset({408, 425, 429})
    MAX_RESPONSE = 64 * 1024

    def __init__(self, url: str, token: str, sender: str = "", timeout: float = DEFAULT_TIMEOUT):
        parts = urlsplit(url or "")
        if not parts.hostname or parts.scheme not in ("https", "http"):
            raise SmsConfigurationError("SMS_GATEWAY_URL must be an https:// address")
        if parts.scheme == "http" and not _is_loopback(parts.hostname):
            raise SmsConfigurationError(
                "SMS_GATEWAY_URL must be https:// (plain http:// only to this machine)")
        if parts.username or parts.password:
            raise SmsConfigurationError(
                "SMS_GATEWAY_URL must not hold credentials; set SMS_GATEWAY_TOKEN")
        if not token:
            raise SmsConfigurationError("SMS_GATEWAY_TOKEN is empty")
        self.url = url
        self._token = token
        self.sender = sender or ""
        self.timeout = float(timeout)
        handlers = [_NoRedirects(), urllib.request.HTTPSHandler(
            context=ssl.create_default_context())]
        if _is_loopback(parts.hostname):
            handlers.append(urllib.request.ProxyHandler({}))  # never proxy this machine
        self._opener = urllib.request.build_opener(*handlers)

    def __repr__(self):  # no token in a traceback's locals or a debugger
        return f"HttpSmsGateway(url={self._safe_url()!r}, sender={self.sender!r})"

    def _safe_url(self):
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.hostname}{':%d' % parts.port if parts.port else ''}"

    # What a provider-specific subclass changes.
    def payload(self, to: str, body: str) -> dict:
        data = {"to": to, "text": body}
        if self.sender:
            data["from"] = self.sender
        return data

    def headers(self, reference: str | None) -> dict:
        headers = {"Authorization": f"Bearer {self._token}",
                   "Content-Type": "application/json; charset=utf-8",
                   "Accept": "application/json", "User-Agent": "VideoAR-SMS/1"}
        if reference:
            headers["Idempotency-Key"] = reference
        return headers

    def provider_id(self, data) -> str | None:
        value = data.get("id") if isinstance(data, dict) else None
        return str(value)[:200] if value not in (None, "") else None

    def is_permanent(self, status: int) -> bool:
        if status >= 500:
            return False
        return status not in self.TEMPORARY_4XX and 300 <= status < 500

    # The exchange.
    def send(self, to: str, body: str, *, reference: str | None = None) -> str | None:
        data = json.dumps(self.payload(to, body), ensure_ascii=False).encode("utf-8")
        request = urllib.request.Request(self.url, data=data, method="POST",
                                         headers=self.headers(reference))
        raw = b""
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                raw = response.read(self.MAX_RESPONSE)
        except urllib.error.HTTPError as exc:
            with suppress(Exception):
                raw = exc.read(self.MAX_RESPONSE)
            status = exc.code
            exc.close()
            excerpt = self._excerpt(raw, to)
            message = f"HTTP {status} from the gateway" + (f": {excerpt}" if excerpt else "")
            raise SmsError(message, permanent=self.is_permanent(status)) from None
        except (TimeoutError, socket.timeout):
            raise SmsError(f"the gateway did not answer within {self.timeout:g} s",
                           permanent=False) from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, (TimeoutError, socket.timeout)):
                raise SmsError(f"the gateway did not answer within {self.timeout:g} s",
                               permanent=False) from None
            raise SmsError(f"cannot reach the gateway: {self._reason(exc.reason, to)}",
                           permanent=False) from None
        except (http.client.HTTPException, OSError) as exc:
            raise SmsError(f"the gateway connection failed: {self._reason(exc, to)}",
                           permanent=False) from None
        # Accepted: whatever the body says now, sending again would send twice.
        try:
            answer = json.loads(raw.decode("utf-8")) if raw.strip() else None
        except ValueError:
            answer = None
        provider_id = self.provider_id(answer)
        if provider_id is None:
            log.warning("the SMS gateway accepted a message without giving its id")
        return provider_id

    def _redact(self, text: str, to: str) -> str:
        secrets = [self._token, to, to.lstrip("+")]
        with suppress(phonenumbers.NumberParseException):
            secrets.append(str(phonenumbers.parse(to).national_number))
        for secret in sorted(filter(None, secrets), key=len, reverse=True):
            text = text.replace(secret, "<redacted>")
        return text

    def _excerpt(self, raw: bytes, to: str) -> str:
        text = " ".join(raw.decode("utf-8", "replace").split())[:300]
        return self._redact(text, to)

    def _reason(self, reason, to: str) -> str:
        if isinstance(reason, OSError) and reason.strerror:
            text = f"{type(reason).__name__}: {reason.strerror}"
        elif isinstance(reason, BaseException):
            text = f"{type(reason).__name__}: {reason}"
        else:
            text = str(reason)
        return self._redact(text, to)[:300]


def _safe_name(reference: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", reference).lstrip(".")[:150] or "sms"


def write_atomically(path: Path, data: bytes):
    """Write `data` to `path` so that a reader sees the old file or the whole new one, never
    a part: a hidden temporary file in the same directory, flushed to disk, then renamed over
    `path` (and the directory flushed, so the rename survives a crash). Mode 600."""
    directory = path.parent
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class OutboxSmsGateway:
    """The gateway of a machine with no SMS provider: each message becomes
    `<directory>/<reference>.json` ({"id", "to", "text", "written_at", "gsm7_characters",
    "parts"}), written atomically, so an office on trial reads what would have been sent.
    A retry of the same message rewrites the same file. Its id is the file's name."""

    name = "outbox"

    def __init__(self, directory):
        self.directory = Path(directory)

    def __repr__(self):
        return f"OutboxSmsGateway({str(self.directory)!r})"

    def send(self, to: str, body: str, *, reference: str | None = None) -> str:
        now = utcnow()
        stem = _safe_name(reference) if reference else \
            f"{now:%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:12]}"
        record = {"id": stem, "to": to, "text": body,
                  "written_at": now.isoformat().replace("+00:00", "Z"),
                  "gsm7_characters": gsm7_length(body), "parts": sms_parts(body)}
        data = json.dumps(record, ensure_ascii=False, indent=2).encode("utf-8") + b"\n"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            write_atomically(self.directory / f"{stem}.json", data)
        except OSError as exc:
            raise SmsError(f"cannot write to the SMS outbox: "
                           f"{type(exc).__name__}: {exc.strerror or exc}", permanent=False) \
                from None
        return f"{stem}.json"

    def messages(self) -> list[dict]:
        """The messages in the outbox, oldest name first (temporary files left out)."""
        if not self.directory.is_dir():
            return []
        return [json.loads(p.read_text("utf-8")) for p in sorted(self.directory.glob("*.json"))
                if not p.name.startswith(".")]


def get_gateway(app=None) -> SmsGateway:
    """The gateway SMS_BACKEND names: "outbox" (default; SMS_OUTBOX_DIR, empty meaning
    <INSTANCE_DIR>/sms-outbox), "http" (SMS_GATEWAY_URL, SMS_GATEWAY_TOKEN, SMS_SENDER,
    SMS_TIMEOUT), or "package.module:factory", a callable given the app that returns an
    `SmsGateway` (a provider of its own). Raises SmsConfigurationError."""
    app = app or current_app
    backend = str(setting(app, "SMS_BACKEND", "outbox") or "outbox").strip()
    if backend.lower() == "outbox":
        directory = setting(app, "SMS_OUTBOX_DIR", "") or \
            Path(app.config["INSTANCE_DIR"]) / "sms-outbox"
        return OutboxSmsGateway(directory)
    if backend.lower() == "http":
        return HttpSmsGateway(setting(app, "SMS_GATEWAY_URL", ""),
                              setting(app, "SMS_GATEWAY_TOKEN", ""),
                              setting(app, "SMS_SENDER", ""),
                              setting(app, "SMS_TIMEOUT", DEFAULT_TIMEOUT))
    module, _, attr = backend.partition(":")
    if module and attr:
        try:
            factory = getattr(import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise SmsConfigurationError(f"SMS_BACKEND {backend!r} cannot be loaded: "
                                        f"{type(exc).__name__}") from None
        gateway = factory(app)
        if not isinstance(gateway, SmsGateway):
            raise SmsConfigurationError(f"SMS_BACKEND {backend!r} gave no SmsGateway")
        return gateway
    raise SmsConfigurationError(f"unknown SMS_BACKEND {backend!r} (outbox, http, "
                                "or package.module:factory)")


# --- recording and sending --------------------------------------------------------------

def reference(message: SmsMessage) -> str:
    """The message's reference for the gateway: stable across its retries, unique to it (and
    to this installation, by its creation time), so an Idempotency-Key or a file name."""
    return f"sms-{message.id:08d}-{message.created_at:%Y%m%dT%H%M%S%fZ}"


def queue_sms(kind: str, to: str, body: str, *, cert_request=None) -> SmsMessage:
    """Record an SMS to `to` (any valid phone number, stored as E.164) and enqueue its sending
    after the current transaction commits. The body is stored in GSM-7 (see `gsm7`); one
    longer than a single SMS is sent as a concatenated SMS, with a warning in the log.
    Raises ValueError for a number that is not valid, or an empty or overlong body."""
    number = normalize_phone(to)
    if number is None:
        raise ValueError("SMS recipient is not a valid phone number")
    text = gsm7(body.strip())
    if not text:
        raise ValueError("SMS body is empty")
    length = gsm7_length(text)
    if length > MAX_BODY:
        raise ValueError(f"SMS body of {length} GSM-7 characters is over {MAX_BODY}")
    message = SmsMessage(kind=kind, to=number, body=text, state="queued", attempts=0,
                         request_id=cert_request.id if cert_request is not None else None)
    db.session.add(message)
    db.session.flush()
    if length > SINGLE_SMS:
        log.warning("sms %s (%s): %d GSM-7 characters, over one SMS (%d); it goes as %d "
                    "concatenated parts", message.id, kind, length, SINGLE_SMS,
                    sms_parts(text))
    audit.record("sms.queue", obj=message, cert_request=cert_request,
                 details={"kind": kind, "to": number})
    db.session().info.setdefault("videoar_sms_to_enqueue", []).append(message.id)
    return message


@event.listens_for(db.session.__class__, "after_commit", propagate=True)
def _after_commit(session):
    pending = session.info.pop("videoar_sms_to_enqueue", None)
    if not pending:
        return
    for sms_id in pending:
        try:
            enqueue_send(sms_id)
        except Exception:  # Redis down: the periodic sweep enqueues it later.
            log.warning("sms %s recorded but not enqueued; the sweep will retry", sms_id)


@event.listens_for(db.session.__class__, "after_rollback", propagate=True)
def _after_rollback(session):
    session.info.pop("videoar_sms_to_enqueue", None)


def enqueue_send(sms_id: int):
    """Enqueue the sending of a recorded SMS; a no-op while its job waits or runs. On the
    `email` queue, the one for messages to people (worker.py listens to it first)."""
    from rq import Retry

    from ..jobs import enqueue

    app = current_app
    intervals = list(setting(app, "SMS_RETRY_INTERVALS", DEFAULT_RETRY_INTERVALS))
    max_retries = int(setting(app, "SMS_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS)) - 1
    retry = Retry(max=max_retries, interval=intervals[:max_retries] or [10]) \
        if max_retries > 0 else None
    return enqueue("app.jobs.sms.send_sms_job", sms_id, queue="email", job_id=f"sms-{sms_id}",
                   name="send_sms", description=f"sms {sms_id}", retry=retry)


def _give_up(message: SmsMessage, reason: str | None = None):
    message.state = "failed"
    if reason:
        message.last_error = reason[:1000]
    audit.record("sms.failed", actor=audit.SYSTEM, obj=message, cert_request=message.request,
                 details={"attempts": message.attempts})


def send(sms_id: int) -> str:
    """Send one recorded SMS unless it was already sent (or given up). Returns "sent",
    "already-sent", "failed" or "missing".

    Counts the attempt and commits before talking to the gateway. On a temporary failure it
    records the error and raises it, so the job is retried with backoff; after
    SMS_MAX_ATTEMPTS attempts, or on a permanent refusal, the message is `failed`.
    """
    message = db.session.get(SmsMessage, sms_id)
    if message is None:
        return "missing"
    if message.state == "sent":
        return "already-sent"
    if message.state == "failed":
        return "failed"
    max_attempts = int(setting(current_app, "SMS_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS))
    if message.attempts >= max_attempts:
        # Every attempt was spent, the last ones dying before they could say so.
        _give_up(message)
        db.session.commit()
        log.warning("sms %s failed after %d attempts", sms_id, message.attempts)
        return "failed"
    message.attempts += 1
    to, body, ref = message.to, message.body, reference(message)
    try:
        gateway = get_gateway(current_app)
    except SmsConfigurationError as exc:
        gateway, config_error = None, SmsError(f"SMS settings: {exc}", permanent=False)
    else:
        config_error = None
    db.session.commit()
    # No transaction is open while the gateway answers: on SQLite one would hold the write
    # lock (jobs begin IMMEDIATE) for up to SMS_TIMEOUT.
    try:
        if config_error is not None:
            raise config_error
        provider_id = gateway.send(to, body, reference=ref)
    except SmsError as exc:
        error = f"{type(exc).__name__}: {exc}"[:1000]
        if exc.permanent:
            _give_up(message, error)
            db.session.commit()
            log.warning("sms %s refused by the gateway: %s", sms_id, error)
            return "failed"
        message.last_error = error
        if message.attempts >= max_attempts:
            _give_up(message)
            log.warning("sms %s failed after %d attempts: %s", sms_id, message.attempts, error)
        db.session.commit()
        raise
    message.state = "sent"
    message.provider_message_id = provider_id
    message.sent_at = utcnow()
    message.last_error = None
    audit.record("sms.sent", actor=audit.SYSTEM, obj=message, cert_request=message.request,
                 details={"attempts": message.attempts, "gateway": gateway.name})
    db.session.commit()
    return "sent"
