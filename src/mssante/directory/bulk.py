"""Bulk loading for the directory import, one class per engine, the same methods for both.

SQLite: ``executemany`` on the driver's connection, inside the import's one transaction, into
TEMP tables (their own file, outside the WAL) or straight into the entries table on a first
import; a larger page cache for the importing connection only (restored afterwards). The
search words are sorted by SQLite's external sorter (``INSERT … SELECT … ORDER BY``) so that
the WITHOUT ROWID index is written in key order, much faster than random inserts.

PostgreSQL: ``COPY … FROM STDIN`` (psycopg 3 ``cursor.copy``); the words' primary key is
dropped, the table refilled by COPY, and the key rebuilt by one sort.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from sqlalchemy import text
from sqlalchemy.orm import Session

# The columns an import writes, in the order of the rows it builds.
ENTRY_COLUMNS = (
    "address",
    "bal_type",
    "id_nat_pp",
    "structure_id",
    "profession_code",
    "postal_code",
    "city",
    "liste_rouge",
    "source",
    "ordinal",
    "content_hash",
    "sort_name",
    "search_text",
    "raw",
)
STAGE_COLUMNS = ("address", "ordinal", "content_hash")
WORD_COLUMNS = ("word", "weight", "sort_name", "entry_id")

# TEMP tables: every line's address (to find removals and moves), and the full rows of the
# lines that are new or changed (the "payload").
_STAGE_DDL = (
    "CREATE TEMP TABLE directory_stage (address VARCHAR(320), ordinal BIGINT, content_hash BIGINT)"
)
_PAYLOAD_DDL = """CREATE TEMP TABLE directory_payload (address VARCHAR(320), bal_type VARCHAR(16),
  id_nat_pp VARCHAR(32), structure_id VARCHAR(32), profession_code VARCHAR(8),
  postal_code VARCHAR(10), city VARCHAR(200), liste_rouge BOOLEAN, source VARCHAR(16),
  ordinal BIGINT, content_hash BIGINT, sort_name VARCHAR(64), search_text TEXT, raw TEXT)"""
_ENTRIES_FOR_WORDS = (
    "SELECT id, sort_name, search_text FROM directory_entries WHERE liste_rouge = FALSE"
)
Row = Sequence[Any]


class BulkLoader(Protocol):
    """What the import needs of an engine, beyond the SQL both engines share."""

    def prepare(self) -> None: ...
    def create_stages(self) -> None: ...
    def load(self, table: str, columns: Sequence[str], rows: Sequence[Row]) -> None: ...
    def index_stages(self) -> None: ...
    def known_hashes(self) -> Iterator[int]: ...
    def entries_for_words(self, batch: int) -> Iterator[list[Row]]: ...
    def start_words(self) -> None: ...
    def finish_words(self) -> None: ...
    def words_table(self) -> str: ...
    def after_explicit_ids(self) -> None: ...
    def cleanup(self) -> None: ...


def bulk_loader(session: Session, *, cache_mib: int) -> BulkLoader:
    if session.get_bind().dialect.name == "sqlite":
        return SqliteBulk(session, cache_mib)
    return PostgresBulk(session)


_KNOWN = (
    "SELECT content_hash FROM directory_entries WHERE source = 'extraction' ORDER BY content_hash"
)


class SqliteBulk:
    def __init__(self, session: Session, cache_mib: int) -> None:
        self.session = session
        self._cache_kib = cache_mib * 1024
        self._raw: Any = session.connection().connection.driver_connection
        self._saved_cache = 0

    def prepare(self) -> None:
        self._saved_cache = self._raw.execute("PRAGMA cache_size").fetchone()[0]
        self._raw.execute(f"PRAGMA cache_size = -{self._cache_kib}")
        self._raw.execute(f"PRAGMA temp.cache_size = -{self._cache_kib // 2}")

    def create_stages(self) -> None:
        for name in ("directory_stage", "directory_payload", "directory_words_stage"):
            self._raw.execute(f"DROP TABLE IF EXISTS temp.{name}")
        self._raw.execute(_STAGE_DDL)
        self._raw.execute(_PAYLOAD_DDL)

    def load(self, table: str, columns: Sequence[str], rows: Sequence[Row]) -> None:
        marks = ", ".join("?" * len(columns))
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"  # noqa: S608 - names are this module's constants
        self._raw.executemany(sql, rows)

    def index_stages(self) -> None:
        self._raw.execute("CREATE UNIQUE INDEX temp.ix_stage_address ON directory_stage (address)")
        self._raw.execute("CREATE INDEX temp.ix_payload_address ON directory_payload (address)")

    def known_hashes(self) -> Iterator[int]:
        """The extraction's entries' content hashes, ascending."""
        for (value,) in self._raw.execute(_KNOWN):
            yield value

    def entries_for_words(self, batch: int) -> Iterator[list[Row]]:
        cursor = self._raw.execute(_ENTRIES_FOR_WORDS)
        while rows := cursor.fetchmany(batch):
            yield rows

    def start_words(self) -> None:
        self._raw.execute(
            "CREATE TEMP TABLE directory_words_stage "
            "(word TEXT, weight INTEGER, sort_name TEXT, entry_id INTEGER)"
        )

    def words_table(self) -> str:
        return "temp.directory_words_stage"

    def after_explicit_ids(self) -> None:
        """SQLite numbers the next rowid after the largest: nothing to do."""

    def finish_words(self) -> None:
        self._raw.execute("DELETE FROM main.directory_words")
        self._raw.execute(
            "INSERT INTO main.directory_words (word, weight, sort_name, entry_id) "
            "SELECT word, weight, sort_name, entry_id FROM temp.directory_words_stage "
            "ORDER BY word, weight, sort_name, entry_id"
        )

    def cleanup(self) -> None:
        for name in ("directory_words_stage", "directory_payload", "directory_stage"):
            self._raw.execute(f"DROP TABLE IF EXISTS temp.{name}")
        if self._saved_cache:
            self._raw.execute(f"PRAGMA cache_size = {self._saved_cache}")


class PostgresBulk:
    def __init__(self, session: Session) -> None:
        self.session = session
        self._raw: Any = session.connection().connection.driver_connection

    def prepare(self) -> None:
        self.session.execute(text("SET LOCAL maintenance_work_mem = '256MB'"))
        self.session.execute(text("SET LOCAL work_mem = '64MB'"))

    def create_stages(self) -> None:
        for ddl in (_STAGE_DDL, _PAYLOAD_DDL):
            self.session.execute(text(ddl + " ON COMMIT DROP"))

    def load(self, table: str, columns: Sequence[str], rows: Sequence[Row]) -> None:
        with (
            self._raw.cursor() as cursor,
            cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)

    def index_stages(self) -> None:
        for sql in (
            "CREATE UNIQUE INDEX ix_stage_address ON pg_temp.directory_stage (address)",
            "CREATE INDEX ix_payload_address ON pg_temp.directory_payload (address)",
            "ANALYZE pg_temp.directory_stage",
            "ANALYZE pg_temp.directory_payload",
        ):
            self.session.execute(text(sql))

    def known_hashes(self) -> Iterator[int]:
        """The extraction's entries' content hashes, ascending (a server-side cursor)."""
        with self._raw.cursor(name="directory_known") as cursor:
            cursor.execute(_KNOWN)
            for (value,) in cursor:
                yield value

    def entries_for_words(self, batch: int) -> Iterator[list[Row]]:
        # A server-side cursor: rows come in batches, and each batch's words are copied
        # between two fetches on the same connection.
        with self._raw.cursor(name="directory_words_source") as cursor:
            cursor.execute(_ENTRIES_FOR_WORDS)
            while rows := cursor.fetchmany(batch):
                yield rows

    def start_words(self) -> None:
        self.session.execute(text("TRUNCATE directory_words"))
        self.session.execute(text("ALTER TABLE directory_words DROP CONSTRAINT pk_directory_words"))

    def words_table(self) -> str:
        return "directory_words"

    def after_explicit_ids(self) -> None:
        """The first import numbered the entries itself: move the id sequence past them."""
        self.session.execute(
            text(
                "SELECT setval(pg_get_serial_sequence('directory_entries', 'id'), "
                "(SELECT max(id) FROM directory_entries))"
            )
        )

    def finish_words(self) -> None:
        self.session.execute(
            text(
                "ALTER TABLE directory_words ADD CONSTRAINT pk_directory_words "
                "PRIMARY KEY (word, weight, sort_name, entry_id)"
            )
        )

    def cleanup(self) -> None:
        """The TEMP tables go at commit (ON COMMIT DROP)."""
