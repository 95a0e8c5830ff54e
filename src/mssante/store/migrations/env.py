"""Alembic environment: the engine comes from the :class:`Database` the caller passed in."""

from __future__ import annotations

from alembic import context

from mssante.store.models import Base

db = context.config.attributes["database"]

with db.engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=db.is_sqlite,  # SQLite cannot ALTER most things: copy-and-move
        compare_type=True,
    )
    context.run_migrations()
