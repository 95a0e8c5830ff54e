"""What one running node holds: its settings, database, blob store and audit log.

Built once by the command line or a server's start-up and passed down; nothing else opens the
database on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from mssante.audit.log import DatabaseAuditLog
from mssante.config import Settings
from mssante.store.blobs import FileBlobStore
from mssante.store.db import Database, open_database


@dataclass
class Node:
    settings: Settings
    db: Database
    blobs: FileBlobStore
    audit: DatabaseAuditLog

    def close(self) -> None:
        self.db.dispose()


def open_node(settings: Settings, *, migrate: bool = True, create_if_missing: bool = True) -> Node:
    """The node of ``settings``. ``create_if_missing`` false: a SQLite database that does not
    exist is refused (:func:`open_database`), before anything is created on disk."""
    db = open_database(
        settings.database_url(),
        schema=settings.database.schema_name,
        echo=settings.database.echo,
        migrate=migrate,
        create_if_missing=create_if_missing,
    )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return Node(
        settings=settings,
        db=db,
        blobs=FileBlobStore(settings.blob_dir()),
        audit=DatabaseAuditLog(db),
    )
