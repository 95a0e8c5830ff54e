"""The queue in the database: enqueueing in the caller's transaction, claiming under
concurrency (on SQLite and on PostgreSQL), recovery, and the retry policy."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from mssante.audit.log import iter_entries
from mssante.queue.store import (
    Claim,
    QueuedMessage,
    Reply,
    RetryPolicy,
    claim_due,
    due_domains,
    enqueue,
    recipients_of,
    recover,
)
from mssante.store.db import Database
from mssante.store.models import QueueRecipient, QueueStatus

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
DOMAINS = ("a.test", "b.test", "c.test", "d.test", "e.test")


def _queue_one(
    db: Database, recipients: list[str], *, now: datetime = NOW, sender: str = "x@o.test"
) -> int:
    with db.session() as session:
        return enqueue(
            session,
            digest="0" * 64,
            size=10,
            sender=sender,
            recipients=recipients,
            message_id="<m@o.test>",
            account="x@o.test",
            now=now,
        )


def _fill(db: Database, messages: int) -> list[int]:
    for i in range(messages):
        _queue_one(db, [f"r{i}-{j}@{DOMAINS[(i + j) % len(DOMAINS)]}" for j in range(3)])
    with db.session() as session:
        return sorted(session.execute(select(QueueRecipient.id)).scalars())


def test_enqueue_writes_rows_and_audit_inside_the_callers_transaction(db: Database) -> None:
    queue_id = _queue_one(db, ["Martin@Peer.TEST", "martin@peer.test", "durand@peer.test"])

    states = recipients_of(db, queue_id)
    # The domain is compared in lower case, the local part as given (RFC 5321 §2.4).
    assert [s.address for s in states] == [
        "Martin@peer.test",
        "martin@peer.test",
        "durand@peer.test",
    ]
    assert all(s.status is QueueStatus.QUEUED and s.attempts == 0 for s in states)
    [entry] = [e for e in iter_entries(db) if e.event == "queue.message_queued"]
    assert entry.actor == "x@o.test"
    assert entry.context["queue_id"] == queue_id


def test_enqueue_does_not_commit_by_itself(db: Database) -> None:
    with pytest.raises(RuntimeError), db.session() as session:
        enqueue(
            session,
            digest="0" * 64,
            size=1,
            sender="x@o.test",
            recipients=["y@peer.test"],
            message_id="",
            account="x@o.test",
        )
        raise RuntimeError("the submission failed before answering 250")
    assert claim_due(db, worker_id="w", limit=10, now=NOW + timedelta(days=1)) == []
    assert [e.event for e in iter_entries(db)] == []


def test_enqueue_needs_a_recipient(db: Database) -> None:
    with pytest.raises(ValueError, match="at least one recipient"), db.session() as session:
        enqueue(
            session, digest="0" * 64, size=1, sender="", recipients=[], message_id="", account=""
        )


def test_claims_are_grouped_by_domain_and_only_due_ones(db: Database) -> None:
    _queue_one(db, ["a1@a.test", "b1@b.test", "a2@a.test"])
    _queue_one(db, ["late@a.test"], now=NOW + timedelta(hours=1))

    batches = claim_due(db, worker_id="w1", limit=100, now=NOW)

    assert [(b.domain, [c.address for c in b.claims]) for b in batches] == [
        ("a.test", ["a1@a.test", "a2@a.test"]),
        ("b.test", ["b1@b.test"]),
    ]
    assert claim_due(db, worker_id="w2", limit=100, now=NOW) == []  # all taken
    assert due_domains(db, now=NOW + timedelta(hours=1), limit=10) == ["a.test"]
    [later] = claim_due(
        db, worker_id="w2", limit=100, now=NOW + timedelta(hours=1), domains=["a.test"]
    )
    assert [c.address for c in later.claims] == ["late@a.test"]


def test_two_workers_never_take_the_same_recipient(
    db: Database, database_settings: tuple[str, str]
) -> None:
    """Two workers, each with its own engine (as two processes would be), claim small batches
    as fast as they can until nothing is left: every recipient is taken exactly once."""
    all_ids = _fill(db, 60)
    url, schema = database_settings
    other = Database(url, schema=schema)
    taken: dict[str, list[int]] = {"one": [], "two": []}
    start = threading.Barrier(2)

    def worker(name: str, database: Database) -> None:
        start.wait()
        while batches := claim_due(database, worker_id=name, limit=7, now=NOW):
            taken[name] += [c.recipient_id for b in batches for c in b.claims]
            time.sleep(0.002)  # "delivering": lets the other worker in between claims

    threads = [
        threading.Thread(target=worker, args=("one", db)),
        threading.Thread(target=worker, args=("two", other)),
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        other.dispose()

    assert not set(taken["one"]) & set(taken["two"])
    assert sorted(taken["one"] + taken["two"]) == all_ids
    assert taken["one"] and taken["two"]  # both did work
    with db.session() as session:
        rows = session.execute(select(QueueRecipient.id, QueueRecipient.claimed_by)).all()
    owner = {rid: name for name, ids in taken.items() for rid in ids}
    assert all(claimed_by == owner[rid] for rid, claimed_by in rows)


def test_recover_resets_in_flight_recipients(db: Database) -> None:
    queue_id = _queue_one(db, ["a@a.test", "b@b.test"])
    claim_due(db, worker_id="crashed", limit=1, now=NOW)
    claim_due(db, worker_id="alive", limit=1, now=NOW + timedelta(minutes=50))

    later = NOW + timedelta(hours=1, minutes=1)
    assert recover(db, now=later, lease=timedelta(hours=1)) == 1  # only the stale claim
    assert recover(db, now=later, worker_id="nobody") == 0
    assert recover(db, now=later) == 1  # at start-up: everything in flight
    states = recipients_of(db, queue_id)
    assert all(s.status is QueueStatus.QUEUED and s.claimed_by == "" for s in states)
    assert all(s.next_attempt_at == later for s in states)


# -- the retry policy (pure) ---------------------------------------------------------------------


def _claim(attempts: int = 0, *, created: datetime = NOW, notified: bool = False) -> Claim:
    message = QueuedMessage(1, "0" * 64, 1, "x@o.test", "x@o.test", "<m@o.test>", created)
    return Claim(1, "y@peer.test", "peer.test", attempts, notified, message)


POLICY = RetryPolicy(
    schedule=(60, 300, 900),
    delay_notice_after=timedelta(hours=4),
    give_up_after=timedelta(days=5),
)


def test_retry_schedule_backs_off_and_its_last_value_repeats() -> None:
    waits = [
        POLICY.settle(_claim(n), Reply(451, "4.0.0 later"), NOW).next_attempt_at for n in range(5)
    ]
    assert [(w - NOW).total_seconds() for w in waits if w] == [60, 300, 900, 900, 900]


def test_retry_never_goes_past_the_give_up_time() -> None:
    created = NOW - timedelta(days=5) + timedelta(seconds=30)
    outcome = POLICY.settle(_claim(4, created=created, notified=True), Reply(451, "4.0.0"), NOW)
    assert outcome.status is QueueStatus.DEFERRED
    assert outcome.next_attempt_at == created + timedelta(days=5)


def test_outcomes_of_replies() -> None:
    assert POLICY.settle(_claim(), Reply(250, "2.0.0 OK"), NOW).status is QueueStatus.DELIVERED
    failed = POLICY.settle(_claim(), Reply(550, "5.1.1 no"), NOW)
    assert (failed.status, failed.notify_failure, failed.gave_up) == (
        QueueStatus.FAILED,
        True,
        False,
    )
    old = POLICY.settle(_claim(created=NOW - timedelta(days=6)), Reply(451, "4.0.0"), NOW)
    assert (old.status, old.notify_failure, old.gave_up) == (QueueStatus.FAILED, True, True)


def test_delay_notice_is_due_once_after_the_threshold() -> None:
    young = POLICY.settle(_claim(created=NOW - timedelta(hours=3)), Reply(451, "4.0.0"), NOW)
    due = POLICY.settle(_claim(created=NOW - timedelta(hours=5)), Reply(451, "4.0.0"), NOW)
    told = POLICY.settle(
        _claim(created=NOW - timedelta(hours=5), notified=True), Reply(451, "4.0.0"), NOW
    )
    assert (young.notify_delay, due.notify_delay, told.notify_delay) == (False, True, False)
