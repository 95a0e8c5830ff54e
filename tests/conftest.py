"""Fixtures shared by the whole suite.

The database backend is chosen by ``MSSANTE_TEST_DATABASE``: unset or ``sqlite`` for SQLite
files, or a PostgreSQL URL (``postgresql://postgres@127.0.0.1:5432/test``). On PostgreSQL each
test gets a schema of its own, dropped afterwards, so runs never see each other's rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mssante.store.db import Database, open_database
from support import drop_schema, is_postgres, new_schema_name, selected_database_url

DATA = Path(__file__).parent / "data"


@pytest.fixture
def data_dir() -> Path:
    return DATA


@pytest.fixture
def database_settings(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(url, schema) of an empty database for one test, cleaned up afterwards."""
    if not is_postgres():
        yield f"sqlite:///{tmp_path / 'test.db'}", ""
        return
    schema = new_schema_name()
    yield selected_database_url(), schema
    drop_schema(schema)


@pytest.fixture
def db(database_settings: tuple[str, str]) -> Iterator[Database]:
    url, schema = database_settings
    database = open_database(url, schema=schema)
    yield database
    database.dispose()
