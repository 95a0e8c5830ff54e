"""mailbox_access: shared and delegated mailboxes (docs/delegation.md)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mailbox_access",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("mailbox_id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column(
            "right",
            sa.Enum("read", "send", name="access_right", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("granted_by", sa.String(length=320), nullable=False),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_mailbox_access_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["mailbox_id"],
            ["mailboxes.id"],
            name=op.f("fk_mailbox_access_mailbox_id_mailboxes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mailbox_access")),
    )
    with op.batch_alter_table("mailbox_access", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_mailbox_access_account_id"), ["account_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_mailbox_access_mailbox_id"), ["mailbox_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("mailbox_access", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_mailbox_access_mailbox_id"))
        batch_op.drop_index(batch_op.f("ix_mailbox_access_account_id"))

    op.drop_table("mailbox_access")
