"""The append-only, hash-chained audit log in the metadata database.

Each entry stores the hash of the previous one, and its own hash covers its sequence number,
time, event, actor, target, context and that previous hash. Altering an entry breaks its hash;
removing one leaves a gap in the sequence and breaks the next entry's link; removing the last
ones is seen against ``audit_head``, which records the newest sequence number and hash.
See docs/audit.md for the threat model and its limits.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from mssante.audit.events import AuditRecord
from mssante.store import tables
from mssante.store.db import Database
from mssante.store.models import AuditEntry, AuditHead

GENESIS = "0" * 64
HEAD_ID = 1
_BATCH = 1000


def entry_hash(
    *,
    seq: int,
    at: datetime,
    event: str,
    actor: str,
    target: str,
    context: Mapping[str, Any],
    prev_hash: str,
) -> str:
    body = json.dumps(
        {
            "seq": seq,
            "at": at.isoformat(timespec="microseconds"),
            "event": event,
            "actor": actor,
            "target": target,
            "context": context,
        },
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


def append(session: Session, record: AuditRecord) -> None:
    """Append ``record`` inside the caller's transaction, so the action and its trace commit
    together. The UPDATE on the head row comes first: it takes the write lock (a row lock on
    PostgreSQL, the database lock on SQLite) so concurrent appends are serialised. Core
    statements, not ORM objects: this runs for every message, so it is kept lean."""
    head = tables.audit_head
    seq, prev_hash = session.execute(
        update(head)
        .where(head.c.id == HEAD_ID)
        .values(seq=head.c.seq + 1)
        .returning(head.c.seq, head.c.hash)
    ).one()
    context = _json_safe(record.context)
    digest = entry_hash(
        seq=seq,
        at=record.at,
        event=record.event.value,
        actor=record.actor,
        target=record.target,
        context=context,
        prev_hash=prev_hash,
    )
    session.execute(
        insert(tables.audit_log).values(
            seq=seq,
            at=record.at,
            event=record.event.value,
            actor=record.actor,
            target=record.target,
            context=context,
            prev_hash=prev_hash,
            hash=digest,
        )
    )
    session.execute(update(head).where(head.c.id == HEAD_ID).values(hash=digest))


def _json_safe(context: Mapping[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(json.dumps(dict(context), default=str))
    return result


class DatabaseAuditLog:
    """An :class:`~mssante.audit.events.AuditSink` that appends in a transaction of its own."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def record(self, record: AuditRecord) -> None:
        with self.db.session() as session:
            append(session, record)

    def entries(self, *, since_seq: int = 0) -> Iterator[AuditEntry]:
        yield from iter_entries(self.db, since_seq=since_seq)


def iter_entries(db: Database, *, since_seq: int = 0) -> Iterator[AuditEntry]:
    last = since_seq
    while True:
        with db.session() as session:
            batch = list(
                session.execute(
                    select(AuditEntry)
                    .where(AuditEntry.seq > last)
                    .order_by(AuditEntry.seq)
                    .limit(_BATCH)
                ).scalars()
            )
        if not batch:
            return
        yield from batch
        last = batch[-1].seq


@dataclass(frozen=True)
class ChainProblem:
    seq: int
    kind: str  # altered | missing | relinked | truncated
    message: str


@dataclass(frozen=True)
class VerifyReport:
    entries: int
    problems: tuple[ChainProblem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_chain(db: Database) -> VerifyReport:
    """Walk the whole chain and name every entry that was altered or removed."""
    problems: list[ChainProblem] = []
    expected_seq, prev_hash, count = 1, GENESIS, 0
    for entry in iter_entries(db):
        count += 1
        problems += _check_entry(entry, expected_seq, prev_hash)
        expected_seq, prev_hash = entry.seq + 1, entry.hash
    problems += _check_head(db, expected_seq - 1, prev_hash)
    return VerifyReport(entries=count, problems=tuple(problems))


def _check_entry(entry: AuditEntry, expected_seq: int, prev_hash: str) -> list[ChainProblem]:
    found: list[ChainProblem] = []
    if entry.seq > expected_seq:
        gap = (
            f"{expected_seq}"
            if entry.seq == expected_seq + 1
            else f"{expected_seq}-{entry.seq - 1}"
        )
        found.append(
            ChainProblem(
                expected_seq, "missing", f"entry {gap} removed (gap before entry {entry.seq})"
            )
        )
    recomputed = entry_hash(
        seq=entry.seq,
        at=entry.at,
        event=entry.event,
        actor=entry.actor,
        target=entry.target,
        context=entry.context,
        prev_hash=entry.prev_hash,
    )
    if recomputed != entry.hash:
        found.append(
            ChainProblem(
                entry.seq,
                "altered",
                f"entry {entry.seq} ({entry.event}) was altered: its content no longer matches its hash",
            )
        )
    elif entry.prev_hash != prev_hash and entry.seq == expected_seq:
        found.append(
            ChainProblem(
                entry.seq - 1,
                "relinked",
                f"entry {entry.seq - 1} was altered or replaced: entry {entry.seq} does not chain to it",
            )
        )
    return found


def _check_head(db: Database, last_seq: int, last_hash: str) -> list[ChainProblem]:
    with db.session() as session:
        head = session.execute(
            select(AuditHead).where(AuditHead.id == HEAD_ID)
        ).scalar_one_or_none()
    if head is None:
        return [ChainProblem(0, "truncated", "the audit head record is missing")]
    if head.seq > last_seq:
        return [
            ChainProblem(
                last_seq + 1,
                "truncated",
                f"entries {last_seq + 1}-{head.seq} removed from the end of the log",
            )
        ]
    if head.seq == last_seq and head.hash != last_hash:
        return [
            ChainProblem(
                last_seq,
                "altered",
                f"entry {last_seq} was altered: it does not match the recorded head",
            )
        ]
    return []
