"""Upgrading: a database made by the first migration and filled with data is migrated to the
latest one (`flask db upgrade`, which `./run.sh` runs at every start) with nothing lost, its
audit chain intact, and the app working on it.

Each backend gets a database of its own: a file under tmp_path, or a PostgreSQL database
created for the test and dropped afterwards.
"""
import base64
import hashlib
import hmac
import json
import uuid
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from argon2 import PasswordHasher
from sqlalchemy import MetaData, Table, bindparam, select, text
from sqlalchemy.engine import make_url

from app import create_app
from app.config import TestConfig
from app.models.types import UTCDateTime
from app.services import audit
from tests.conftest import BACKENDS, POSTGRES_URL, CSRFClient

PASSWORD = "senha-antiga-0001"
SECRET_KEY = "upgrade-test-secret-key"
T0 = datetime(2026, 11, 21, 12, 0, 0, 123456, tzinfo=timezone.utc)


@pytest.fixture(params=BACKENDS)
def empty_database(request, tmp_path):
    """The URL of a new, empty database of one kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'upgrade.db'}"
        return
    url = make_url(POSTGRES_URL)
    name = f"videoar_upgrade_{uuid.uuid4().hex[:12]}"
    server = url.set(drivername="postgresql", database="postgres") \
        .render_as_string(hide_password=False)
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def make_app(db_url, instance):
    class Config(TestConfig):
        SQLALCHEMY_DATABASE_URI = db_url
        SECRET_KEY = globals()["SECRET_KEY"]
        INSTANCE_DIR = instance
        RATELIMIT_STORAGE_URI = TestConfig.REDIS_URL

    application = create_app(Config)
    application.test_client_class = CSRFClient
    return application


def at(minutes):
    return T0 + timedelta(minutes=minutes)


def link_token(nonce):
    """The link token as app/services/links.py derives it from the nonce."""
    mac = hmac.new(SECRET_KEY.encode(), f"access-link:{nonce}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def rows_of_0001():
    """Realistic rows for every table of migration 0001, in insertion order."""
    nonce = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
    token = link_token(nonce)
    rows = {
        "staff_user": [dict(
            id=1, email="ana@cartorio.example", name="Ana Agente",
            password_hash=PasswordHasher().hash(PASSWORD), is_agent=True, is_verifier=False,
            is_admin=True, active=True, failed_logins=0, locked_until=None,
            last_login_at=at(1), session_version=1, created_at=at(0))],
        "office_settings": [dict(
            id=1, authority_name="AR Cartório Central", cnpj="11222333000181",
            phone="+551133334444", email="contato@cartorio.example",
            address="Rua Direita, 100 — Centro", city="São Paulo", uf="SP",
            time_zone="America/Sao_Paulo", reminder_after_days=3, expire_after_days=30,
            review_promise_business_days=2, updated_at=at(2))],
        "office_closure": [dict(id=1, day=datetime(2026, 12, 25).date(), description="Natal")],
        "product": [dict(
            id=1, code="ecpf-a1", name="Certificado Digital e-CPF A1", kind="e_cpf",
            cert_type="A1", policy_oid="2.16.76.1.2.1.1", validity_months=12,
            key_storage="software", needs_documents=True, needs_second_check=True,
            active=True)],
        "person": [dict(
            id=1, cpf="52998224725", name="Maria da Silva Souza",
            birth_date=datetime(1985, 3, 9).date(), email="maria@cliente.example",
            phone="+5511987654321", nis="12345678901", rg_number="123456789", rg_issuer="SSP",
            rg_uf="SP", voter_id="123456789012", voter_zone="123", voter_section="4567",
            voter_city="SAO PAULO", voter_uf="SP", cei="123456789012", created_at=at(3),
            updated_at=at(3))],
        "company": [dict(
            id=1, cnpj="11444777000161", legal_name="Souza Comércio Ltda", city="Santos",
            uf="SP", cei=None, responsible_id=1, created_at=at(4))],
        "certificate_request": [dict(
            id=1, protocol="1234567897", product_id=1, holder_id=1, company_id=None,
            state="documents_pending", origin="agent", assigned_agent_id=1, created_by_id=1,
            created_at=at(5), state_changed_at=at(5), last_client_activity_at=None,
            reminder_sent_at=None)],
        "access_link": [dict(
            id=1, request_id=1, purpose="documents", nonce=nonce,
            token_digest=hashlib.sha256(token.encode()).hexdigest(), created_at=at(5),
            expires_at=T0 + timedelta(days=3650), revoked_at=None, last_used_at=None)],
        "background_job": [dict(
            id="job-0001", name="send_email", description="E-mail 1", request_id=1,
            status="finished", attempts=1, error=None, created_at=at(5), started_at=at(6),
            finished_at=at(6))],
        "email_message": [dict(
            id=1, message_id="<0001.1@cartorio.example>", kind="documents_invite",
            request_id=1, to_address="maria@cliente.example",
            subject="Importe seus documentos — protocolo 1234567897",
            body_text="Olá, Maria.\nImporte seus documentos.", body_html="<p>Olá, Maria.</p>",
            transport="outbox", status="sent", attempts=1, last_error=None, created_at=at(5),
            sent_at=at(6), job_id="job-0001")],
    }
    events, prev = [], audit.GENESIS_HASH
    for seq, (action, extra) in enumerate([
        ("staff.create", dict(object_type="staff_user", object_id="1",
                              details=json.dumps({"roles": ["admin", "agent"]}))),
        ("person.register", dict(object_type="person", object_id="1")),
        ("request.create", dict(object_type="certificate_request", object_id="1",
                                request_id=1, details=json.dumps({"origin": "agent"}))),
        ("request.transition", dict(object_type="certificate_request", object_id="1",
                                    request_id=1, from_state="requested",
                                    to_state="documents_pending", reason="Início")),
        ("email.sent", dict(object_type="email_message", object_id="1", request_id=1)),
    ], start=1):
        values = dict(seq=seq, at=at(5 + seq), actor_type="staff", actor_id=1,
                      actor_label="ana@cartorio.example", action=action, object_type=None,
                      object_id=None, request_id=None, from_state=None, to_state=None,
                      reason=None, ip="203.0.113.7", user_agent="Mozilla/5.0 (X11; Linux)",
                      details=None, prev_hash=prev)
        values.update(extra)
        # The hash exactly as the app computed it then: these are 0001's hashed fields.
        values["hash"] = prev = audit._hash_values(values)
        events.append(dict(id=seq, **values))
    rows["audit_event"] = events
    return rows, token


def insert(conn, table, row):
    params = [bindparam(k, v, type_=UTCDateTime()) if isinstance(v, datetime)
              else bindparam(k, v) for k, v in row.items()]
    sql = text(f"INSERT INTO {table} ({', '.join(row)}) "
               f"VALUES ({', '.join(':' + k for k in row)})").bindparams(*params)
    conn.execute(sql)


def stored(value):
    """A value as the database hands it back through a reflected table."""
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).replace(tzinfo=None)
    return value


def test_upgrade_from_the_first_migration_keeps_everything(empty_database, tmp_path):
    from flask_migrate import upgrade

    from app.extensions import db

    application = make_app(empty_database, tmp_path / "instance")
    rows, token = rows_of_0001()
    with application.app_context():
        upgrade(revision="0001")
        with db.engine.begin() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0001"
            for table, table_rows in rows.items():
                for row in table_rows:
                    insert(conn, table, row)
            last = rows["audit_event"][-1]
            conn.execute(text("UPDATE audit_chain_head SET last_seq = :s, last_hash = :h "
                              "WHERE id = 1"), {"s": last["seq"], "h": last["hash"]})
        if db.engine.dialect.name == "postgresql":
            with db.engine.begin() as conn:  # ids were given: move the sequences past them
                for table in rows:
                    if table != "background_job":
                        conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', "
                                          f"'id'), (SELECT max(id) FROM {table}))"))
        db.engine.dispose()

        upgrade()

        with db.engine.connect() as conn:
            heads = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
            metadata = MetaData()
            for table, table_rows in rows.items():
                reflected = Table(table, metadata, autoload_with=conn)
                found = [dict(r._mapping) for r in
                         conn.execute(select(reflected).order_by(reflected.c.id))]
                assert len(found) == len(table_rows), table
                for want, got in zip(table_rows, found):
                    assert {k: stored(v) for k, v in want.items()} == {
                        k: got[k] for k in want}, table
        from alembic.script import ScriptDirectory

        script = ScriptDirectory.from_config(
            application.extensions["migrate"].migrate.get_config())
        assert heads == [script.get_current_head()]

        check = audit.check_chain()
        assert check.breaks == [] and check.events == 5 and check.last_seq == 5
        db.session.remove()
        db.engine.dispose()

    # The app works on the upgraded data: the old password, the request page, the client's
    # link, a new audit event on the old chain.
    with application.app_context():
        client = application.test_client()
        assert client.post("/equipe/entrar", data={"email": "ana@cartorio.example",
                                                   "password": PASSWORD}).status_code == 302
        page = client.get("/solicitacoes/1")
        assert page.status_code == 200
        assert "1234567897" in page.text and "Maria da Silva Souza" in page.text
        assert client.get(f"/documentos/{token}").status_code == 200
        check = audit.check_chain()
        assert check.breaks == [] and check.last_seq >= 6
        from app.models import AuditEvent

        newest = db.session.execute(select(AuditEvent).where(AuditEvent.seq == 6)).scalar_one()
        assert newest.action == "staff.login" and newest.prev_hash == rows["audit_event"][-1]["hash"]
        from app.services.office import get_settings

        settings = get_settings()
        assert settings.authority_name == "AR Cartório Central"
        assert settings.privacy_contact_email is None  # a column added later, empty
        db.session.remove()
        for engine in db.engines.values():
            engine.dispose()
