"""LGPD: the office's data protection officer (encarregado), named in the privacy notice

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22 07:00:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('office_settings', schema=None) as batch_op:
        batch_op.add_column(sa.Column('privacy_contact_name', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('privacy_contact_email', sa.String(length=254), nullable=True))


def downgrade():
    with op.batch_alter_table('office_settings', schema=None) as batch_op:
        batch_op.drop_column('privacy_contact_email')
        batch_op.drop_column('privacy_contact_name')
