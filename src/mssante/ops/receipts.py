"""Where each recipient of a sent message stands, for the webmail's Sent view (BRIEF §7).

Sources, strongest first: a read report (MDN, RFC 8098) → "read"; a failure report (DSN,
RFC 3464, or an MDN with an integration error) → "failed" with its reason; our own outbound
queue (the peer answered 250: "delivered"; given up: "failed" with the last reply); a DSN
"delayed"; a recipient of our own domains was delivered when the message was accepted.

The caller must have read the message through the folder operations first (they check the
rights); this module only answers for the mailbox it is given.
"""

from __future__ import annotations

from collections.abc import Sequence, Set
from dataclasses import dataclass

from sqlalchemy import select

from mssante.ops.acceptance import domain_of
from mssante.store.db import Database
from mssante.store.models import (
    Mailbox,
    MessageReceipt,
    QueueMessage,
    QueueRecipient,
    QueueStatus,
    ReceiptKind,
)

PENDING = "pending"
_RANK = {"read": 4, "failed": 3, "delivered": 2, "delayed": 1, PENDING: 0}


@dataclass(frozen=True)
class RecipientStatus:
    address: str
    status: str  # pending, delivered, delayed, failed, read
    detail: str = ""


def statuses(
    db: Database,
    mailbox: str,
    message_id: str,
    recipients: Sequence[str],
    local_domains: Set[str],
) -> list[RecipientStatus]:
    """The status of each of ``recipients`` of the message ``message_id`` sent from
    ``mailbox``, in the order given."""
    best: dict[str, RecipientStatus] = {
        a.lower(): RecipientStatus(
            a.lower(), "delivered" if domain_of(a) in local_domains else PENDING
        )
        for a in recipients
    }
    if not message_id:
        return list(best.values())
    with db.session() as session:
        receipts = session.execute(
            select(MessageReceipt.recipient, MessageReceipt.kind, MessageReceipt.detail)
            .join(Mailbox, Mailbox.id == MessageReceipt.mailbox_id)
            .where(
                Mailbox.address == mailbox.lower(),
                MessageReceipt.original_message_id == message_id,
            )
        ).all()
        queued = session.execute(
            select(QueueRecipient.address, QueueRecipient.status, QueueRecipient.last_reply)
            .join(QueueMessage, QueueMessage.id == QueueRecipient.message_pk)
            .where(QueueMessage.message_id == message_id, QueueMessage.sender == mailbox.lower())
        ).all()
    for address, status, reply in queued:
        if status in (QueueStatus.DELIVERED, QueueStatus.FAILED):
            _keep(best, RecipientStatus(address.lower(), status.value, reply))
    for address, kind, detail in receipts:
        _keep(best, RecipientStatus(address.lower(), _status_of(kind), detail))
    return list(best.values())


def _status_of(kind: ReceiptKind) -> str:
    return kind.value


def _keep(best: dict[str, RecipientStatus], candidate: RecipientStatus) -> None:
    current = best.get(candidate.address)
    if current is None:
        return  # a report about an address the message was not sent to: ignored
    if _RANK[candidate.status] >= _RANK[current.status]:
        best[candidate.address] = candidate
