"""webmail: server-side sessions, OIDC logins under way, patients' oppositions, receipts (docs/webmail.md)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    _sessions()
    _logins()
    _oppositions()
    _receipts()


def _sessions() -> None:
    op.create_table(
        "web_sessions",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("pending", sa.Boolean(), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("mailbox", sa.String(length=320), nullable=False),
        sa.Column("language", sa.String(length=8), nullable=False),
        sa.Column("user_agent", sa.String(length=300), nullable=False),
        sa.Column("peer", sa.String(length=64), nullable=False),
        sa.Column("oidc_token_id", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_web_sessions_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_web_sessions")),
    )
    op.create_index(op.f("ix_web_sessions_account_id"), "web_sessions", ["account_id"])


def _logins() -> None:
    op.create_table(
        "web_logins",
        sa.Column("state_hash", sa.String(length=64), nullable=False),
        sa.Column("verifier", sa.String(length=128), nullable=False),
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("state_hash", name=op.f("pk_web_logins")),
    )


def _oppositions() -> None:
    op.create_table(
        "patient_oppositions",
        sa.Column("ins", sa.String(length=15), nullable=False),
        sa.Column("recorded_by", sa.String(length=320), nullable=False),
        sa.Column("note", sa.String(length=500), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("ins", name=op.f("pk_patient_oppositions")),
    )


def _receipts() -> None:
    op.create_table(
        "message_receipts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("mailbox_id", sa.Integer(), nullable=False),
        sa.Column("original_message_id", sa.String(length=998), nullable=False),
        sa.Column("recipient", sa.String(length=320), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "delivered",
                "delayed",
                "failed",
                "read",
                name="receipt_kind",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("detail", sa.String(length=1000), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["mailbox_id"],
            ["mailboxes.id"],
            name=op.f("fk_message_receipts_mailbox_id_mailboxes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_message_receipts")),
    )
    op.create_index(op.f("ix_message_receipts_mailbox_id"), "message_receipts", ["mailbox_id"])
    op.create_index(
        op.f("ix_message_receipts_original_message_id"),
        "message_receipts",
        ["original_message_id"],
    )


def downgrade() -> None:
    op.drop_table("message_receipts")
    op.drop_table("web_logins")
    op.drop_table("patient_oppositions")
    op.drop_table("web_sessions")
