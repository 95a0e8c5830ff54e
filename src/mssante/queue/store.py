"""The outbound queue, durable in the database (docs/queue.md).

A queued message is one ``queue_messages`` row (its body is in the blob store) and one
``queue_recipients`` row per recipient, each with its own state::

    queued ──claim──> in_flight ──250 to DATA──> delivered
      ^                  │ ──4xx, no route, untrusted peer…──> deferred ──(due)──claim──> …
      └──recover()───────┘ ──5xx, domain outside the trust space, given up──> failed

* :func:`enqueue` adds a message inside the caller's transaction (the submission server
  commits it, then answers 250: a message answered 250 is in the database).
* :func:`claim_due` hands due recipients to one worker, atomically: ``SELECT … FOR UPDATE SKIP
  LOCKED`` on PostgreSQL (workers of several processes never wait for nor take each other's
  rows), one ``UPDATE … RETURNING`` on SQLite (one writer at a time).
* :meth:`RetryPolicy.settle` decides what an attempt's reply means (RFC 5321 §4.5.4.1: retry
  later on a temporary failure, give up after a while); :func:`apply` writes it, with its audit
  entries, inside the caller's transaction.
* :func:`recover` puts back in the queue what a crashed process left in flight.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import groupby
from typing import Any, TypeVar

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from mssante.audit.events import SYSTEM_ACTOR, AuditEvent, AuditRecord
from mssante.audit.log import append
from mssante.config import SmtpSettings
from mssante.ops.refusals import Refusal
from mssante.store.db import Database
from mssante.store.models import QueueMessage, QueueRecipient, QueueStatus

S = TypeVar("S", bound="RecipientState")
PENDING = (QueueStatus.QUEUED, QueueStatus.DEFERRED)
FINAL = (QueueStatus.DELIVERED, QueueStatus.FAILED)


def utc_now() -> datetime:
    return datetime.now(UTC)


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].strip().lower().rstrip(".")


# -- values ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """An attempt's answer for one recipient: the peer's SMTP reply, or this MTA's own
    decision (``remote_mta`` empty) worded the same way. ``text`` starts with the enhanced
    status code when there is one (RFC 3463)."""

    code: int
    text: str
    remote_mta: str = ""

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300

    def line(self) -> str:
        return f"{self.code} {self.text}".strip()

    @classmethod
    def of(cls, refusal: Refusal) -> Reply:
        """This MTA's own decision, from the one refusal catalogue (``ops/refusals.py``)."""
        return cls(refusal.reply.code, f"{refusal.reply.enhanced} {refusal.en}")


@dataclass(frozen=True)
class QueuedMessage:
    id: int
    blob_sha256: str
    size: int
    sender: str
    account: str
    message_id: str
    created_at: datetime


@dataclass(frozen=True)
class Claim:
    """One recipient handed to a worker (in flight), with what delivery needs of its message."""

    recipient_id: int
    address: str
    domain: str
    attempts: int
    delay_notified: bool
    message: QueuedMessage


@dataclass(frozen=True)
class DomainBatch:
    """The claimed recipients of one domain: one connection carries them all."""

    domain: str
    claims: tuple[Claim, ...]

    def by_message(self) -> list[tuple[QueuedMessage, tuple[Claim, ...]]]:
        """Claims grouped per message (one SMTP transaction each), oldest message first."""
        ordered = sorted(self.claims, key=lambda c: (c.message.id, c.recipient_id))
        return [
            (group[0].message, group)
            for _, items in groupby(ordered, key=lambda c: c.message.id)
            for group in [tuple(items)]
        ]


@dataclass(frozen=True)
class Settled:
    """What an attempt means for one recipient, as :meth:`RetryPolicy.settle` decided."""

    claim: Claim
    status: QueueStatus  # delivered, deferred or failed
    reply: Reply
    next_attempt_at: datetime | None = None  # deferred only
    notify_delay: bool = False  # a delay notice is due now (once per recipient)
    notify_failure: bool = False  # a DSN is due now
    gave_up: bool = False  # failed because too old, after temporary failures


@dataclass(frozen=True)
class RecipientState:
    """A recipient's row as read back (for operators' tools and tests)."""

    id: int
    message_pk: int
    address: str
    domain: str
    status: QueueStatus
    attempts: int
    next_attempt_at: datetime | None
    last_code: int | None
    last_reply: str
    remote_mta: str
    delay_notified: bool
    claimed_by: str
    updated_at: datetime


# -- enqueueing --------------------------------------------------------------------------------


def enqueue(
    session: Session,
    *,
    digest: str,
    size: int,
    sender: str,
    recipients: Iterable[str],
    message_id: str,
    account: str,
    now: datetime | None = None,
) -> int:
    """Queue a message whose body is already in the blob store, inside the caller's
    transaction (nothing is committed here). Returns the queue id. ``sender`` is the envelope
    sender; empty for a delivery report (``MAIL FROM:<>``)."""
    moment = now or utc_now()
    addresses = _distinct(recipients)
    if not addresses:
        raise ValueError("a queued message needs at least one recipient")
    message = QueueMessage(
        blob_sha256=digest,
        size=size,
        sender=sender,
        account=account,
        message_id=message_id[:998],
        created_at=moment,
    )
    for address in addresses:
        message.recipients.append(_new_recipient(address, moment))
    session.add(message)
    session.flush()
    append(session, _queued_record(message, addresses, moment))
    return message.id


def _distinct(recipients: Iterable[str]) -> list[str]:
    """Recipients once each; the domain compared in lower case, the local part as given
    (RFC 5321 §2.4: local parts may be case-sensitive)."""
    seen: dict[tuple[str, str], str] = {}
    for address in recipients:
        local, _, domain = address.strip().rpartition("@")
        seen.setdefault((local, domain.lower()), f"{local}@{domain.lower()}")
    return list(seen.values())


def _new_recipient(address: str, now: datetime) -> QueueRecipient:
    return QueueRecipient(
        address=address,
        domain=domain_of(address),
        status=QueueStatus.QUEUED,
        attempts=0,
        next_attempt_at=now,
        updated_at=now,
    )


def _queued_record(message: QueueMessage, addresses: list[str], now: datetime) -> AuditRecord:
    return AuditRecord(
        AuditEvent.QUEUE_MESSAGE_QUEUED,
        actor=message.account or SYSTEM_ACTOR,
        target=message.message_id or f"queue:{message.id}",
        context={
            "queue_id": message.id,
            "sender": message.sender,
            "recipients": addresses,
            "size": message.size,
        },
        at=now,
    )


# -- claiming ----------------------------------------------------------------------------------


def due_domains(
    db: Database, *, now: datetime, limit: int, exclude: Collection[str] = ()
) -> list[str]:
    """Domains with due recipients, the longest-waiting first (read only: no claim)."""
    query = (
        select(QueueRecipient.domain)
        .where(QueueRecipient.status.in_(PENDING), QueueRecipient.next_attempt_at <= now)
        .group_by(QueueRecipient.domain)
        .order_by(func.min(QueueRecipient.next_attempt_at))
        .limit(limit)
    )
    if exclude:
        query = query.where(QueueRecipient.domain.not_in(list(exclude)))
    with db.session() as session:
        return list(session.execute(query).scalars())


def claim_due(
    db: Database,
    *,
    worker_id: str,
    limit: int,
    now: datetime,
    domains: Collection[str] | None = None,
) -> list[DomainBatch]:
    """Mark up to ``limit`` due recipients in flight for ``worker_id`` and return them grouped
    by domain. Two workers never get the same recipient."""
    with db.session() as session:
        return claim_due_in(session, db, worker_id=worker_id, limit=limit, now=now, domains=domains)


def claim_due_in(
    session: Session,
    db: Database,
    *,
    worker_id: str,
    limit: int,
    now: datetime,
    domains: Collection[str] | None = None,
) -> list[DomainBatch]:
    """:func:`claim_due` inside the caller's transaction (a group commit, for instance)."""
    ids = _claim_ids(session, db, worker_id=worker_id, limit=limit, now=now, domains=domains)
    return _by_domain(_load_claims(session, ids))


def _claim_ids(
    session: Session,
    db: Database,
    *,
    worker_id: str,
    limit: int,
    now: datetime,
    domains: Collection[str] | None,
) -> list[int]:
    due = select(QueueRecipient.id).where(
        QueueRecipient.status.in_(PENDING), QueueRecipient.next_attempt_at <= now
    )
    if domains is not None:
        due = due.where(QueueRecipient.domain.in_(list(domains)))
    due = due.order_by(QueueRecipient.next_attempt_at, QueueRecipient.id).limit(limit)
    claim = update(QueueRecipient).values(
        status=QueueStatus.IN_FLIGHT,
        claimed_at=now,
        claimed_by=worker_id,
        next_attempt_at=None,
        updated_at=now,
    )
    if db.is_sqlite:
        # One statement: SQLite runs one writer at a time, so it is atomic as it stands.
        statement = claim.where(
            QueueRecipient.id.in_(due), QueueRecipient.status.in_(PENDING)
        ).returning(QueueRecipient.id)
        return sorted(session.execute(statement).scalars())
    # PostgreSQL: lock the rows we take, skip those another worker holds (no waiting, no
    # double claim); the locks last until this transaction commits.
    ids = list(session.execute(due.with_for_update(skip_locked=True)).scalars())
    if ids:
        session.execute(claim.where(QueueRecipient.id.in_(ids)))
    return ids


def _load_claims(session: Session, ids: Sequence[int]) -> list[Claim]:
    if not ids:
        return []
    rows = session.execute(
        select(QueueRecipient, QueueMessage)
        .join(QueueMessage, QueueMessage.id == QueueRecipient.message_pk)
        .where(QueueRecipient.id.in_(list(ids)))
        .order_by(QueueRecipient.domain, QueueMessage.id, QueueRecipient.id)
    ).all()
    return [_claim(recipient, message) for recipient, message in rows]


def _claim(recipient: QueueRecipient, message: QueueMessage) -> Claim:
    return Claim(
        recipient_id=recipient.id,
        address=recipient.address,
        domain=recipient.domain,
        attempts=recipient.attempts,
        delay_notified=recipient.delay_notified,
        message=queued_message(message),
    )


def queued_message(message: QueueMessage) -> QueuedMessage:
    return QueuedMessage(
        id=message.id,
        blob_sha256=message.blob_sha256,
        size=message.size,
        sender=message.sender,
        account=message.account,
        message_id=message.message_id,
        created_at=message.created_at,
    )


def _by_domain(claims: list[Claim]) -> list[DomainBatch]:
    ordered = sorted(claims, key=lambda c: c.domain)
    return [
        DomainBatch(domain, tuple(items))
        for domain, items in groupby(ordered, key=lambda c: c.domain)
    ]


# -- recovery ----------------------------------------------------------------------------------


def recover(
    db: Database,
    *,
    now: datetime,
    lease: timedelta | None = None,
    worker_id: str | None = None,
) -> int:
    """Put in-flight recipients back in the queue, due at once; returns how many.

    With neither ``lease`` nor ``worker_id``: every in-flight recipient (at the start of the
    only process that delivers: whatever is in flight was left by a crash). ``lease``: only
    those claimed longer ago than that (a process that died while others run). ``worker_id``:
    only that worker's (its own shutdown).
    """
    statement = (
        update(QueueRecipient)
        .where(QueueRecipient.status == QueueStatus.IN_FLIGHT)
        .values(
            status=QueueStatus.QUEUED,
            next_attempt_at=now,
            claimed_at=None,
            claimed_by="",
            updated_at=now,
        )
    )
    if lease is not None:
        statement = statement.where(QueueRecipient.claimed_at < now - lease)
    if worker_id is not None:
        statement = statement.where(QueueRecipient.claimed_by == worker_id)
    with db.session() as session:
        result: Any = session.execute(statement)
        return int(result.rowcount or 0)


def release(
    db: Database, ids: Sequence[int], *, now: datetime, retry_at: datetime, reply: Reply
) -> int:
    """Give back claims a worker could not settle (an unexpected error): those of ``ids``
    still in flight wait until ``retry_at``, with ``reply`` as their last reply. Not counted
    as an attempt."""
    statement = (
        update(QueueRecipient)
        .where(QueueRecipient.id.in_(list(ids)), QueueRecipient.status == QueueStatus.IN_FLIGHT)
        .values(
            status=QueueStatus.DEFERRED,
            next_attempt_at=retry_at,
            last_code=reply.code,
            last_reply=reply.text[:1000],
            claimed_at=None,
            claimed_by="",
            updated_at=now,
        )
    )
    with db.session() as session:
        result: Any = session.execute(statement)
        return int(result.rowcount or 0)


# -- outcomes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """When to try again, when to warn the sender, when to give up (RFC 5321 §4.5.4.1)."""

    schedule: tuple[int, ...] = (60, 300, 900, 1800, 3600, 7200, 14400)
    delay_notice_after: timedelta = timedelta(hours=4)
    give_up_after: timedelta = timedelta(days=5)

    @classmethod
    def from_settings(cls, smtp: SmtpSettings) -> RetryPolicy:
        return cls(
            schedule=tuple(smtp.retry_schedule) or (60,),
            delay_notice_after=timedelta(seconds=smtp.delay_notice_after),
            give_up_after=timedelta(seconds=smtp.give_up_after),
        )

    def next_attempt(self, attempts_done: int, created_at: datetime, now: datetime) -> datetime:
        """RFC 5321 §4.5.4.1: wait before retrying, longer each time (the schedule's last value
        repeats), and never past the give-up time, so that the last attempt happens then."""
        wait = self.schedule[min(max(attempts_done, 1), len(self.schedule)) - 1]
        return min(now + timedelta(seconds=wait), max(now, created_at + self.give_up_after))

    def settle(self, claim: Claim, reply: Reply, now: datetime) -> Settled:
        if reply.ok:
            return Settled(claim, QueueStatus.DELIVERED, reply)
        if reply.permanent:
            return Settled(claim, QueueStatus.FAILED, reply, notify_failure=True)
        age = now - claim.message.created_at
        if age >= self.give_up_after:  # RFC 5321 §4.5.4.1: give up after some days
            return Settled(claim, QueueStatus.FAILED, reply, notify_failure=True, gave_up=True)
        notice = not claim.delay_notified and age >= self.delay_notice_after
        retry_at = self.next_attempt(claim.attempts + 1, claim.message.created_at, now)
        return Settled(claim, QueueStatus.DEFERRED, reply, retry_at, notify_delay=notice)


_EVENTS = {
    QueueStatus.DELIVERED: AuditEvent.QUEUE_DELIVERED,
    QueueStatus.DEFERRED: AuditEvent.QUEUE_DEFERRED,
    QueueStatus.FAILED: AuditEvent.QUEUE_FAILED,
}


def apply(session: Session, outcomes: Sequence[Settled], now: datetime) -> None:
    """Write ``outcomes`` and their audit entries inside the caller's transaction. The row
    updates come first: on SQLite the first write takes the database's write lock."""
    for outcome in outcomes:
        session.execute(_outcome_update(outcome, now))
    for outcome in outcomes:
        append(session, _outcome_record(outcome, now))


def _outcome_update(outcome: Settled, now: datetime) -> Any:
    values: dict[str, Any] = {
        "status": outcome.status,
        "attempts": QueueRecipient.attempts + 1,
        "next_attempt_at": outcome.next_attempt_at,
        "last_code": outcome.reply.code,
        "last_reply": outcome.reply.text[:1000],
        "remote_mta": outcome.reply.remote_mta[:253],
        "claimed_at": None,
        "claimed_by": "",
        "updated_at": now,
    }
    if outcome.notify_delay:
        values["delay_notified"] = True
    return (
        update(QueueRecipient)
        .where(QueueRecipient.id == outcome.claim.recipient_id)
        .values(**values)
    )


def _outcome_record(outcome: Settled, now: datetime) -> AuditRecord:
    claim = outcome.claim
    context: dict[str, Any] = {
        "queue_id": claim.message.id,
        "message_id": claim.message.message_id,
        "sender": claim.message.sender,
        "account": claim.message.account,
        "attempt": claim.attempts + 1,
        "reply": outcome.reply.line(),
        "remote_mta": outcome.reply.remote_mta,
    }
    if outcome.next_attempt_at is not None:
        context["next_attempt_at"] = outcome.next_attempt_at.isoformat()
    if outcome.gave_up:
        context["gave_up"] = True
    return AuditRecord(_EVENTS[outcome.status], SYSTEM_ACTOR, claim.address, context, at=now)


# -- reading -----------------------------------------------------------------------------------


def recipients_of(db: Database, message_pk: int) -> list[RecipientState]:
    with db.session() as session:
        rows = session.execute(
            select(QueueRecipient)
            .where(QueueRecipient.message_pk == message_pk)
            .order_by(QueueRecipient.id)
        ).scalars()
        return [recipient_state(row, RecipientState) for row in rows]


def recipient_state(row: QueueRecipient, kind: type[S]) -> S:
    """``row`` as a :class:`RecipientState` (or a subclass that adds only properties)."""
    return kind(
        id=row.id,
        message_pk=row.message_pk,
        address=row.address,
        domain=row.domain,
        status=row.status,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        last_code=row.last_code,
        last_reply=row.last_reply,
        remote_mta=row.remote_mta,
        delay_notified=row.delay_notified,
        claimed_by=row.claimed_by,
        updated_at=row.updated_at,
    )


# -- the queue as one object -------------------------------------------------------------------


@dataclass
class Queue:
    """The queue of one database with its retry policy: what the delivery service holds."""

    db: Database
    policy: RetryPolicy = field(default_factory=RetryPolicy)

    def claim_due(
        self,
        *,
        worker_id: str,
        limit: int,
        now: datetime,
        domains: Collection[str] | None = None,
    ) -> list[DomainBatch]:
        return claim_due(self.db, worker_id=worker_id, limit=limit, now=now, domains=domains)

    def due_domains(self, *, now: datetime, limit: int, exclude: Collection[str] = ()) -> list[str]:
        return due_domains(self.db, now=now, limit=limit, exclude=exclude)

    def recover(
        self, now: datetime, *, lease: timedelta | None = None, worker_id: str | None = None
    ) -> int:
        """Reset in-flight recipients to queued (see :func:`recover`)."""
        return recover(self.db, now=now, lease=lease, worker_id=worker_id)

    def release(
        self, ids: Sequence[int], *, now: datetime, retry_at: datetime, reply: Reply
    ) -> int:
        return release(self.db, ids, now=now, retry_at=retry_at, reply=reply)

    def settle(self, claim: Claim, reply: Reply, now: datetime) -> Settled:
        return self.policy.settle(claim, reply, now)

    def recipients(self, message_pk: int) -> list[RecipientState]:
        return recipients_of(self.db, message_pk)
