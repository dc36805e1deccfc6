"""Audit epochs closed by signed checkpoints; purging expired audit epochs

The audit chain is cut into epochs. Each `audit_checkpoint` row closes one epoch
(`first_seq`..`last_seq`, the hash of its last event) and carries the office seal's signature
over those fields, so that once an old epoch is purged whole the events after it still verify:
the first remaining event links to the purged checkpoint's `last_hash`.

Who may delete audit events, by database:

* PostgreSQL: `audit_event_refuse_change()` (migration 0002) is replaced. UPDATE is still
  always refused. DELETE is refused unless the transaction has set
  `SET LOCAL videoar.audit_purge_upto = '<seq>'`, the row's `seq` is at most that number, and
  an `audit_checkpoint` covering the row is already marked purged (`purged_at`). Only
  `app.services.retention` sets this, for one transaction, after marking the checkpoint; a
  stray DELETE elsewhere in the app still fails. The setting is not a secret: whoever can run
  SQL as the app can set it, as they could drop the trigger; the signed checkpoints and the
  hash chain are what detect that (`flask audit verify`).
* SQLite: there is no DELETE trigger at all (as in 0002: the tests empty the table between
  tests); UPDATE stays refused.

Checkpoints themselves: UPDATE may only set `purged_at` once (NULL to a time) and nothing
else; on PostgreSQL DELETE is refused. Downgrading after an epoch was purged leaves a chain
that no longer starts at the genesis hash: `flask audit verify` of the older code reports the
purged events missing.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23 09:00:00

"""
from alembic import op
import sqlalchemy as sa

import app.models.types

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

UTC = app.models.types.UTCDateTime

PG_EVENT_FUNCTION_PURGE = """
    CREATE OR REPLACE FUNCTION audit_event_refuse_change() RETURNS trigger
    LANGUAGE plpgsql AS $$
    DECLARE
        upto text := NULLIF(current_setting('videoar.audit_purge_upto', true), '');
    BEGIN
        IF TG_OP = 'DELETE' AND upto IS NOT NULL AND OLD.seq <= upto::bigint
                AND EXISTS (SELECT 1 FROM audit_checkpoint c
                            WHERE c.purged_at IS NOT NULL
                              AND c.first_seq <= OLD.seq AND c.last_seq >= OLD.seq) THEN
            RETURN OLD;
        END IF;
        RAISE EXCEPTION 'audit_event is append-only: % refused', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END;
    $$
"""
# As migration 0002 left it.
PG_EVENT_FUNCTION_0002 = """
    CREATE OR REPLACE FUNCTION audit_event_refuse_change() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'audit_event is append-only: % refused', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END;
    $$
"""

PG_UPGRADE = [
    PG_EVENT_FUNCTION_PURGE,
    """
    CREATE OR REPLACE FUNCTION audit_checkpoint_mark_purged_only() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'UPDATE' AND OLD.purged_at IS NULL AND NEW.purged_at IS NOT NULL
                AND NEW.id = OLD.id AND NEW.epoch = OLD.epoch
                AND NEW.first_seq = OLD.first_seq AND NEW.last_seq = OLD.last_seq
                AND NEW.last_hash = OLD.last_hash AND NEW.closed_at = OLD.closed_at
                AND NEW.signature = OLD.signature
                AND NEW.signer_certificate_der = OLD.signer_certificate_der
                AND NEW.signer_chain_der::text = OLD.signer_chain_der::text THEN
            RETURN NEW;
        END IF;
        RAISE EXCEPTION 'audit_checkpoint is append-only: % refused', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END;
    $$
    """,
    """
    CREATE TRIGGER audit_checkpoint_append_only
    BEFORE UPDATE OR DELETE ON audit_checkpoint
    FOR EACH ROW EXECUTE FUNCTION audit_checkpoint_mark_purged_only()
    """,
]
PG_DOWNGRADE = [
    "DROP TRIGGER IF EXISTS audit_checkpoint_append_only ON audit_checkpoint",
    "DROP FUNCTION IF EXISTS audit_checkpoint_mark_purged_only()",
    PG_EVENT_FUNCTION_0002,
]

SQLITE_UPGRADE = [
    """
    CREATE TRIGGER audit_checkpoint_append_only
    BEFORE UPDATE ON audit_checkpoint
    WHEN OLD.purged_at IS NOT NULL OR NEW.purged_at IS NULL
        OR NEW.id IS NOT OLD.id OR NEW.epoch IS NOT OLD.epoch
        OR NEW.first_seq IS NOT OLD.first_seq OR NEW.last_seq IS NOT OLD.last_seq
        OR NEW.last_hash IS NOT OLD.last_hash OR NEW.closed_at IS NOT OLD.closed_at
        OR NEW.signature IS NOT OLD.signature
        OR NEW.signer_certificate_der IS NOT OLD.signer_certificate_der
        OR NEW.signer_chain_der IS NOT OLD.signer_chain_der
    BEGIN
        SELECT RAISE(ABORT, 'audit_checkpoint is append-only: UPDATE refused');
    END
    """,
]
SQLITE_DOWNGRADE = [
    "DROP TRIGGER IF EXISTS audit_checkpoint_append_only",
]


def _run(statements):
    for statement in statements:
        op.execute(statement)


def upgrade():
    op.create_table(
        "audit_checkpoint",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("first_seq", sa.Integer(), nullable=False),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.Column("last_hash", sa.String(length=64), nullable=False),
        sa.Column("closed_at", UTC(), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.Column("signer_certificate_der", sa.LargeBinary(), nullable=False),
        sa.Column("signer_chain_der", sa.JSON(), nullable=False),
        sa.Column("purged_at", UTC(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_checkpoint")),
        sa.UniqueConstraint("epoch", name=op.f("uq_audit_checkpoint_epoch")),
        sa.UniqueConstraint("last_seq", name=op.f("uq_audit_checkpoint_last_seq")),
    )
    op.create_index(op.f("ix_audit_checkpoint_closed_at"), "audit_checkpoint", ["closed_at"],
                    unique=False)
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
    op.drop_index(op.f("ix_audit_checkpoint_closed_at"), table_name="audit_checkpoint")
    op.drop_table("audit_checkpoint")
