"""directory: the national directory's entries, its type-ahead index, its imports (docs/directory.md)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Code point order on both engines (see store/models.py, _WORD_TYPE).
_WORD = sa.String(length=64).with_variant(sa.String(length=64, collation="C"), "postgresql")


def upgrade() -> None:
    _entries()
    _words()
    _structures()
    _imports()


def _entries() -> None:
    op.create_table(
        "directory_entries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column(
            "bal_type",
            sa.Enum("PER", "ORG", "APP", "CAB", name="mailbox_type", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("id_nat_pp", sa.String(length=32), nullable=False),
        sa.Column("structure_id", sa.String(length=32), nullable=False),
        sa.Column("profession_code", sa.String(length=8), nullable=False),
        sa.Column("postal_code", sa.String(length=10), nullable=False),
        sa.Column("city", sa.String(length=200), nullable=False),
        sa.Column("liste_rouge", sa.Boolean(), nullable=False),
        sa.Column(
            "source",
            sa.Enum(
                "extraction", "operator", name="directory_source", native_enum=False, length=16
            ),
            nullable=False,
        ),
        sa.Column("ordinal", sa.BigInteger(), nullable=False),
        sa.Column("content_hash", sa.BigInteger(), nullable=False),
        sa.Column("sort_name", _WORD, nullable=False),
        sa.Column("search_text", sa.Text(), nullable=False),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_directory_entries")),
    )
    with op.batch_alter_table("directory_entries", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_directory_entries_address"), ["address"], unique=True)
        batch_op.create_index(
            batch_op.f("ix_directory_entries_id_nat_pp"), ["id_nat_pp"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_directory_entries_ordinal"), ["ordinal"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_directory_entries_structure_id"), ["structure_id"], unique=False
        )


def _words() -> None:
    op.create_table(
        "directory_words",
        sa.Column("word", _WORD, nullable=False),
        sa.Column("weight", sa.Integer(), nullable=False),
        sa.Column("sort_name", _WORD, nullable=False),
        sa.Column("entry_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(
            "word", "weight", "sort_name", "entry_id", name=op.f("pk_directory_words")
        ),
        sqlite_with_rowid=False,
    )


def _structures() -> None:
    op.create_table(
        "directory_structures",
        sa.Column("structure_id", sa.String(length=32), nullable=False),
        sa.Column("search_text", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("structure_id", name=op.f("pk_directory_structures")),
    )
    op.create_table(
        "directory_structure_words",
        sa.Column("word", _WORD, nullable=False),
        sa.Column("structure_id", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("word", "structure_id", name=op.f("pk_directory_structure_words")),
        sqlite_with_rowid=False,
    )


def _imports() -> None:
    op.create_table(
        "directory_imports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("file_name", sa.String(length=300), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("actor", sa.String(length=320), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lines", sa.Integer(), nullable=False),
        sa.Column("added", sa.Integer(), nullable=False),
        sa.Column("updated", sa.Integer(), nullable=False),
        sa.Column("removed", sa.Integer(), nullable=False),
        sa.Column("bad_lines", sa.Integer(), nullable=False),
        sa.Column("newline", sa.String(length=2), nullable=False),
        sa.Column("bom", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_directory_imports")),
    )


def downgrade() -> None:
    op.drop_table("directory_imports")
    op.drop_table("directory_structure_words")
    op.drop_table("directory_structures")
    op.drop_table("directory_words")
    with op.batch_alter_table("directory_entries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_directory_entries_structure_id"))
        batch_op.drop_index(batch_op.f("ix_directory_entries_ordinal"))
        batch_op.drop_index(batch_op.f("ix_directory_entries_id_nat_pp"))
        batch_op.drop_index(batch_op.f("ix_directory_entries_address"))
    op.drop_table("directory_entries")
