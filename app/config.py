"""Configuration read from the environment (and `.env`), with a test subclass."""
import os
from datetime import timedelta
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def _bool(name, default=False):
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _int(name, default):
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


class Config:
    INSTANCE_DIR = Path(os.environ.get("VIDEOAR_INSTANCE", BASE_DIR / "instance"))

    SECRET_KEY = os.environ.get("SECRET_KEY")
    PUBLIC_URL = os.environ.get("PUBLIC_URL", "http://localhost:5000").rstrip("/")
    OFFICE_TIMEZONE = os.environ.get("OFFICE_TIMEZONE", "America/Sao_Paulo")

    SQLALCHEMY_DATABASE_URI = os.environ.get("DATABASE_URL") or (
        f"sqlite:///{INSTANCE_DIR / 'videoar.db'}"
    )
    # Pooled connections per web process (plus SQLAlchemy's overflow of 10). The launcher runs 24
    # threads per process because each call holds two of them (the WebSockets), which take a
    # connection only for each short transaction.
    SQLALCHEMY_ENGINE_OPTIONS = {"pool_pre_ping": True, "pool_size": _int("DB_POOL_SIZE", 10)}
    REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    RQ_QUEUES = ["default", "email"]

    # Mail: SMTP when SMTP_HOST is set, otherwise the local outbox readable by the admin.
    SMTP_HOST = os.environ.get("SMTP_HOST", "")
    SMTP_PORT = _int("SMTP_PORT", 587)
    SMTP_USER = os.environ.get("SMTP_USER", "")
    SMTP_PASSWORD = os.environ.get("SMTP_PASSWORD", "")
    SMTP_STARTTLS = _bool("SMTP_STARTTLS", False)
    SMTP_SSL = _bool("SMTP_SSL", False)
    SMTP_TIMEOUT = _int("SMTP_TIMEOUT", 20)
    MAIL_FROM = os.environ.get("MAIL_FROM", "VideoAR <nao-responda@localhost>")
    MAIL_MAX_ATTEMPTS = _int("MAIL_MAX_ATTEMPTS", 8)
    MAIL_RETRY_INTERVALS = [10, 30, 60, 120, 300, 600, 1800]

    # Background jobs: how soon a job whose worker died is noticed and run again.
    RQ_JOB_MONITORING_INTERVAL = _int("RQ_JOB_MONITORING_INTERVAL", 10)
    RQ_MAINTENANCE_INTERVAL = _int("RQ_MAINTENANCE_INTERVAL", 15)
    # Periodic jobs (worker.py's cron): seconds between runs, and how old an unsent email must
    # be before the sweep enqueues it again (see docs/email-and-jobs.md).
    EMAIL_SWEEP_SECONDS = _int("EMAIL_SWEEP_SECONDS", 60)
    EMAIL_SWEEP_MIN_AGE_SECONDS = _int("EMAIL_SWEEP_MIN_AGE_SECONDS", 60)
    REMIND_AND_EXPIRE_SECONDS = _int("REMIND_AND_EXPIRE_SECONDS", 15 * 60)
    CONFERENCE_NO_SHOW_SECONDS = _int("CONFERENCE_NO_SHOW_SECONDS", 60)
    # Recordings whose processing job was lost (Redis down at the commit) are enqueued again.
    RECORDING_SWEEP_SECONDS = _int("RECORDING_SWEEP_SECONDS", 5 * 60)

    # Staff sessions and login protection.
    PERMANENT_SESSION_LIFETIME = timedelta(minutes=_int("STAFF_IDLE_MINUTES", 30))
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    SESSION_COOKIE_SECURE = PUBLIC_URL.startswith("https://")
    SESSION_COOKIE_NAME = "videoar_session"
    LOGIN_MAX_FAILURES = _int("LOGIN_MAX_FAILURES", 5)
    LOGIN_LOCKOUT_MINUTES = _int("LOGIN_LOCKOUT_MINUTES", 15)
    LOGIN_RATE_LIMIT = os.environ.get("LOGIN_RATE_LIMIT", "20 per minute")
    PUBLIC_FORM_RATE_LIMIT = os.environ.get("PUBLIC_FORM_RATE_LIMIT", "10 per minute")

    # Client links: lifetime of the link sent by email.
    LINK_VALID_DAYS = _int("LINK_VALID_DAYS", 15)

    # Proof-of-work robot check (ALTCHA): higher means more work for the browser.
    ALTCHA_MAX_NUMBER = _int("ALTCHA_MAX_NUMBER", 50_000)
    ALTCHA_EXPIRES_SECONDS = _int("ALTCHA_EXPIRES_SECONDS", 600)

    WTF_CSRF_TIME_LIMIT = None  # bound to the session instead
    # Languages: pt-BR by default, English as the second catalog (app/translations, maintained
    # with scripts/i18n.sh); a visitor picks one with the footer's switch (a cookie).
    # WTForms' own messages come from our catalogs through app/i18n.py (the Meta of
    # app.forms.FlaskForm); WTF_I18N_ENABLED only matters to a form built on Flask-WTF's
    # FlaskForm directly, which then gets WTForms' own (European Portuguese) catalog.
    WTF_I18N_ENABLED = True
    BABEL_DEFAULT_LOCALE = "pt_BR"
    BABEL_DEFAULT_TIMEZONE = "UTC"
    LANGUAGES = ["pt_BR", "en"]

    # Uploaded documents (app/services/storage.py, uploads.py). An empty STORAGE_ROOT means
    # <INSTANCE_DIR>/storage, resolved when the app reads it (so a subclass's INSTANCE_DIR counts).
    STORAGE_ROOT = os.environ.get("STORAGE_ROOT", "")
    # "s3": blobs in an S3-compatible bucket instead of STORAGE_ROOT (docs/scaling.md).
    STORAGE_BACKEND = os.environ.get("STORAGE_BACKEND", "local")
    S3_ENDPOINT_URL = os.environ.get("S3_ENDPOINT_URL", "")
    S3_BUCKET = os.environ.get("S3_BUCKET", "")
    S3_PREFIX = os.environ.get("S3_PREFIX", "storage")
    S3_REGION = os.environ.get("S3_REGION", "")
    S3_ACCESS_KEY_ID = os.environ.get("S3_ACCESS_KEY_ID", "")
    S3_SECRET_ACCESS_KEY = os.environ.get("S3_SECRET_ACCESS_KEY", "")
    S3_TEMP_DIR = os.environ.get("S3_TEMP_DIR", "")
    UPLOAD_MAX_BYTES = _int("UPLOAD_MAX_BYTES", 20 * 1024 * 1024)
    UPLOAD_MAX_PIXELS = _int("UPLOAD_MAX_PIXELS", 50_000_000)
    UPLOAD_MAX_PDF_PAGES = _int("UPLOAD_MAX_PDF_PAGES", 20)
    UPLOAD_MAX_PAGES_PER_KIND = _int("UPLOAD_MAX_PAGES_PER_KIND", 10)
    # PDFs are rendered in a child process (app/services/pdf_render.py), killed past the timeout.
    PDF_RENDER_ISOLATED = _bool("PDF_RENDER_ISOLATED", True)
    PDF_RENDER_TIMEOUT = _int("PDF_RENDER_TIMEOUT", 60)

    # The client's pages: idle expiry of their session, wrong protocols before a pause.
    CLIENT_IDLE_MINUTES = _int("CLIENT_IDLE_MINUTES", 30)
    PROTOCOL_MAX_TRIES = _int("PROTOCOL_MAX_TRIES", 5)
    PROTOCOL_LOCK_MINUTES = _int("PROTOCOL_LOCK_MINUTES", 15)
    PROTOCOL_RATE_LIMIT = os.environ.get("PROTOCOL_RATE_LIMIT", "30 per 15 minutes")

    # The videoconference. A client's first entry is admitted from the scheduled time for
    # CONFERENCE_WINDOW_MINUTES; wrong access codes pause the room after CONFERENCE_CODE_MAX_TRIES.
    CONFERENCE_WINDOW_MINUTES = _int("CONFERENCE_WINDOW_MINUTES", 30)
    CONFERENCE_CODE_MAX_TRIES = _int("CONFERENCE_CODE_MAX_TRIES", 5)
    CONFERENCE_CODE_LOCK_MINUTES = _int("CONFERENCE_CODE_LOCK_MINUTES", 15)
    CONFERENCE_CODE_RATE_LIMIT = os.environ.get("CONFERENCE_CODE_RATE_LIMIT", "20 per 15 minutes")
    PASSWORD_RATE_LIMIT = os.environ.get("PASSWORD_RATE_LIMIT", "30 per 15 minutes")
    # Media: where segments are written (empty: <INSTANCE_DIR>/recordings), the free space a
    # recording needs, the calls one media process accepts, ICE servers handed to browsers and
    # to the media peer (JSON list of RTCIceServer; empty: none, no public STUN is contacted),
    # and the address the media peer announces in its candidates (behind a router: the public IP).
    RECORDINGS_ROOT = os.environ.get("RECORDINGS_ROOT", "")
    RECORDING_MIN_FREE_MB = _int("RECORDING_MIN_FREE_MB", 2048)
    # Calls per media process (one event loop, about one core at most): at 10 calls one process
    # keeps its loop lag p99 ≤ 5 ms and recordings at 30 fps on 2 quiet CPUs (bench/media.py,
    # docs/performance.md). The launcher runs MEDIA_PROCESSES of them (1; more on machines with
    # more CPUs) and web places each new room on the least busy one.
    MEDIA_CAPACITY = _int("MEDIA_CAPACITY", 10)
    ICE_SERVERS = os.environ.get("ICE_SERVERS", "[]")
    # TURN (coturn with use-auth-secret, docs/deploy.md): each browser and the media peer get
    # time-limited credentials made from TURN_SECRET; "relay" forces every call through TURN.
    TURN_URLS = os.environ.get("TURN_URLS", "")
    TURN_SECRET = os.environ.get("TURN_SECRET", "")
    TURN_TTL_SECONDS = _int("TURN_TTL_SECONDS", 3600)
    ICE_TRANSPORT_POLICY = os.environ.get("ICE_TRANSPORT_POLICY", "all")
    MEDIA_ANNOUNCED_ADDRESS = os.environ.get("MEDIA_ANNOUNCED_ADDRESS", "")
    MEDIA_PORT_MIN = _int("MEDIA_PORT_MIN", 0)
    MEDIA_PORT_MAX = _int("MEDIA_PORT_MAX", 0)
    # Seconds web waits for the media process to answer a command.
    MEDIA_TIMEOUT = _int("MEDIA_TIMEOUT", 8)

    # Issuance (docs/issuance.md). The certificate authority: "builtin" (the built-in CA for
    # trials and private use, "homologação"; created by `flask ca init`, its keys under CA_DIR)
    # or "cmp" (an external CA over CMP). KEYS_PASSPHRASE encrypts every private key the office
    # holds (built-in CA, agents', office seal, local TSA); keep it out of backups.
    CA_BACKEND = os.environ.get("CA_BACKEND", "builtin")
    CA_DIR = os.environ.get("CA_DIR", "")  # empty: <INSTANCE_DIR>/ca
    KEYS_PASSPHRASE = os.environ.get("KEYS_PASSPHRASE", "")
    CA_ISSUING_NAME = os.environ.get("CA_ISSUING_NAME", "")  # OU of ICP-Brasil subjects (CMP)
    CA_CPS_URL = os.environ.get("CA_CPS_URL", "")  # the CA's DPC; empty: PUBLIC_URL/ac/dpc
    CMP_URL = os.environ.get("CMP_URL", "")
    CMP_RECIPIENT = os.environ.get("CMP_RECIPIENT", "")
    CMP_REFERENCE = os.environ.get("CMP_REFERENCE", "")
    CMP_SECRET = os.environ.get("CMP_SECRET", "")
    CMP_TRUSTED = os.environ.get("CMP_TRUSTED", "")  # PEM file of the CA's certificates
    # An external RFC 3161 timestamp authority; empty: the local TSA built in.
    TSA_URL = os.environ.get("TSA_URL", "")
    # The holder's issuance link, and wrong revocation passwords before a pause.
    ISSUANCE_LINK_DAYS = _int("ISSUANCE_LINK_DAYS", 7)
    ISSUANCE_MAX_TRIES = _int("ISSUANCE_MAX_TRIES", 5)
    ISSUANCE_LOCK_MINUTES = _int("ISSUANCE_LOCK_MINUTES", 30)
    CRL_VALID_HOURS = _int("CRL_VALID_HOURS", 24)
    # SMS (docs/sms.md): "outbox" writes each message to SMS_OUTBOX_DIR, "http" posts it to a
    # gateway.
    SMS_BACKEND = os.environ.get("SMS_BACKEND", "outbox")
    SMS_GATEWAY_URL = os.environ.get("SMS_GATEWAY_URL", "")
    SMS_GATEWAY_TOKEN = os.environ.get("SMS_GATEWAY_TOKEN", "")
    SMS_SENDER = os.environ.get("SMS_SENDER", "VideoAR")
    SMS_OUTBOX_DIR = os.environ.get("SMS_OUTBOX_DIR", "")  # empty: <INSTANCE_DIR>/sms-outbox
    SMS_TIMEOUT = _int("SMS_TIMEOUT", 15)
    SMS_MAX_ATTEMPTS = _int("SMS_MAX_ATTEMPTS", 8)
    SMS_RETRY_INTERVALS = [10, 30, 60, 120, 300, 600, 1800]
    SMS_SWEEP_SECONDS = _int("SMS_SWEEP_SECONDS", 60)
    SMS_SWEEP_MIN_AGE_SECONDS = _int("SMS_SWEEP_MIN_AGE_SECONDS", 60)

    # Encryption at rest of face photos, stills and recordings (docs/encryption.md):
    # "keyid:base64(32 bytes)[,older…]", the first encrypts, the others only decrypt. Empty: one
    # key generated once into <INSTANCE_DIR>/data_keys. Keep it apart from the storage's backups.
    DATA_KEYS = os.environ.get("DATA_KEYS", "")

    # Backups (docs/backup.md): where the scheduled job writes archives (empty:
    # <INSTANCE_DIR>/backups), how many it keeps, seconds between runs, and its job timeout.
    # Keys and secrets are never in the archives.
    BACKUP_DIR = os.environ.get("BACKUP_DIR", "")
    BACKUP_KEEP = _int("BACKUP_KEEP", 7)
    BACKUP_SECONDS = _int("BACKUP_SECONDS", 86400)
    BACKUP_TIMEOUT = _int("BACKUP_TIMEOUT", 6 * 3600)

    # Retention (docs/retention.md): documents and termos kept RETENTION_DOCUMENT_YEARS after
    # the certificate's expiry or revocation, audit epochs RETENTION_AUDIT_YEARS after closing,
    # requests that never reached issuance RETENTION_UNISSUED_DAYS after their last change.
    RETENTION_DOCUMENT_YEARS = _int("RETENTION_DOCUMENT_YEARS", 10)
    RETENTION_AUDIT_YEARS = _int("RETENTION_AUDIT_YEARS", 6)
    RETENTION_UNISSUED_DAYS = _int("RETENTION_UNISSUED_DAYS", 180)
    AUDIT_EPOCH_DAYS = _int("AUDIT_EPOCH_DAYS", 30)
    AUDIT_EPOCH_EVENTS = _int("AUDIT_EPOCH_EVENTS", 100000)
    RETENTION_SECONDS = _int("RETENTION_SECONDS", 3600)

    MAX_CONTENT_LENGTH = _int("MAX_CONTENT_LENGTH", 64 * 1024 * 1024)
    TESTING = False
    FORCE_HTTPS = _bool("FORCE_HTTPS", False)
    # Reverse proxies in front of web whose X-Forwarded-For/-Proto/-Host are believed
    # (werkzeug's ProxyFix): 0 when `./run.sh` serves browsers directly, 1 behind one Caddy.
    # Too many lets a client forge its address in the audit trail and the rate limits.
    PROXY_HOPS = _int("PROXY_HOPS", 0)
    # "text" (development) or "json": one JSON object a line, secrets and link tokens masked
    # (app/logging_setup.py, docs/operations.md).
    LOG_FORMAT = os.environ.get("LOG_FORMAT", "text").strip().lower()


class TestConfig(Config):
    TESTING = True
    SECRET_KEY = "test-secret-key-not-for-production"
    KEYS_PASSPHRASE = "test-keys-passphrase-not-for-production"
    SQLALCHEMY_DATABASE_URI = os.environ.get("TEST_DATABASE_URL", "sqlite:///:memory:")
    REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    PUBLIC_URL = "http://localhost"
    SERVER_NAME = None
    ALTCHA_MAX_NUMBER = 1000
    LOGIN_RATE_LIMIT = "1000 per minute"
    PUBLIC_FORM_RATE_LIMIT = "1000 per minute"
    PROTOCOL_RATE_LIMIT = "1000 per minute"
    CONFERENCE_CODE_RATE_LIMIT = "1000 per minute"
    PASSWORD_RATE_LIMIT = "1000 per minute"
    RECORDING_MIN_FREE_MB = 50
    MEDIA_TIMEOUT = 2
