"""The operator's outbox of mailbox changes to publish to the national directory
(docs/publication.md, "The outbox").

Transactional outbox: :func:`enqueue_publication` is called inside the transaction that creates,
changes or closes the mailbox, so the change and its publication commit together or not at all;
nothing is lost if the process dies before the authority is told. The worker
(:mod:`mssante.operator.publisher`) then sends the rows as FHIR PATCHes.

Order: the rows of one address are sent one at a time, in the order they were written: a row is
*due* only when no older row of its address is still pending (a head of line), and it is
*claimed* for a lease before being sent, so two workers (two nodes on one PostgreSQL) never send
the same address's changes at once. A row claimed by a process that died is sent again when
its lease ends; the authority's operations are idempotent (an insert is an upsert, a delete
"if found"), so a change sent twice does no harm.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, aliased

from mssante.audit.events import AuditEvent, AuditRecord
from mssante.audit.log import append
from mssante.directory.fhir import IDNAT_SYSTEM, STRUCTURE_SYSTEM
from mssante.directory.fhirpatch import (
    MailboxData,
    carrier,
    delete_parameters,
    insert_parameters,
    replace_parameters,
)
from mssante.store.db import Database
from mssante.store.models import (
    DirectoryOutbox,
    Mailbox,
    MailboxType,
    OutboxOperation,
    OutboxStatus,
    utcnow,
)

PUBLISHER_ACTOR = "directory-publisher"


@dataclass(frozen=True)
class OutboxItem:
    """One claimed row, as the worker sends it."""

    id: int
    address: str
    operation: OutboxOperation
    resource: str
    identifier: str
    body: str
    attempts: int


@dataclass(frozen=True)
class OutboxRow:
    """One row as ``mssante directory outbox`` lists it."""

    id: int
    address: str
    operation: str
    resource: str
    identifier: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_status: int | None
    last_error: str
    created_at: datetime
    sent_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        for key in ("next_attempt_at", "created_at", "sent_at"):
            data[key] = data[key].isoformat() if data[key] else None
        return data


# -- writing, in the mailbox's transaction -----------------------------------------------------


def mailbox_data(mailbox: Mailbox) -> MailboxData:
    """What the directory shows of a mailbox (openapi-balmss.yaml, MailboxMSS). The
    description is published for the types the API lists it for (CAB, ORG, APP)."""
    described = mailbox.type is not MailboxType.PER
    return MailboxData(
        address=mailbox.address,
        type=mailbox.type.value,
        liste_rouge=mailbox.liste_rouge,
        description=_clean(mailbox.description) if described else "",
    )


def _clean(text: str) -> str:
    """A description fit for the extraction's line: no '|', no control character."""
    kept = "".join(" " if c == "|" or ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F else c for c in text)
    return kept.strip()[:500]


def carrier_identifier(mailbox: Mailbox) -> str | None:
    """The conditional PATCH's ``identifier`` (openapi-balmss.yaml): the professional's idNat
    for PER and CAB; the mailbox's structure for ORG and APP ("" = this operator's own, filled
    in when sent). None: a PER or CAB mailbox without a professional has nothing to publish."""
    if mailbox.type in (MailboxType.PER, MailboxType.CAB):
        professional = mailbox.owner_professional
        return f"{IDNAT_SYSTEM}|{professional.id_nat}" if professional else None
    return f"{STRUCTURE_SYSTEM}|{mailbox.structure_id}" if mailbox.structure_id else ""


def enqueue_publication(
    session: Session, mailbox: Mailbox, operation: OutboxOperation
) -> DirectoryOutbox | None:
    """Write the change of ``mailbox`` to the outbox, in the caller's transaction."""
    identifier = carrier_identifier(mailbox)
    if identifier is None:
        return None
    data = mailbox_data(mailbox)
    if operation is OutboxOperation.INSERT:
        body = insert_parameters(data)
    elif operation is OutboxOperation.REPLACE:
        body = replace_parameters(data)
    else:
        body = delete_parameters(data.type, data.address)
    row = DirectoryOutbox(
        address=mailbox.address,
        operation=operation,
        resource=carrier(data.type),
        identifier=identifier,
        body=json.dumps(body, ensure_ascii=False),
        status=OutboxStatus.PENDING,
        attempts=0,
        next_attempt_at=utcnow(),
        claimed_by="",
        last_error="",
    )
    session.add(row)
    return row


# -- claiming and settling (the worker) --------------------------------------------------------


def claim_due(
    db: Database, *, worker: str, now: datetime, limit: int, lease: timedelta
) -> list[OutboxItem]:
    """Claim up to ``limit`` due heads of line, oldest first, for ``lease``."""
    older = aliased(DirectoryOutbox)
    blocked = (
        select(older.id)
        .where(
            older.address == DirectoryOutbox.address,
            older.status == OutboxStatus.PENDING,
            older.id < DirectoryOutbox.id,
        )
        .exists()
    )
    free = DirectoryOutbox.claimed_until.is_(None) | (DirectoryOutbox.claimed_until < now)
    with db.session() as session:
        ids = (
            session.execute(
                select(DirectoryOutbox.id)
                .where(
                    DirectoryOutbox.status == OutboxStatus.PENDING,
                    DirectoryOutbox.next_attempt_at <= now,
                    free,
                    ~blocked,
                )
                .order_by(DirectoryOutbox.id)
                .limit(limit)
            )
            .scalars()
            .all()
        )
        if not ids:
            return []
        claimed = (
            session.execute(
                update(DirectoryOutbox)
                .where(
                    DirectoryOutbox.id.in_(ids),
                    DirectoryOutbox.status == OutboxStatus.PENDING,
                    free,
                )
                .values(claimed_by=worker, claimed_until=now + lease)
                .returning(DirectoryOutbox.id)
            )
            .scalars()
            .all()
        )
        rows = session.execute(
            select(DirectoryOutbox)
            .where(DirectoryOutbox.id.in_(claimed))
            .order_by(DirectoryOutbox.id)
        ).scalars()
        return [_item(row) for row in rows]


def _item(row: DirectoryOutbox) -> OutboxItem:
    return OutboxItem(
        row.id, row.address, row.operation, row.resource, row.identifier, row.body, row.attempts
    )


@dataclass(frozen=True)
class Settlement:
    """What became of one attempt."""

    item: OutboxItem
    status: OutboxStatus  # SENT, FAILED, or PENDING (to be tried again at ``retry_at``)
    http_status: int | None
    message: str
    retry_at: datetime | None = None


def settle(db: Database, outcome: Settlement, *, worker: str, now: datetime) -> bool:
    """Record an attempt, with its audit entry when final; False if the claim was lost (its
    lease ended and another worker took the row: that one's outcome counts)."""
    values: dict[str, Any] = {
        "attempts": DirectoryOutbox.attempts + 1,
        "last_status": outcome.http_status,
        "last_error": outcome.message[:1000],
        "claimed_by": "",
        "claimed_until": None,
        "status": outcome.status,
        "next_attempt_at": outcome.retry_at if outcome.status is OutboxStatus.PENDING else None,
    }
    if outcome.status is OutboxStatus.SENT:
        values["sent_at"] = now
    with db.session() as session:
        result: Any = session.execute(
            update(DirectoryOutbox)
            .where(
                DirectoryOutbox.id == outcome.item.id,
                DirectoryOutbox.claimed_by == worker,
                DirectoryOutbox.status == OutboxStatus.PENDING,
            )
            .values(**values)
        )
        done = int(result.rowcount or 0)
        if done and outcome.status is not OutboxStatus.PENDING:
            append(session, _final_record(outcome))
        return bool(done)


def release(db: Database, ids: list[int], worker: str) -> None:
    """Give back rows claimed but not tried (the authority went away mid-round)."""
    with db.session() as session:
        session.execute(
            update(DirectoryOutbox)
            .where(DirectoryOutbox.id.in_(ids), DirectoryOutbox.claimed_by == worker)
            .values(claimed_by="", claimed_until=None)
        )


def _final_record(outcome: Settlement) -> AuditRecord:
    item = outcome.item
    event = (
        AuditEvent.DIRECTORY_PUBLISHED
        if outcome.status is OutboxStatus.SENT
        else AuditEvent.DIRECTORY_PUBLICATION_REFUSED
    )
    return AuditRecord(
        event,
        actor=PUBLISHER_ACTOR,
        target=item.address,
        context={
            "operation": item.operation.value,
            "resource": item.resource,
            "identifier": item.identifier,
            "http_status": outcome.http_status,
            "message": outcome.message[:500],
            "attempts": item.attempts + 1,
            "outbox_id": item.id,
        },
    )


# -- reading (the command line) ----------------------------------------------------------------


def outbox_rows(db: Database, *, include_sent: bool = False, limit: int = 1000) -> list[OutboxRow]:
    """Pending and failed rows (and sent ones if asked), oldest first."""
    query = select(DirectoryOutbox).order_by(DirectoryOutbox.id).limit(limit)
    if not include_sent:
        query = query.where(DirectoryOutbox.status != OutboxStatus.SENT)
    with db.session() as session:
        return [_row(r) for r in session.execute(query).scalars()]


def outbox_counts(db: Database) -> dict[str, int]:
    with db.session() as session:
        counted = session.execute(
            select(DirectoryOutbox.status, func.count()).group_by(DirectoryOutbox.status)
        ).all()
    counts = {s.value: 0 for s in OutboxStatus}
    counts.update({status.value: int(n) for status, n in counted})
    return counts


def _row(r: DirectoryOutbox) -> OutboxRow:
    return OutboxRow(
        r.id, r.address, r.operation.value, r.resource, r.identifier, r.status.value,
        r.attempts, r.next_attempt_at, r.last_status, r.last_error, r.created_at, r.sent_at,
    )  # fmt: skip
