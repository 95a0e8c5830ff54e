"""revocations: one table every process's watcher reads; what a web session rests on (docs/revocation.md)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "revocations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=True),
        sa.Column("key", sa.String(length=500), nullable=False),
        sa.Column("reason", sa.String(length=100), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_revocations")),
    )
    with op.batch_alter_table("web_sessions") as batch:
        batch.add_column(
            sa.Column("rests_on", sa.String(length=600), nullable=False, server_default="")
        )
        batch.create_index(batch.f("ix_web_sessions_rests_on"), ["rests_on"])


def downgrade() -> None:
    with op.batch_alter_table("web_sessions") as batch:
        batch.drop_index(batch.f("ix_web_sessions_rests_on"))
        batch.drop_column("rests_on")
    op.drop_table("revocations")
