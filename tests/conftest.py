"""Fixtures shared by the whole suite.

The database backend is chosen by ``MSSANTE_TEST_DATABASE``: unset or ``sqlite`` for SQLite
files, or a PostgreSQL URL (``postgresql://postgres@127.0.0.1:5432/test``). On PostgreSQL each
test gets a schema of its own, dropped afterwards, so runs never see each other's rows.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from mssante.store.db import Database, open_database

DATA = Path(__file__).parent / "data"


def selected_database_url() -> str:
    return os.environ.get("MSSANTE_TEST_DATABASE", "sqlite")


def is_postgres() -> bool:
    return selected_database_url().startswith("postgresql")


@pytest.fixture
def data_dir() -> Path:
    return DATA


@pytest.fixture
def database_settings(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(url, schema) of an empty database for one test, cleaned up afterwards."""
    if not is_postgres():
        yield f"sqlite:///{tmp_path / 'test.db'}", ""
        return
    schema = f"t_{os.getpid()}_{uuid.uuid4().hex[:10]}"
    yield selected_database_url(), schema
    _drop_schema(schema)


def _drop_schema(schema: str) -> None:
    admin = Database(selected_database_url())
    try:
        with admin.engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        admin.dispose()


@pytest.fixture
def db(database_settings: tuple[str, str]) -> Iterator[Database]:
    url, schema = database_settings
    database = open_database(url, schema=schema)
    yield database
    database.dispose()
