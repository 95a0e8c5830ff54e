"""The metadata database: one :class:`Database` per process, built from :class:`DatabaseSettings`.

SQLite is the embedded default (WAL journal, foreign keys on, a busy timeout so that a second
process waits instead of failing). PostgreSQL (psycopg 3) is for scale; an optional schema keeps
several nodes' or test runs' tables apart in one database.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from mssante.errors import ConfigError

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class Database:
    """An engine and its session factory. Use :meth:`session` as a unit of work."""

    def __init__(self, url: str, *, schema: str = "", echo: bool = False) -> None:
        self.url = make_url(url)
        self.schema = schema
        self.engine = _make_engine(url, schema=schema, echo=echo)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.url.get_backend_name() == "sqlite"

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed when the block ends, rolled back if it raises."""
        with self._sessions.begin() as session:
            yield session

    def migrate(self) -> None:
        """Bring the schema to the newest revision (Alembic)."""
        from mssante.store.migrate import upgrade  # noqa: PLC0415 - Alembic loads slowly

        upgrade(self)

    def dispose(self) -> None:
        self.engine.dispose()


def _make_engine(url: str, *, schema: str, echo: bool) -> Engine:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(url, echo=echo)
    if backend == "postgresql":
        return _postgres_engine(url, schema=schema, echo=echo)
    raise ConfigError(f"unsupported database '{backend}': use sqlite or postgresql")


def _sqlite_engine(url: str, *, echo: bool) -> Engine:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, echo=echo, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")  # durability before speed: health data
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine


def _postgres_engine(url: str, *, schema: str, echo: bool) -> Engine:
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    connect_args: dict[str, Any] = {}
    if schema:
        if not _SCHEMA_NAME.match(schema):
            raise ConfigError(f"invalid PostgreSQL schema name '{schema}'")
        connect_args["options"] = f"-c search_path={schema}"
    engine = create_engine(parsed, echo=echo, connect_args=connect_args, pool_pre_ping=True)
    if schema:
        with engine.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    return engine


def open_database(
    url: str,
    *,
    schema: str = "",
    echo: bool = False,
    migrate: bool = True,
    create_if_missing: bool = True,
) -> Database:
    """The database at ``url``, its schema brought up to date when ``migrate``. With
    ``create_if_missing`` false, a SQLite file that does not exist yet is refused instead of
    created (verbs that only read or change a node's data; docs/configuration.md)."""
    if not create_if_missing:
        _refuse_missing_sqlite(url)
    db = Database(url, schema=schema, echo=echo)
    if migrate:
        db.migrate()
    return db


def _refuse_missing_sqlite(url: str) -> None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return  # a PostgreSQL database is created by its administrator, never by us
    database = parsed.database
    if database and database != ":memory:" and not Path(database).exists():
        raise ConfigError(
            f"base de données introuvable : {database} ; « mssante db upgrade --config FICHIER » "
            f"la crée / database not found: {database}; 'mssante db upgrade --config FILE' "
            "creates it"
        )
