"""Issuance: second check, issued certificates, termos, signing credentials, CRLs

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22 06:00:00

"""
from alembic import op
import sqlalchemy as sa

import app.models.types


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

UTC = app.models.types.UTCDateTime


def upgrade():
    op.create_table('second_check',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('request_id', sa.Integer(), nullable=False),
    sa.Column('conference_id', sa.Integer(), nullable=True),
    sa.Column('verifier_id', sa.Integer(), nullable=False),
    sa.Column('decision', sa.String(length=10), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('recording_override', sa.Text(), nullable=True),
    sa.Column('decided_at', UTC(), nullable=False),
    sa.ForeignKeyConstraint(['conference_id'], ['conference.id'], name=op.f('fk_second_check_conference_id_conference')),
    sa.ForeignKeyConstraint(['request_id'], ['certificate_request.id'], name=op.f('fk_second_check_request_id_certificate_request')),
    sa.ForeignKeyConstraint(['verifier_id'], ['staff_user.id'], name=op.f('fk_second_check_verifier_id_staff_user')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_second_check'))
    )
    op.create_index(op.f('ix_second_check_request_id'), 'second_check', ['request_id'], unique=False)

    op.create_table('issued_certificate',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('request_id', sa.Integer(), nullable=False),
    sa.Column('serial', sa.String(length=64), nullable=False),
    sa.Column('subject', sa.String(length=500), nullable=False),
    sa.Column('not_before', UTC(), nullable=False),
    sa.Column('not_after', UTC(), nullable=False),
    sa.Column('fingerprint_sha256', sa.String(length=64), nullable=False),
    sa.Column('der', sa.LargeBinary(), nullable=False),
    sa.Column('chain_der', sa.JSON(), nullable=False),
    sa.Column('ca_label', sa.String(length=120), nullable=False),
    sa.Column('homologation', sa.Boolean(), nullable=False),
    sa.Column('key_storage', sa.String(length=20), nullable=False),
    sa.Column('issued_at', UTC(), nullable=False),
    sa.Column('revoked_at', UTC(), nullable=True),
    sa.Column('revocation_reason', sa.String(length=30), nullable=True),
    sa.Column('revoked_by', sa.String(length=200), nullable=True),
    sa.ForeignKeyConstraint(['request_id'], ['certificate_request.id'], name=op.f('fk_issued_certificate_request_id_certificate_request')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_issued_certificate')),
    sa.UniqueConstraint('serial', name=op.f('uq_issued_certificate_serial'))
    )
    op.create_index(op.f('ix_issued_certificate_request_id'), 'issued_certificate', ['request_id'], unique=False)
    op.create_index(op.f('ix_issued_certificate_not_after'), 'issued_certificate', ['not_after'], unique=False)
    op.create_index(op.f('ix_issued_certificate_revoked_at'), 'issued_certificate', ['revoked_at'], unique=False)

    op.create_table('issuance_attempt',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('request_id', sa.Integer(), nullable=False),
    sa.Column('failed', sa.Integer(), nullable=False),
    sa.Column('locked_until', UTC(), nullable=True),
    sa.Column('unlocked_at', UTC(), nullable=True),
    sa.ForeignKeyConstraint(['request_id'], ['certificate_request.id'], name=op.f('fk_issuance_attempt_request_id_certificate_request')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_issuance_attempt')),
    sa.UniqueConstraint('request_id', name=op.f('uq_issuance_attempt_request_id'))
    )

    op.create_table('termo',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('request_id', sa.Integer(), nullable=False),
    sa.Column('certificate_id', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('pending_signature', sa.JSON(), nullable=True),
    sa.Column('holder_accepted_at', UTC(), nullable=True),
    sa.Column('created_at', UTC(), nullable=False),
    sa.Column('updated_at', UTC(), nullable=False),
    sa.ForeignKeyConstraint(['certificate_id'], ['issued_certificate.id'], name=op.f('fk_termo_certificate_id_issued_certificate')),
    sa.ForeignKeyConstraint(['request_id'], ['certificate_request.id'], name=op.f('fk_termo_request_id_certificate_request')),
    sa.ForeignKeyConstraint(['sha256'], ['stored_file.sha256'], name=op.f('fk_termo_sha256_stored_file')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_termo')),
    sa.UniqueConstraint('certificate_id', name=op.f('uq_termo_certificate_id'))
    )
    op.create_index(op.f('ix_termo_request_id'), 'termo', ['request_id'], unique=False)

    op.create_table('signing_credential',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('purpose', sa.String(length=10), nullable=False),
    sa.Column('staff_user_id', sa.Integer(), nullable=True),
    sa.Column('subject', sa.String(length=500), nullable=False),
    sa.Column('not_after', UTC(), nullable=False),
    sa.Column('certificate_der', sa.LargeBinary(), nullable=False),
    sa.Column('chain_der', sa.JSON(), nullable=False),
    sa.Column('encrypted_key', sa.LargeBinary(), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_at', UTC(), nullable=False),
    sa.ForeignKeyConstraint(['staff_user_id'], ['staff_user.id'], name=op.f('fk_signing_credential_staff_user_id_staff_user')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_signing_credential'))
    )
    op.create_index(op.f('ix_signing_credential_purpose'), 'signing_credential', ['purpose'], unique=False)
    op.create_index(op.f('ix_signing_credential_staff_user_id'), 'signing_credential', ['staff_user_id'], unique=False)

    op.create_table('revocation_list',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('issuer', sa.String(length=20), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('this_update', UTC(), nullable=False),
    sa.Column('next_update', UTC(), nullable=False),
    sa.Column('der', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_revocation_list')),
    sa.UniqueConstraint('issuer', 'number', name=op.f('uq_revocation_list_issuer'))
    )


def downgrade():
    op.drop_table('revocation_list')
    op.drop_index(op.f('ix_signing_credential_staff_user_id'), table_name='signing_credential')
    op.drop_index(op.f('ix_signing_credential_purpose'), table_name='signing_credential')
    op.drop_table('signing_credential')
    op.drop_index(op.f('ix_termo_request_id'), table_name='termo')
    op.drop_table('termo')
    op.drop_table('issuance_attempt')
    op.drop_index(op.f('ix_issued_certificate_revoked_at'), table_name='issued_certificate')
    op.drop_index(op.f('ix_issued_certificate_not_after'), table_name='issued_certificate')
    op.drop_index(op.f('ix_issued_certificate_request_id'), table_name='issued_certificate')
    op.drop_table('issued_certificate')
    op.drop_index(op.f('ix_second_check_request_id'), table_name='second_check')
    op.drop_table('second_check')
