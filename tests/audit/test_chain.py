from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import delete, update

from mssante.audit.events import AuditEvent, AuditRecord
from mssante.audit.log import DatabaseAuditLog, verify_chain
from mssante.store.db import Database
from mssante.store.models import AuditEntry


def _fill(log: DatabaseAuditLog, n: int) -> None:
    for i in range(n):
        log.record(
            AuditRecord(
                AuditEvent.MAILBOX_CREATED,
                actor="admin@ch-nord.mssante.fr",
                target=f"user{i}@ch-nord.mssante.fr",
                context={"request_id": f"r{i}", "remote": "127.0.0.1", "note": "é€"},
            )
        )


def test_a_clean_chain_verifies(db: Database) -> None:
    log = DatabaseAuditLog(db)
    _fill(log, 5)
    report = verify_chain(db)
    assert report.ok and report.entries == 5
    entries = list(log.entries())
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0].prev_hash == "0" * 64
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(entries))


def test_an_altered_entry_is_named(db: Database) -> None:
    _fill(DatabaseAuditLog(db), 6)
    with db.session() as s:
        s.execute(update(AuditEntry).where(AuditEntry.seq == 3).values(actor="someone-else"))
    report = verify_chain(db)
    assert not report.ok
    assert [(p.seq, p.kind) for p in report.problems] == [(3, "altered")]
    assert "entry 3" in report.problems[0].message


def test_an_altered_entry_with_recomputed_hash_is_still_found(db: Database) -> None:
    from mssante.audit.log import entry_hash

    _fill(DatabaseAuditLog(db), 4)
    with db.session() as s:
        e = s.get(AuditEntry, 2)
        assert e is not None
        e.target = "forged@x.fr"
        e.hash = entry_hash(
            seq=e.seq,
            at=e.at,
            event=e.event,
            actor=e.actor,
            target=e.target,
            context=e.context,
            prev_hash=e.prev_hash,
        )
    report = verify_chain(db)
    assert [(p.seq, p.kind) for p in report.problems] == [(2, "relinked")]


def test_a_removed_entry_is_named(db: Database) -> None:
    _fill(DatabaseAuditLog(db), 5)
    with db.session() as s:
        s.execute(delete(AuditEntry).where(AuditEntry.seq == 2))
    report = verify_chain(db)
    assert [(p.seq, p.kind) for p in report.problems] == [(2, "missing")]


def test_removing_the_last_entries_is_seen(db: Database) -> None:
    _fill(DatabaseAuditLog(db), 5)
    with db.session() as s:
        s.execute(delete(AuditEntry).where(AuditEntry.seq >= 4))
    report = verify_chain(db)
    assert [(p.seq, p.kind) for p in report.problems] == [(4, "truncated")]
    assert "4-5" in report.problems[0].message


def test_concurrent_appends_keep_one_chain(db: Database) -> None:
    log = DatabaseAuditLog(db)
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda _: _fill(log, 10), range(4)))
    report = verify_chain(db)
    assert report.ok and report.entries == 40
