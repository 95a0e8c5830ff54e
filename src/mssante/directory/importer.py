"""Importing an extraction into the directory: one transaction, in named stages.

1. **header** — the first line must be the expected header (else refused and audited);
2. **stage** — every line is read, checked and indexed (``normalize.Indexer``). Bad lines are
   counted and the first ones kept. Good lines: on a first import (empty directory) they go
   straight into the entries table; otherwise every line's (address, position, content hash)
   goes to a TEMP table, and the full row only for lines whose hash is not already known
   (new or changed lines: the "payload");
3. **merge** — set-based SQL against those tables: entries of the extraction no longer in the
   file are removed, changed ones updated, new ones added, moved ones get their new position;
   a line that would change a mailbox's type is refused (BRIEF §4: type and address never
   change); entries published by an operator are never removed by an import;
4. **words** — the type-ahead index is rebuilt in bulk from the entries;
5. **record** — the import's row (counts, SHA-256, how lines end) and its audit entry.

Everything commits together: readers see yesterday's directory until the new one is complete.
Idempotent: importing the same file twice changes nothing the second time.
"""

from __future__ import annotations

import hashlib
import time
from array import array
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import text
from sqlalchemy.orm import Session

from mssante.audit.events import AuditEvent, AuditRecord
from mssante.audit.log import append
from mssante.config import DirectorySettings
from mssante.directory.bulk import (
    ENTRY_COLUMNS,
    STAGE_COLUMNS,
    WORD_COLUMNS,
    BulkLoader,
    Row,
    bulk_loader,
)
from mssante.directory.extraction import (
    ExtractionReader,
    ExtractionRow,
    HeaderError,
    LineError,
    LineProblem,
    parse_line,
)
from mssante.directory.normalize import (
    Indexed,
    Indexer,
    parse_groups,
    structure_words,
    word_rows,
)
from mssante.store.db import Database
from mssante.store.models import DirectoryImport, DirectorySource

_WORD_BATCH = 20_000  # entries read back per batch when rebuilding the words


class ImportObserver(Protocol):
    """Told how an import goes (the command line draws a progress bar from it)."""

    def stage(self, name: str) -> None: ...
    def advance(self, bytes_read: int, lines: int) -> None: ...


class _Silent:
    def stage(self, name: str) -> None:
        pass

    def advance(self, bytes_read: int, lines: int) -> None:
        pass


@dataclass
class BadLines:
    """Bad lines: all counted by problem, the first ``keep`` with their number and reason."""

    keep: int
    counts: Counter[str] = field(default_factory=Counter)
    examples: list[tuple[int, str]] = field(default_factory=list)

    def add(self, number: int, error: LineError) -> None:
        self.counts[error.problem.value] += 1
        if len(self.examples) < self.keep:
            self.examples.append((number, error.message))

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass
class ImportSummary:
    file: str
    sha256: str
    lines: int  # data lines read (the header apart)
    added: int
    updated: int
    removed: int
    unchanged: int
    bad: BadLines
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "sha256": self.sha256,
            "lines": self.lines,
            "added": self.added,
            "updated": self.updated,
            "removed": self.removed,
            "unchanged": self.unchanged,
            "bad_lines": self.bad.total,
            "bad_lines_by_problem": dict(sorted(self.bad.counts.items())),
            "bad_line_examples": [{"line": n, "reason": r} for n, r in self.bad.examples],
            "seconds": round(self.seconds, 2),
        }

    def text(self, examples: int = 20) -> list[str]:
        """The summary in French then English, one line each, then the first bad lines."""
        out = [
            f"{self.file} : {self.lines} lignes, {self.added} ajoutées, {self.updated} modifiées, "
            f"{self.removed} supprimées, {self.unchanged} inchangées, {self.bad.total} en erreur "
            f"({self.seconds:.1f} s)",
            f"{self.file}: {self.lines} lines, {self.added} added, {self.updated} updated, "
            f"{self.removed} removed, {self.unchanged} unchanged, {self.bad.total} bad",
        ]
        out += [f"  ligne/line {n}: {reason}" for n, reason in self.bad.examples[:examples]]
        if self.bad.total > examples:
            out.append(f"  … ({self.bad.total - examples} de plus / more; --json les liste)")
        return out


@dataclass(frozen=True)
class _Merge:
    added: int
    updated: int
    removed: int
    unchanged: int


def content_hash(raw: bytes) -> int:
    """BLAKE2b-64 of a line's bytes, as a signed 64-bit integer (a BIGINT on both engines)."""
    digest = hashlib.blake2b(raw, digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def import_extraction(
    db: Database,
    path: Path,
    settings: DirectorySettings,
    *,
    actor: str,
    observer: ImportObserver | None = None,
) -> ImportSummary:
    """Import the extraction at ``path`` (see the module's stages). Raises
    :class:`~mssante.directory.extraction.HeaderError` for a file that is not an extraction."""
    observer = observer or _Silent()
    started, clock = datetime.now(UTC), time.monotonic()
    with path.open("rb") as stream:
        reader = _open_reader(db, stream, path, settings, actor)
        with db.session() as session:
            loader = bulk_loader(session, cache_mib=settings.import_cache_mib)
            first = _prepare(session, loader)
            bad = BadLines(settings.reported_bad_lines)
            observer.stage("stage")
            staging = _Staging(loader, first, settings.batch_rows)
            lines = _stage(staging, reader, bad, observer)
            observer.stage("merge")
            merged = _first_merge(session, staging) if first else _merge(session, bad)
            observer.stage("words")
            _finish_words(loader, first)
            _rebuild_structures(session, loader)
            loader.cleanup()
            summary = ImportSummary(
                path.name, reader.sha256, lines, merged.added, merged.updated, merged.removed,
                merged.unchanged, bad, time.monotonic() - clock,
            )  # fmt: skip
            _record(session, summary, reader, started, actor)
            observer.stage("commit")
    _analyze(db)
    summary.seconds = time.monotonic() - clock
    return summary


def _prepare(session: Session, loader: BulkLoader) -> bool:
    """Set the engine up; on a first import (no entries at all), drop the entries' secondary
    indexes, rebuilt by one sort each after the rows are in, and start the words."""
    loader.prepare()
    loader.create_stages()
    first = _count(session, "SELECT count(*) FROM directory_entries") == 0
    if first:
        for index in _ENTRY_INDEXES:
            session.execute(text(f"DROP INDEX {index[0]}"))
        loader.start_words()
    return first


# Secondary indexes of directory_entries (store/models.py): (name, unique, column).
_ENTRY_INDEXES = (
    ("ix_directory_entries_address", True, "address"),
    ("ix_directory_entries_id_nat_pp", False, "id_nat_pp"),
    ("ix_directory_entries_ordinal", False, "ordinal"),
    ("ix_directory_entries_structure_id", False, "structure_id"),
)


# -- 1. header ---------------------------------------------------------------------------------


def _open_reader(
    db: Database, stream: Any, path: Path, settings: DirectorySettings, actor: str
) -> ExtractionReader:
    try:
        return ExtractionReader(stream, max_line_bytes=settings.max_line_bytes)
    except HeaderError as exc:
        with db.session() as session:
            append(
                session,
                AuditRecord(
                    AuditEvent.DIRECTORY_IMPORT_REFUSED,
                    actor=actor,
                    target=path.name,
                    context={"reason": exc.public},
                ),
            )
        raise


# -- 2. stage ----------------------------------------------------------------------------------


class KnownHashes:
    """The content hashes of the entries already imported, as a sorted array of 64-bit
    integers: 8 bytes each (12 MB at 1.5 M lines, a tenth of a Python set), found by bisection."""

    def __init__(self, ascending: Iterable[int]) -> None:
        self._values = array("q", ascending)

    def __contains__(self, value: int) -> bool:
        index = bisect_left(self._values, value)
        return index < len(self._values) and self._values[index] == value


class _Staging:
    """Where good lines go. First import: straight into the entries, with ids numbered here,
    and their words at once. Otherwise: each line's address to the stage, and the full row of
    new or changed lines (hash not known) to the payload."""

    def __init__(self, loader: BulkLoader, first: bool, batch_size: int) -> None:
        self.loader = loader
        self.first = first
        self.batch_size = batch_size
        self.known = KnownHashes(() if first else loader.known_hashes())
        self.addresses: list[Row] = []
        self.rows: list[Row] = []
        self.words: list[Row] = []
        self.staged = 0

    def add(self, number: int, row: ExtractionRow, raw: bytes, line: str, indexer: Indexer) -> None:
        digest = content_hash(raw)
        self.staged += 1
        if self.first:
            indexed = indexer.index(row)
            self.rows.append((self.staged, *_entry_row(number, row, line, digest, indexed)))
            self.words += indexed.word_rows(self.staged)
            return
        self.addresses.append((row[1].lower(), number, digest))
        if digest not in self.known:
            self.rows.append(_entry_row(number, row, line, digest, indexer.index(row)))

    def full(self) -> bool:
        return len(self.rows) >= self.batch_size or len(self.addresses) >= self.batch_size

    def flush(self) -> None:
        load = self.loader.load
        if self.addresses:
            load("directory_stage", STAGE_COLUMNS, self.addresses)
            self.addresses.clear()
        if self.rows and self.first:
            load("directory_entries", ("id", *ENTRY_COLUMNS), self.rows)
        elif self.rows:
            load("directory_payload", ENTRY_COLUMNS, self.rows)
        self.rows.clear()
        if self.words:
            load(self.loader.words_table(), WORD_COLUMNS, self.words)
            self.words.clear()


def _stage(
    staging: _Staging, reader: ExtractionReader, bad: BadLines, observer: ImportObserver
) -> int:
    indexer = Indexer()
    lines = 0
    for number, item in reader:
        lines += 1
        if isinstance(item, LineError):
            bad.add(number, item)
            continue
        too_long = _too_long_field(item)
        if too_long is not None:
            bad.add(number, too_long)
            continue
        staging.add(number, item, reader.last_raw, reader.last_text, indexer)
        if staging.full():
            staging.flush()
            observer.advance(reader.bytes_read, lines)
    staging.flush()
    observer.advance(reader.bytes_read, lines)
    if not staging.first:
        staging.loader.index_stages()
    return lines


# Fields kept in columns of bounded size (store/models.py, DirectoryEntry): (index, limit).
_FIELD_LIMITS = ((1, 320), (4, 32), (6, 32), (13, 8), (28, 10))


def _too_long_field(row: ExtractionRow) -> LineError | None:
    for index, limit in _FIELD_LIMITS:
        if len(row[index]) > limit:
            name = ExtractionRow._fields[index]
            return LineError(
                LineProblem.FIELD_TOO_LONG,
                f"champ {name} trop long (plus de {limit} caractères)",
                f"field {name} too long (over {limit} characters)",
            )
    return None


def _entry_row(number: int, row: ExtractionRow, line: str, digest: int, indexed: Indexed) -> Row:
    """A row of ENTRY_COLUMNS (bulk.py)."""
    return (
        row[1].lower(), row[0], row[4], row[6], row[13], row[28], indexed.city, False,
        DirectorySource.EXTRACTION.value, number, digest, indexed.sort_name,
        indexed.search_text, line,
    )  # fmt: skip


# -- 3. merge ----------------------------------------------------------------------------------

_TYPE_CHANGES = """
SELECT p.ordinal, p.address, e.bal_type, p.bal_type FROM directory_payload p
JOIN directory_entries e ON e.address = p.address WHERE e.bal_type <> p.bal_type
ORDER BY p.ordinal
"""
_DROP_TYPE_CHANGES = """
DELETE FROM directory_payload WHERE EXISTS (SELECT 1 FROM directory_entries e
WHERE e.address = directory_payload.address AND e.bal_type <> directory_payload.bal_type)
"""
_REMOVE = """
DELETE FROM directory_entries WHERE source = 'extraction'
AND NOT EXISTS (SELECT 1 FROM directory_stage s WHERE s.address = directory_entries.address)
"""
_UPDATE = """
UPDATE directory_entries SET id_nat_pp = p.id_nat_pp, structure_id = p.structure_id,
  profession_code = p.profession_code, postal_code = p.postal_code, city = p.city,
  source = p.source, ordinal = p.ordinal, content_hash = p.content_hash,
  sort_name = p.sort_name, search_text = p.search_text, raw = p.raw
FROM directory_payload p WHERE p.address = directory_entries.address
"""
_MOVE = """
UPDATE directory_entries SET ordinal = s.ordinal FROM directory_stage s
WHERE s.address = directory_entries.address AND directory_entries.ordinal <> s.ordinal
"""
_ADD = f"""
INSERT INTO directory_entries ({", ".join(ENTRY_COLUMNS)})
SELECT {", ".join("p." + c for c in ENTRY_COLUMNS)} FROM directory_payload p
WHERE NOT EXISTS (SELECT 1 FROM directory_entries e WHERE e.address = p.address)
"""  # noqa: S608 - column names are constants


def _first_merge(session: Session, staging: _Staging) -> _Merge:
    """A first import wrote the entries directly: rebuild their indexes; all were added."""
    for name, unique, column in _ENTRY_INDEXES:
        kind = "UNIQUE INDEX" if unique else "INDEX"
        session.execute(text(f"CREATE {kind} {name} ON directory_entries ({column})"))
    staging.loader.after_explicit_ids()
    return _Merge(added=staging.staged, updated=0, removed=0, unchanged=0)


def _merge(session: Session, bad: BadLines) -> _Merge:
    _refuse_type_changes(session, bad)
    staged = _count(session, "SELECT count(*) FROM directory_stage")
    removed = _changed_rows(session, _REMOVE)
    updated = _changed_rows(session, _UPDATE)
    added = _changed_rows(session, _ADD)
    session.execute(text(_MOVE))
    return _Merge(added, updated, removed, staged - added - updated)


def _refuse_type_changes(session: Session, bad: BadLines) -> None:
    """BRIEF §4: a mailbox's type never changes. Such lines are bad lines; the entry stays
    as it was (being in the file, it is not removed; it takes the line's position)."""
    changes = session.execute(text(_TYPE_CHANGES)).all()
    for ordinal, address, old, new in changes:
        bad.add(
            ordinal,
            LineError(
                LineProblem.TYPE_CHANGED,
                f"le type de la BAL {address} ne peut changer ({old} → {new})",
                f"the type of mailbox {address} cannot change ({old} → {new})",
            ),
        )
    if changes:
        session.execute(text(_DROP_TYPE_CHANGES))


def _changed_rows(session: Session, sql: str) -> int:
    return session.connection().execute(text(sql)).rowcount


def _count(session: Session, sql: str) -> int:
    return int(session.execute(text(sql)).scalar_one())


# -- 4. words ----------------------------------------------------------------------------------


def _finish_words(loader: BulkLoader, first: bool) -> None:
    """A first import staged the words with the entries; otherwise they are read back from
    the merged entries. Then they are written in key order (bulk.py)."""
    if not first:
        loader.start_words()
        table = loader.words_table()
        for entries in loader.entries_for_words(_WORD_BATCH):
            loader.load(table, WORD_COLUMNS, list(_word_rows(entries)))
    loader.finish_words()


def _word_rows(entries: Iterable[Row]) -> Iterable[Row]:
    for entry_id, sort_name, search_text in entries:
        yield from word_rows(parse_groups(search_text), sort_name, entry_id)


def _rebuild_structures(session: Session, loader: BulkLoader) -> None:
    """The structures named by published mailboxes: words of their names and town (from the
    first mailbox met of each), and those words' index."""
    session.execute(text("DELETE FROM directory_structure_words"))
    session.execute(text("DELETE FROM directory_structures"))
    found = {
        structure_id: structure_words(parse_line(raw))
        for structure_id, raw in session.execute(text(_STRUCTURE_SOURCES))
    }
    loader.load(
        "directory_structures",
        ("structure_id", "search_text"),
        [(sid, f" {' '.join(ws)} ") for sid, ws in found.items()],
    )
    loader.load(
        "directory_structure_words",
        ("word", "structure_id"),
        [(w, sid) for sid, ws in found.items() for w in ws],
    )


_STRUCTURE_SOURCES = """
SELECT structure_id, raw FROM (
  SELECT structure_id, raw, ROW_NUMBER() OVER (PARTITION BY structure_id ORDER BY ordinal) AS n
  FROM directory_entries WHERE structure_id <> '' AND liste_rouge = FALSE
) first_of_each WHERE n = 1
"""


# -- 5. record ---------------------------------------------------------------------------------


def _record(
    session: Session,
    summary: ImportSummary,
    reader: ExtractionReader,
    started: datetime,
    actor: str,
) -> None:
    session.add(
        DirectoryImport(
            file_name=summary.file[:300],
            sha256=summary.sha256,
            actor=actor,
            started_at=started,
            finished_at=datetime.now(UTC),
            lines=summary.lines,
            added=summary.added,
            updated=summary.updated,
            removed=summary.removed,
            bad_lines=summary.bad.total,
            newline=reader.newline,
            bom=reader.bom,
        )
    )
    context: Mapping[str, Any] = {
        k: v for k, v in summary.as_dict().items() if k not in {"bad_line_examples", "file"}
    }
    append(
        session,
        AuditRecord(
            AuditEvent.DIRECTORY_IMPORTED, actor=actor, target=summary.file, context=context
        ),
    )


def _analyze(db: Database) -> None:
    """After a bulk change on PostgreSQL: fresh planner statistics, and the index tables
    vacuumed so that their visibility map lets searches use index-only scans (without it,
    the planner's estimates led it to a bitmap scan and a sort: 155 ms instead of 3 ms for a
    two-letter word). VACUUM cannot run in a transaction: an autocommit connection. SQLite's
    plans for these queries do not depend on statistics."""
    if db.is_sqlite:
        return
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM (ANALYZE) directory_words, directory_structure_words"))
        conn.execute(text("ANALYZE directory_entries, directory_structures"))
