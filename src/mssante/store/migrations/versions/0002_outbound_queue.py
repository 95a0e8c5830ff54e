"""outbound queue: queue_messages and queue_recipients (docs/queue.md)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "queue_messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("blob_sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sender", sa.String(length=320), nullable=False),
        sa.Column("account", sa.String(length=320), nullable=False),
        sa.Column("message_id", sa.String(length=998), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_queue_messages")),
    )
    with op.batch_alter_table("queue_messages", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_queue_messages_blob_sha256"), ["blob_sha256"], unique=False
        )

    op.create_table(
        "queue_recipients",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("message_pk", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("domain", sa.String(length=253), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "queued",
                "deferred",
                "in_flight",
                "delivered",
                "failed",
                name="queue_status",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_code", sa.Integer(), nullable=True),
        sa.Column("last_reply", sa.String(length=1000), nullable=False),
        sa.Column("remote_mta", sa.String(length=253), nullable=False),
        sa.Column("delay_notified", sa.Boolean(), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claimed_by", sa.String(length=100), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_pk"],
            ["queue_messages.id"],
            name=op.f("fk_queue_recipients_message_pk_queue_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_queue_recipients")),
    )
    with op.batch_alter_table("queue_recipients", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_queue_recipients_domain"), ["domain"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_queue_recipients_message_pk"), ["message_pk"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_queue_recipients_next_attempt_at"), ["next_attempt_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("queue_recipients", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_queue_recipients_next_attempt_at"))
        batch_op.drop_index(batch_op.f("ix_queue_recipients_message_pk"))
        batch_op.drop_index(batch_op.f("ix_queue_recipients_domain"))

    op.drop_table("queue_recipients")
    with op.batch_alter_table("queue_messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_queue_messages_blob_sha256"))

    op.drop_table("queue_messages")
