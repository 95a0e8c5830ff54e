"""`mssante db`: create or upgrade the schema."""

from __future__ import annotations

from pathlib import Path

import click

from mssante.cli.common import config_option, friendly_errors, settings_from
from mssante.store.db import open_database
from mssante.store.migrate import current


@click.group(name="db")
def group() -> None:
    """The metadata database (SQLite by default, PostgreSQL for scale)."""


@group.command()
@config_option
@friendly_errors
def upgrade(config_path: Path | None) -> None:
    """Create the database and its schema, or bring it to the newest version (safe to run
    again). With `serve` and `directory import`, the only verbs that create a database."""
    settings = settings_from(config_path)
    db = open_database(
        settings.database_url(), schema=settings.database.schema_name, create_if_missing=True
    )
    click.echo(f"schema at revision {current(db)}")
    db.dispose()
