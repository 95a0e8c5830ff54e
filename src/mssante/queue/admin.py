"""The operator's hands on the outbound queue (docs/queue.md, ``mssante queue``).

* :func:`list_messages`: queued messages with the recipients matching a filter (by default the
  unfinished ones: queued, deferred, in flight), oldest first;
* :func:`show_message`: one message with every recipient's state, attempts, last reply and
  next attempt;
* :func:`retry`: deferred or failed recipients become due now (``queued``), for the workers'
  next poll;
* :func:`drop`: waiting recipients (queued, deferred) become ``failed`` with this MTA's own
  reply :data:`DROPPED`: they are never sent. The sender gets a failure DSN (RFC 3464), as for
  any other failure, unless the caller gives no notifier.

Why a DSN on drop: once a message is answered 250 this MTA is responsible for it, and a
failure after acceptance must be reported to the sender (RFC 5321 §6.1); a doctor who believes
a letter left must learn that it did not. ``mssante queue drop --no-dsn`` is for the rare case
where telling is wrong (a flood from a compromised account, reported separately); the choice is
in the audit entry. A message with an empty envelope sender (a DSN itself) never gets one
(RFC 3461 §6.2), whatever is asked.

A recipient in flight is left alone by both actions: a worker holds it and may be in the
middle of DATA; the operator tries again once the attempt is settled. Every change and its
audit entry (``queue.retried``, ``queue.dropped``, with the operator as actor) commit in one
transaction, and each row is changed by a conditional ``UPDATE`` (its status still the one
that allows the action), so a worker claiming the same row at the same moment either gets it
first (the row is skipped, and reported so) or never sees it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, func, select, update
from sqlalchemy.orm import Session

from mssante.audit.events import AuditEvent, AuditRecord
from mssante.audit.log import append
from mssante.errors import MssanteError, NotFoundError
from mssante.queue.store import (
    Claim,
    QueuedMessage,
    RecipientState,
    Reply,
    Settled,
    domain_of,
    queued_message,
    recipient_state,
)
from mssante.store.db import Database
from mssante.store.models import QueueMessage, QueueRecipient, QueueStatus

if TYPE_CHECKING:
    from mssante.queue.delivery import Notifier

UNFINISHED = frozenset({QueueStatus.QUEUED, QueueStatus.DEFERRED, QueueStatus.IN_FLIGHT})
RETRYABLE = (QueueStatus.DEFERRED, QueueStatus.FAILED)
DROPPABLE = (QueueStatus.QUEUED, QueueStatus.DEFERRED)

# This MTA's own reply for a dropped recipient (RFC 3463 X.0.0: no more precise code fits).
DROPPED_TEXT = "5.0.0 retiré de la file par l'opérateur / removed from the queue by the operator"
DROPPED_CODE = 550
_CHUNK = 500  # ids per statement
_REASON_MAX = 200


class QueueAdminError(MssanteError):
    """A queue action was refused (nothing selected, nothing to do); nothing was changed."""


# -- views ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecipientView(RecipientState):
    """A recipient as the operator's tools show it."""

    @property
    def dropped(self) -> bool:
        """Failed because an operator removed it (not a peer's answer)."""
        return (
            self.status is QueueStatus.FAILED
            and not self.remote_mta
            and self.last_reply.startswith(DROPPED_TEXT)
        )

    @property
    def reason(self) -> str:
        """The last reply as one line (``451 4.4.1 …``), empty before any attempt."""
        if self.last_code is None:
            return self.last_reply
        return f"{self.last_code} {self.last_reply}".strip()

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "address": self.address,
            "domain": self.domain,
            "status": self.status.value,
            "dropped": self.dropped,
            "attempts": self.attempts,
            "next_attempt_at": _iso(self.next_attempt_at),
            "last_code": self.last_code,
            "last_reply": self.last_reply,
            "remote_mta": self.remote_mta,
            "delay_notified": self.delay_notified,
            "claimed_by": self.claimed_by,
            "updated_at": _iso(self.updated_at),
        }


@dataclass(frozen=True)
class MessageView:
    id: int
    message_id: str
    sender: str
    account: str
    size: int
    created_at: datetime
    blob_sha256: str
    recipients: tuple[RecipientView, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "message_id": self.message_id,
            "sender": self.sender,
            "account": self.account,
            "size": self.size,
            "created_at": _iso(self.created_at),
            "blob_sha256": self.blob_sha256,
            "recipients": [r.as_dict() for r in self.recipients],
        }


@dataclass(frozen=True)
class ListFilter:
    """Which recipients :func:`list_messages` shows; a message is listed when one matches."""

    statuses: frozenset[QueueStatus] = UNFINISHED
    domain: str = ""  # the recipient's domain
    sender: str = ""  # the envelope sender
    limit: int = 100  # messages at most


# -- reading -------------------------------------------------------------------------------------


def list_messages(db: Database, wanted: ListFilter | None = None) -> list[MessageView]:
    """Messages with recipients matching ``wanted``, oldest first, each with those recipients."""
    wanted = wanted or ListFilter()
    if wanted.limit < 1:
        raise QueueAdminError("--limit doit être au moins 1 / --limit must be at least 1")
    with db.session() as session:
        matching = _recipient_filter(select(QueueRecipient.message_pk), wanted)
        ids = list(
            session.execute(
                select(QueueMessage.id)
                .where(QueueMessage.id.in_(matching))
                .order_by(QueueMessage.id)
                .limit(wanted.limit)
            ).scalars()
        )
        if not ids:
            return []
        rows = session.execute(
            _recipient_filter(select(QueueRecipient), wanted)
            .where(QueueRecipient.message_pk.in_(ids))
            .order_by(QueueRecipient.id)
        ).scalars()
        by_message: dict[int, list[RecipientView]] = {}
        for row in rows:
            by_message.setdefault(row.message_pk, []).append(_recipient_view(row))
        messages = session.execute(
            select(QueueMessage).where(QueueMessage.id.in_(ids)).order_by(QueueMessage.id)
        ).scalars()
        return [_message_view(m, by_message.get(m.id, [])) for m in messages]


def show_message(db: Database, queue_id: int) -> MessageView:
    """One queued message with every recipient, whatever its state."""
    with db.session() as session:
        message = session.get(QueueMessage, queue_id)
        if message is None:
            raise NotFoundError(_no_such_message([queue_id]))
        return _message_view(message, [_recipient_view(r) for r in message.recipients])


def _recipient_filter(query: Select[Any], wanted: ListFilter) -> Select[Any]:
    query = query.where(QueueRecipient.status.in_(sorted(wanted.statuses)))
    if wanted.domain:
        query = query.where(QueueRecipient.domain == domain_of(wanted.domain))
    if wanted.sender:
        sender = wanted.sender.strip().lower()
        query = query.where(
            QueueRecipient.message_pk.in_(
                select(QueueMessage.id).where(func.lower(QueueMessage.sender) == sender)
            )
        )
    return query


# -- acting --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """The recipients an action is about: those of the messages ``queue_ids``, or of every
    message when only ``domain`` is given; narrowed to ``domain`` and to ``recipient``."""

    queue_ids: tuple[int, ...] = ()
    domain: str = ""
    recipient: str = ""


@dataclass(frozen=True)
class Skipped:
    """A selected recipient the action left as it was, and why."""

    queue_id: int
    address: str
    status: str
    why: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "queue_id": self.queue_id,
            "address": self.address,
            "status": self.status,
            "why": self.why,
        }


@dataclass(frozen=True)
class ActionReport:
    """What :func:`retry` or :func:`drop` changed (rows as they are now) and left alone."""

    changed: tuple[RecipientView, ...]
    skipped: tuple[Skipped, ...]
    notices: int = 0  # failure DSNs delivered or queued (drop)

    def as_dict(self) -> dict[str, Any]:
        return {
            "changed": [r.as_dict() for r in self.changed],
            "skipped": [s.as_dict() for s in self.skipped],
            "dsn": self.notices,
        }


def retry(db: Database, selection: Selection, *, actor: str, now: datetime) -> ActionReport:
    """Make the selected deferred or failed recipients due now. Attempts and the last reply are
    kept; the give-up clock still runs from the message's queueing, so a temporary failure of
    a message older than ``smtp.give_up_after`` fails it again at once. A recipient an operator
    dropped stays dropped. Refused (nothing changed) when nothing selected can be retried."""
    with db.session() as session:
        eligible, skipped = _split(_selected(session, selection), _why_not_retry)
        changed_ids = _retry_rows(session, [t.before.id for t in eligible], now)
        changed = _settle(session, eligible, changed_ids, skipped, ("relancer", "retry"))
        for target, view in changed:
            context = {**_context(target), "previous_status": target.before.status.value}
            append(session, _record(AuditEvent.QUEUE_RETRIED, actor, view, context, now))
        return ActionReport(tuple(v for _, v in changed), tuple(skipped))


def drop(
    db: Database,
    selection: Selection,
    *,
    actor: str,
    now: datetime,
    reason: str = "",
    notifier: Notifier | None = None,
) -> ActionReport:
    """Remove the selected waiting recipients from delivery for good: ``failed`` with the
    reply :data:`DROPPED_TEXT` (and ``reason``, which the sender's DSN shows). With a
    ``notifier``, the sender gets a failure DSN per message, in the same transaction. Refused
    (nothing changed) when nothing selected is waiting."""
    reply = drop_reply(reason)
    with db.session() as session:
        eligible, skipped = _split(_selected(session, selection), _why_not_drop)
        changed_ids = _drop_rows(session, [t.before.id for t in eligible], reply, now)
        changed = _settle(session, eligible, changed_ids, skipped, ("retirer", "drop"))
        for target, view in changed:
            context = {
                **_context(target),
                "previous_status": target.before.status.value,
                "reason": " ".join(reason.split())[:_REASON_MAX],
                "dsn": notifier is not None and bool(target.message.sender),
            }
            append(session, _record(AuditEvent.QUEUE_DROPPED, actor, view, context, now))
        notices = _notify(session, notifier, changed, reply, now) if notifier else 0
        return ActionReport(tuple(v for _, v in changed), tuple(skipped), notices)


def drop_reply(reason: str = "") -> Reply:
    """The reply recorded for a dropped recipient (and shown in its DSN)."""
    text = " ".join(reason.split())[:_REASON_MAX]
    return Reply(DROPPED_CODE, f"{DROPPED_TEXT} ({text})" if text else DROPPED_TEXT)


# -- selection -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    """A selected recipient as read before the action, with its message."""

    before: RecipientView
    message: QueuedMessage


def _selected(session: Session, selection: Selection) -> list[_Target]:
    if not selection.queue_ids and not selection.domain.strip():
        raise QueueAdminError(
            "indiquez des numéros de file ou --domain / give queue ids or --domain"
        )
    query = select(QueueRecipient, QueueMessage).join(
        QueueMessage, QueueMessage.id == QueueRecipient.message_pk
    )
    if selection.queue_ids:
        ids = sorted(set(selection.queue_ids))
        known = session.execute(select(QueueMessage.id).where(QueueMessage.id.in_(ids)))
        found = set(known.scalars())
        if missing := [i for i in ids if i not in found]:
            raise NotFoundError(_no_such_message(missing))
        query = query.where(QueueRecipient.message_pk.in_(ids))
    if selection.domain.strip():
        query = query.where(QueueRecipient.domain == domain_of(selection.domain))
    if selection.recipient.strip():
        address = selection.recipient.strip().lower()
        query = query.where(func.lower(QueueRecipient.address) == address)
    rows = session.execute(query.order_by(QueueRecipient.id)).all()
    targets = [_Target(_recipient_view(r), queued_message(m)) for r, m in rows]
    if not targets:
        raise QueueAdminError(_no_match(selection))
    return targets


def _no_match(selection: Selection) -> str:
    what = (
        [f"file / queue {', '.join(map(str, selection.queue_ids))}"] if selection.queue_ids else []
    )
    if selection.domain.strip():
        what.append(f"domaine / domain {domain_of(selection.domain)}")
    if selection.recipient.strip():
        what.append(f"destinataire / recipient {selection.recipient.strip()}")
    return "aucun destinataire ne correspond / no recipient matches: " + ", ".join(what)


def _no_such_message(ids: Iterable[int]) -> str:
    listed = ", ".join(str(i) for i in ids)
    return f"aucun message n° {listed} dans la file / no message {listed} in the queue"


def _split(
    targets: Sequence[_Target], why_not: Callable[[RecipientView], str]
) -> tuple[list[_Target], list[Skipped]]:
    eligible: list[_Target] = []
    skipped: list[Skipped] = []
    for target in targets:
        if why := why_not(target.before):
            row = target.before
            skipped.append(Skipped(target.message.id, row.address, row.status.value, why))
        else:
            eligible.append(target)
    return eligible, skipped


def _why_not_retry(row: RecipientView) -> str:
    if row.dropped:
        return "retiré par un opérateur / dropped by an operator"
    return {
        QueueStatus.QUEUED: "déjà en attente d'envoi / already due",
        QueueStatus.IN_FLIGHT: "envoi en cours / being delivered",
        QueueStatus.DELIVERED: "déjà distribué / already delivered",
    }.get(row.status, "")


def _why_not_drop(row: RecipientView) -> str:
    if row.dropped:
        return "déjà retiré / already dropped"
    return {
        QueueStatus.IN_FLIGHT: "envoi en cours, réessayez dans un instant / being delivered, "
        "try again in a moment",
        QueueStatus.DELIVERED: "déjà distribué / already delivered",
        QueueStatus.FAILED: "déjà en échec / already failed",
    }.get(row.status, "")


def _settle(
    session: Session,
    eligible: Sequence[_Target],
    changed_ids: Collection[int],
    skipped: list[Skipped],
    verb: tuple[str, str],
) -> list[tuple[_Target, RecipientView]]:
    """The targets the update changed, with their rows as they are now. Those a worker took
    between our read and our update are reported skipped; none changed: refused."""
    for target in eligible:
        if target.before.id not in changed_ids:
            row = target.before
            why = "pris par l'envoi entre-temps / claimed by delivery meanwhile"
            skipped.append(Skipped(target.message.id, row.address, "in_flight", why))
    if not changed_ids:
        raise QueueAdminError(_nothing(*verb, skipped))
    now_rows = {v.id: v for v in _reload(session, changed_ids)}
    return [(t, now_rows[t.before.id]) for t in eligible if t.before.id in now_rows]


def _nothing(fr: str, en: str, skipped: Sequence[Skipped]) -> str:
    reasons = sorted({s.why for s in skipped})
    return f"rien à {fr} / nothing to {en}: " + "; ".join(reasons)


# -- writing -------------------------------------------------------------------------------------


def _retry_rows(session: Session, ids: Sequence[int], now: datetime) -> set[int]:
    values = {
        "status": QueueStatus.QUEUED,
        "next_attempt_at": now,
        "claimed_at": None,
        "claimed_by": "",
        "updated_at": now,
    }
    return _update_where(session, ids, RETRYABLE, values)


def _drop_rows(session: Session, ids: Sequence[int], reply: Reply, now: datetime) -> set[int]:
    values = {
        "status": QueueStatus.FAILED,
        "next_attempt_at": None,
        "last_code": reply.code,
        "last_reply": reply.text[:1000],
        "remote_mta": "",
        "claimed_at": None,
        "claimed_by": "",
        "updated_at": now,
    }
    return _update_where(session, ids, DROPPABLE, values)


def _update_where(
    session: Session, ids: Sequence[int], statuses: Sequence[QueueStatus], values: dict[str, Any]
) -> set[int]:
    """``UPDATE … WHERE id IN ids AND status IN statuses RETURNING id``: a row whose status
    changed since it was read (a worker claimed it) is not touched."""
    changed: set[int] = set()
    for start in range(0, len(ids), _CHUNK):
        chunk = list(ids[start : start + _CHUNK])
        statement = (
            update(QueueRecipient)
            .where(QueueRecipient.id.in_(chunk), QueueRecipient.status.in_(list(statuses)))
            .values(**values)
            .returning(QueueRecipient.id)
        )
        changed.update(session.execute(statement).scalars())
    return changed


def _reload(session: Session, ids: Collection[int]) -> list[RecipientView]:
    rows = session.execute(
        select(QueueRecipient)
        .where(QueueRecipient.id.in_(sorted(ids)))
        .order_by(QueueRecipient.id)
        .execution_options(populate_existing=True)
    ).scalars()
    return [_recipient_view(r) for r in rows]


def _notify(
    session: Session,
    notifier: Notifier,
    changed: Sequence[tuple[_Target, RecipientView]],
    reply: Reply,
    now: datetime,
) -> int:
    """A failure DSN per message for its dropped recipients, delivered or queued in this
    transaction (the notifier skips messages with an empty sender)."""
    settled = [
        Settled(_claim(target, view), QueueStatus.FAILED, reply, notify_failure=True)
        for target, view in changed
    ]
    notices = notifier.prepare(settled, now)
    for notice in notices:
        notifier.dispatch(session, notice, now)
    return len(notices)


def _claim(target: _Target, view: RecipientView) -> Claim:
    return Claim(
        recipient_id=view.id,
        address=view.address,
        domain=view.domain,
        attempts=view.attempts,
        delay_notified=view.delay_notified,
        message=target.message,
    )


def _context(target: _Target) -> dict[str, Any]:
    message = target.message
    return {
        "queue_id": message.id,
        "message_id": message.message_id,
        "sender": message.sender,
        "account": message.account,
    }


def _record(
    event: AuditEvent, actor: str, view: RecipientView, context: dict[str, Any], now: datetime
) -> AuditRecord:
    return AuditRecord(event, actor, view.address, {**context, "reply": view.reason}, at=now)


# -- rows to views -------------------------------------------------------------------------------


def _recipient_view(row: QueueRecipient) -> RecipientView:
    return recipient_state(row, RecipientView)


def _message_view(message: QueueMessage, recipients: Sequence[RecipientView]) -> MessageView:
    return MessageView(
        id=message.id,
        message_id=message.message_id,
        sender=message.sender,
        account=message.account,
        size=message.size,
        created_at=message.created_at,
        blob_sha256=message.blob_sha256,
        recipients=tuple(recipients),
    )


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None
