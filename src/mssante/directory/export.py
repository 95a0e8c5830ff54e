"""Writing the directory back in the extraction's format (BRIEF §4): the header, then each
published mailbox's line as it was imported, in the file's order (``ordinal``), with the
end-of-line and byte order mark of the last import. Liste rouge mailboxes are left out: liste
rouge means not published (BRIEF §4). Importing a file and exporting it gives back the same
bytes when none of its mailboxes is on liste rouge.

Streamed from the database in batches: neither the file nor the table is held in memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select, text

from mssante.audit.events import AuditEvent, AuditRecord
from mssante.audit.log import append
from mssante.directory.extraction import HEADER, ExtractionWriter, extraction_file_name
from mssante.store.db import Database
from mssante.store.models import DirectoryImport, DirectoryPublication

_BATCH = 5000
_LINES = "SELECT raw FROM directory_entries WHERE liste_rouge = FALSE ORDER BY ordinal, id"
_BOM = "\ufeff"


@dataclass(frozen=True)
class ExportFormat:
    """How the file is written: as the last imported one was (LF unless it used CRLF)."""

    newline: str = "\n"
    bom: bool = False
    version: str = "empty"  # changes with each import (ETag of the download)
    file_name: str = ""


@dataclass(frozen=True)
class ExportSummary:
    path: Path
    lines: int
    sha256: str

    def as_dict(self) -> dict[str, object]:
        return {"file": str(self.path), "lines": self.lines, "sha256": self.sha256}


def export_format(db: Database) -> ExportFormat:
    """How to write the file, and its version: the last import and the operators'
    publications since (each changes the file: operators fetching it conditionally must see
    a new ETag after a publication, not only after the agency's next file)."""
    with db.session() as session:
        last = session.execute(
            select(DirectoryImport).order_by(DirectoryImport.id.desc()).limit(1)
        ).scalar_one_or_none()
        published = session.execute(
            select(
                func.count(),
                func.max(DirectoryPublication.updated_at),
                func.max(DirectoryPublication.deleted_at),
            )
        ).one()
    changes = _publications_mark(*published)
    if last is None:
        version = "empty" if changes is None else f"p{changes}"
        return ExportFormat(version=version, file_name=extraction_file_name(datetime.now(UTC)))
    version = f"{last.id}-{last.sha256[:16]}" + ("" if changes is None else f"-p{changes}")
    return ExportFormat(
        newline=last.newline,
        bom=last.bom,
        version=version,
        file_name=extraction_file_name(last.finished_at),
    )


def _publications_mark(
    count: int, updated: datetime | None, deleted: datetime | None
) -> str | None:
    if not count:
        return None
    stamps = [int(t.timestamp() * 1_000_000) for t in (updated, deleted) if t is not None]
    return f"{count}.{max(stamps, default=0)}"


def published_lines(db: Database) -> Iterator[str]:
    """The stored lines of published mailboxes, in file order, fetched in batches (a
    server-side cursor on PostgreSQL)."""
    with db.engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=_BATCH).execute(text(_LINES))
        for (raw,) in result:
            yield raw


def export_chunks(db: Database, form: ExportFormat, size: int = 1 << 20) -> Iterator[bytes]:
    """The whole file as byte chunks of about ``size`` (for an HTTP download)."""
    newline = form.newline
    parts = [(_BOM if form.bom else "") + HEADER + newline]
    length = len(parts[0])
    for raw in published_lines(db):
        parts.append(raw + newline)
        length += len(raw) + 2
        if length >= size:
            yield "".join(parts).encode()
            parts, length = [], 0
    if parts:
        yield "".join(parts).encode()


def export_extraction(db: Database, path: Path, *, actor: str) -> ExportSummary:
    """Write the directory to ``path`` (atomically), and audit it."""
    form = export_format(db)
    writer = ExtractionWriter(path, newline=form.newline, bom=form.bom)
    try:
        batch: list[str] = []
        for raw in published_lines(db):
            batch.append(raw)
            if len(batch) >= _BATCH:
                writer.write_lines(batch)
                batch.clear()
        writer.write_lines(batch)
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    summary = ExportSummary(path, writer.lines, _sha256(path))
    with db.session() as session:
        append(
            session,
            AuditRecord(
                AuditEvent.DIRECTORY_EXPORTED,
                actor=actor,
                target=path.name,
                context={"lines": summary.lines, "sha256": summary.sha256},
            ),
        )
    return summary


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
