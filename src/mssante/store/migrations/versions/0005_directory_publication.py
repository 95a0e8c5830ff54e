"""directory publication: the operator's outbox, the authority's publications (docs/publication.md)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    _outbox()
    _publications()


def _outbox() -> None:
    op.create_table(
        "directory_outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column(
            "operation",
            sa.Enum(
                "insert", "replace", "delete", name="outbox_operation", native_enum=False, length=16
            ),
            nullable=False,
        ),
        sa.Column("resource", sa.String(length=32), nullable=False),
        sa.Column("identifier", sa.String(length=200), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "pending", "sent", "failed", name="outbox_status", native_enum=False, length=16
            ),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claimed_by", sa.String(length=100), nullable=False),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(length=1000), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_directory_outbox")),
    )
    with op.batch_alter_table("directory_outbox", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_directory_outbox_address"), ["address"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_directory_outbox_next_attempt_at"), ["next_attempt_at"], unique=False
        )


def _publications() -> None:
    op.create_table(
        "directory_publications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("resource", sa.String(length=32), nullable=False),
        sa.Column("identifier", sa.String(length=32), nullable=False),
        sa.Column(
            "bal_type",
            sa.Enum("PER", "ORG", "APP", "CAB", name="mailbox_type", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("operator", sa.String(length=200), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=True),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("responsible", sa.String(length=500), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_directory_publications")),
        sa.UniqueConstraint("address", name=op.f("uq_directory_publications_address")),
    )
    with op.batch_alter_table("directory_publications", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_directory_publications_identifier"), ["identifier"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("directory_publications", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_directory_publications_identifier"))
    op.drop_table("directory_publications")
    with op.batch_alter_table("directory_outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_directory_outbox_next_attempt_at"))
        batch_op.drop_index(batch_op.f("ix_directory_outbox_address"))
    op.drop_table("directory_outbox")
