"""Audit events append-only in the database.

The database refuses to change an audit event: PostgreSQL refuses UPDATE and DELETE, SQLite
refuses UPDATE (a DELETE trigger would also stop the tests from emptying the table between
tests; a deleted event is still caught by `flask audit verify`). On both, the chain head may
only move forward one event at a time. An attacker who can drop or disable the triggers can
still edit rows: the hash chain is what detects that.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 12:00:00

"""
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

PG_UPGRADE = [
    """
    CREATE OR REPLACE FUNCTION audit_event_refuse_change() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'audit_event is append-only: % refused', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END;
    $$
    """,
    """
    CREATE TRIGGER audit_event_append_only
    BEFORE UPDATE OR DELETE ON audit_event
    FOR EACH ROW EXECUTE FUNCTION audit_event_refuse_change()
    """,
    """
    CREATE OR REPLACE FUNCTION audit_chain_head_forward_only() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'DELETE' OR NEW.id <> OLD.id OR NEW.last_seq < OLD.last_seq
                OR NEW.last_seq > OLD.last_seq + 1 THEN
            RAISE EXCEPTION 'audit_chain_head only moves forward: % refused', TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        RETURN NEW;
    END;
    $$
    """,
    """
    CREATE TRIGGER audit_chain_head_forward_only
    BEFORE UPDATE OR DELETE ON audit_chain_head
    FOR EACH ROW EXECUTE FUNCTION audit_chain_head_forward_only()
    """,
]
PG_DOWNGRADE = [
    "DROP TRIGGER IF EXISTS audit_chain_head_forward_only ON audit_chain_head",
    "DROP FUNCTION IF EXISTS audit_chain_head_forward_only()",
    "DROP TRIGGER IF EXISTS audit_event_append_only ON audit_event",
    "DROP FUNCTION IF EXISTS audit_event_refuse_change()",
]

SQLITE_UPGRADE = [
    """
    CREATE TRIGGER audit_event_append_only
    BEFORE UPDATE ON audit_event
    BEGIN
        SELECT RAISE(ABORT, 'audit_event is append-only: UPDATE refused');
    END
    """,
    """
    CREATE TRIGGER audit_chain_head_forward_only
    BEFORE UPDATE ON audit_chain_head
    WHEN NEW.id <> OLD.id OR NEW.last_seq < OLD.last_seq OR NEW.last_seq > OLD.last_seq + 1
    BEGIN
        SELECT RAISE(ABORT, 'audit_chain_head only moves forward: UPDATE refused');
    END
    """,
]
SQLITE_DOWNGRADE = [
    "DROP TRIGGER IF EXISTS audit_chain_head_forward_only",
    "DROP TRIGGER IF EXISTS audit_event_append_only",
]


def _run(statements):
    for statement in statements:
        op.execute(statement)


def upgrade():
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        _run(PG_UPGRADE)
    elif dialect == "sqlite":
        _run(SQLITE_UPGRADE)


def downgrade():
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        _run(PG_DOWNGRADE)
    elif dialect == "sqlite":
        _run(SQLITE_DOWNGRADE)
