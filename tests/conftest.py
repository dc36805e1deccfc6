"""Fixtures: the app on real SQLite and PostgreSQL databases, real Redis, factories.

Every test that uses `app` runs once per database in VIDEOAR_TEST_DBS (default both). The
schema is built by the Alembic migrations once per database and session; each test starts
from emptied tables (TRUNCATE on PostgreSQL), so tests may commit and other processes (a real
RQ worker) see their data.
"""
import os
import re
import tempfile
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from sqlalchemy import create_engine, text

from app import create_app
from app.config import TestConfig

pytest_plugins = ["tests.support.processes", "tests.support.browser"]

BACKENDS = [b for b in os.environ.get("VIDEOAR_TEST_DBS", "sqlite,postgresql").split(",") if b]
# Browser tests run against one database: the production choice.
BROWSER_BACKEND = os.environ.get("VIDEOAR_BROWSER_DB", "postgresql" if "postgresql" in BACKENDS else BACKENDS[0])
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
STAFF_PASSWORD = "senha-de-teste-123"

_tmp_root = Path(tempfile.mkdtemp(prefix="videoar-tests-"))


def pytest_collection_modifyitems(config, items):
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        backend = callspec.params.get("database") if callspec else None
        one_db = item.get_closest_marker("browser") or item.get_closest_marker("one_database")
        if one_db and backend not in (None, BROWSER_BACKEND):
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def _config_for(db_url: str, instance: Path):
    class Config(TestConfig):
        SQLALCHEMY_DATABASE_URI = db_url
        REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
        INSTANCE_DIR = instance
        RATELIMIT_STORAGE_URI = REDIS_URL

    return Config


@pytest.fixture(scope="session", params=BACKENDS)
def database(request):
    """A migrated, empty database of one kind; yields its URL."""
    backend = request.param
    if backend == "sqlite":
        url = f"sqlite:///{_tmp_root / 'test.db'}"
        Path(_tmp_root / "test.db").unlink(missing_ok=True)
    elif backend == "postgresql":
        url = POSTGRES_URL
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        engine.dispose()
    else:
        raise ValueError(backend)
    app = create_app(_config_for(url, _tmp_root / "instance"))
    with app.app_context():
        from flask_migrate import upgrade

        upgrade()
        from app.extensions import db

        db.engine.dispose()
    return url


def empty_database(db):
    tables = [t.name for t in reversed(db.metadata.sorted_tables)]
    with db.engine.begin() as conn:
        if db.engine.dialect.name == "postgresql":
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for t in tables:
                conn.execute(text(f"DELETE FROM {t}"))
        conn.execute(text("INSERT INTO audit_chain_head (id, last_seq, last_hash) "
                          "VALUES (1, 0, :h)"), {"h": "0" * 64})


def _check_no_unexpected_email(request, db):
    """Fail a test that records an email it did not declare (by using `mailbox`), as
    Indico's `disallow` fixture does."""
    if "mailbox" in request.fixturenames or request.node.get_closest_marker("emails_ok"):
        return
    from sqlalchemy import func, select

    from app.models import EmailMessage

    count = db.session.execute(select(func.count(EmailMessage.id))).scalar_one()
    db.session.remove()
    assert count == 0, f"test recorded {count} email(s) without declaring `mailbox`"


class CSRFClient(FlaskClient):
    """A test client that sends the page's CSRF token the way the browser does."""

    def csrf_token(self):
        # Read fresh each time: logging in starts a new session with a new token.
        response = self.get("/")
        return re.search(r'"X-CSRFToken": "([^"]+)"', response.text).group(1)

    def open(self, *args, **kwargs):
        method = kwargs.get("method", "GET").upper()
        if method in ("POST", "PUT", "PATCH", "DELETE") and kwargs.pop("csrf", True):
            headers = dict(kwargs.pop("headers", None) or {})
            headers.setdefault("X-CSRFToken", self.csrf_token())
            kwargs["headers"] = headers
        # The test body's transaction ends around each request, so that it neither holds a
        # lock the request waits for nor keeps reading an old snapshot afterwards.
        from app.extensions import db

        db.session.commit()
        # A fresh app context per request, as in production: its own `g` and its own
        # database session, not the test body's.
        with self.application.app_context():
            response = super().open(*args, **kwargs)
        db.session.commit()
        return response


@pytest.fixture(autouse=True)
def _test_body_reads_without_write_lock():
    """Test bodies read like GET requests: they must not hold SQLite's write lock while a
    request or a worker process waits for it."""
    from app.db_setup import sqlite_immediate

    token = sqlite_immediate.set(False)
    yield
    sqlite_immediate.reset(token)


@pytest.fixture
def app(database, tmp_path, request):
    instance = tmp_path / "instance"
    application = create_app(_config_for(database, instance))
    application.test_client_class = CSRFClient
    from app.extensions import db

    with application.app_context():
        empty_database(db)
        from app.jobs import redis_connection

        redis_connection().flushdb()
        from app.services.admin import ensure_default_products
        from app.services.office import get_settings

        settings = get_settings()
        settings.authority_name = "AR Teste"
        settings.cnpj = "11222333000181"
        settings.phone = "+551133334444"
        settings.email = "contato@ar-teste.example"
        settings.uf = "SP"
        ensure_default_products()
        db.session.commit()
        yield application
        db.session.remove()
        _check_no_unexpected_email(request, db)
        for engine in db.engines.values():
            engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def db(app):
    from app.extensions import db as _db

    return _db


class Factory:
    def __init__(self, app):
        self.app = app
        self._n = 0

    def _next(self):
        self._n += 1
        return self._n

    def staff(self, roles=("agent",), email=None, password=STAFF_PASSWORD, name=None):
        from app.extensions import db
        from app.services import staff

        n = self._next()
        user = staff.create_staff(email or f"staff{n}@ar-teste.example", name or f"Agente {n}",
                                  password, list(roles))
        db.session.commit()
        return user

    def person(self, cpf="52998224725", **data):
        from datetime import date

        from app.extensions import db
        from app.services import people

        defaults = dict(name="Maria da Silva Souza", birth_date=date(1985, 3, 9),
                        email="maria@cliente.example", phone="+5511987654321",
                        nis="12345678901", rg_number="123456789", rg_issuer="SSP", rg_uf="SP",
                        voter_id="123456789012", voter_zone="123", voter_section="4567",
                        voter_city="SAO PAULO", voter_uf="SP", cei="123456789012")
        defaults.update(data)
        person = people.register_person(cpf, **defaults)
        db.session.commit()
        return person

    def product(self, code="ecpf-a1"):
        from sqlalchemy import select

        from app.extensions import db
        from app.models import Product

        return db.session.execute(select(Product).where(Product.code == code)).scalar_one()

    def request(self, person=None, product_code="ecpf-a1", agent=None, company=None):
        from app.extensions import db
        from app.services import requests

        person = person or self.person()
        cert_request = requests.open_request(product=self.product(product_code), holder=person,
                                             company=company, origin="agent", created_by=agent)
        db.session.commit()
        return cert_request


@pytest.fixture
def factory(app):
    return Factory(app)


class Auth:
    def __init__(self, client):
        self.client = client

    def login(self, email, password=STAFF_PASSWORD):
        return self.client.post("/equipe/entrar", data={"email": email, "password": password})

    def logout(self):
        return self.client.post("/equipe/sair")


@pytest.fixture
def auth(client):
    return Auth(client)


@pytest.fixture
def agent(factory):
    return factory.staff(roles=("agent",), email="agente@ar-teste.example", name="Ana Agente")


@pytest.fixture
def admin(factory):
    return factory.staff(roles=("admin",), email="admin@ar-teste.example", name="Alice Admin")


class Mailbox:
    """The emails the app recorded (and queued), as the tests read them."""

    def __init__(self, app):
        self.app = app

    def messages(self, kind=None):
        from sqlalchemy import select

        from app.extensions import db
        from app.models import EmailMessage

        stmt = select(EmailMessage).order_by(EmailMessage.id)
        if kind:
            stmt = stmt.where(EmailMessage.kind == kind)
        return db.session.execute(stmt).scalars().all()


@pytest.fixture
def mailbox(app):
    return Mailbox(app)
