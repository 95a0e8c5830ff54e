"""Shared and delegated mailboxes: team work without lending a CPS card (docs/delegation.md).

An ORG mailbox (a service's secretariat) has members; a professional delegates their PER
mailbox to a secretary or a replacement, possibly until a date. Both are rows of
``mailbox_access`` (right ``read``, ``file`` or ``send``), which :mod:`mssante.ops.rights` (the
one authorization rule) reads at each use, for the folder operations and for
:meth:`mssante.ops.accounts.Accounts.sendable_addresses`. A grant is
never deleted: revoking sets ``revoked_at``, so the access log keeps its history. Every change
is audited in its transaction, with the person behind it as actor.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mssante.audit.events import Actor, AuditEvent, AuditRecord
from mssante.audit.log import append
from mssante.auth.revocation import Credential as Ground
from mssante.auth.revocation import revoke
from mssante.directory.outbox import enqueue_publication
from mssante.errors import NotFoundError
from mssante.ops.accounts import AccountError, check_address, check_served_domain, refuse_taken
from mssante.ops.mailstore import MailStore
from mssante.store.db import Database
from mssante.store.models import (
    AccessRight,
    Account,
    AuditEntry,
    Mailbox,
    MailboxAccess,
    MailboxType,
    OutboxOperation,
    utcnow,
)

# Events that show a mailbox used or shared by someone other than its owner.
ACCESS_LOG_EVENTS = (
    AuditEvent.MAILBOX_ACCESS_GRANTED,
    AuditEvent.MAILBOX_ACCESS_REVOKED,
    AuditEvent.DELEGATED_ACCESS,
    AuditEvent.DELEGATED_SEND,
    AuditEvent.MAILBOX_REFUSED_OPERATION,
)


@dataclass(frozen=True)
class Member:
    """One grant as the admin sees it."""

    login: str
    right: str
    granted_by: str
    granted_at: datetime
    expires_at: datetime | None
    active: bool


@dataclass(frozen=True)
class AccessUse:
    """One entry of a mailbox's access log."""

    at: datetime
    event: str
    actor: str
    target: str
    context: dict[str, Any]


class Delegations:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create_org(
        self,
        address: str,
        description: str,
        actor: Actor,
        *,
        domains: Collection[str] | None = None,
    ) -> str:
        """An ORG mailbox with no owner account: its members are granted by the operator.
        ``domains``: the operator's domains; an address elsewhere is refused, nothing stored
        (see :func:`mssante.ops.accounts.check_served_domain`)."""
        address = check_served_domain(check_address(address), domains)
        with self.db.session() as session:
            refuse_taken(session, address)
            mailbox = Mailbox(address=address, type=MailboxType.ORG, description=description)
            MailStore.ensure_folders(session, mailbox)
            session.add(mailbox)
            session.flush()
            enqueue_publication(session, mailbox, OutboxOperation.INSERT)  # docs/publication.md
            _audit(session, AuditEvent.MAILBOX_ORG_CREATED, actor, address, {"type": "ORG"})
        return address

    def grant(
        self,
        address: str,
        login: str,
        right: AccessRight,
        actor: Actor,
        *,
        until: datetime | None = None,
    ) -> Member:
        """Give ``login`` a right on the mailbox (replacing any active grant it has there)."""
        if until is not None and until <= utcnow():
            raise AccountError(f"the end date {until.isoformat()} is already past")
        with self.db.session() as session:
            box = _mailbox(session, address)
            account = _account(session, login)
            if box.owner_account_id == account.id:
                raise AccountError(f"{login} owns {box.address} already")
            _end_grants(box, account.id)
            grant = MailboxAccess(
                account_id=account.id, right=right, granted_by=actor.name, expires_at=until
            )
            box.grants.append(grant)
            session.flush()
            extra = {"to": account.login, "right": right.value, "until": _iso(until)}
            _audit(session, AuditEvent.MAILBOX_ACCESS_GRANTED, actor, box.address, extra)
            return _member(grant, account.login)

    def delegate(
        self,
        owner_address: str,
        login: str,
        right: AccessRight,
        actor: Actor,
        *,
        until: datetime | None = None,
    ) -> Member:
        """The owner of a PER (or CAB) mailbox lends it to a secretary or a replacement."""
        with self.db.session() as session:
            box = _mailbox(session, owner_address)
            if box.type not in (MailboxType.PER, MailboxType.CAB) or box.owner_account is None:
                raise AccountError(f"{box.address} is not a personal mailbox")
            owner = box.owner_account.login
        on_behalf = Actor(actor.name, {**actor.context, "on_behalf_of": owner})
        return self.grant(owner_address, login, right, on_behalf, until=until)

    def revoke(self, address: str, login: str, actor: Actor) -> int:
        """End every active grant of ``login`` on the mailbox; how many there were."""
        with self.db.session() as session:
            box = _mailbox(session, address)
            account = _account(session, login)
            ended = _end_grants(box, account.id)
            if not ended:
                raise NotFoundError(f"{login} has no access to {box.address}")
            _audit(
                session,
                AuditEvent.MAILBOX_ACCESS_REVOKED,
                actor,
                box.address,
                {"from": account.login},
            )
            # Its open sessions on the mailbox end (docs/revocation.md), and its submission
            # sessions, which keep the addresses they may send as.
            ground = Ground.delegation(account.id, box.id)
            revoke(session, ground, "delegation_revoked", actor=actor.name)
            return ended

    def members(self, address: str) -> list[Member]:
        """Every grant on the mailbox, active or ended, oldest first."""
        with self.db.session() as session:
            box = _mailbox(session, address)
            return [_member(g, g.account.login) for g in box.grants]

    def access_log(self, address: str) -> list[AccessUse]:
        """Grants, revocations, and every use of the mailbox by someone other than its owner."""
        with self.db.session() as session:
            box = _mailbox(session, address)
            rows = session.execute(
                select(AuditEntry)
                .where(
                    AuditEntry.event.in_([e.value for e in ACCESS_LOG_EVENTS]),
                    AuditEntry.target == box.address,
                )
                .order_by(AuditEntry.seq)
            ).scalars()
            return [AccessUse(r.at, r.event, r.actor, r.target, dict(r.context)) for r in rows]


def _mailbox(session: Session, address: str) -> Mailbox:
    box = session.execute(
        select(Mailbox).where(Mailbox.address == address.strip().lower())
    ).scalar_one_or_none()
    if box is None or box.closed_at is not None:
        raise NotFoundError(f"no open mailbox {address}")
    return box


def _account(session: Session, login: str) -> Account:
    account = session.execute(
        select(Account).where(Account.login == login.strip().lower())
    ).scalar_one_or_none()
    if account is None or account.disabled:
        raise NotFoundError(f"no account {login}")
    return account


def _end_grants(box: Mailbox, account_id: int) -> int:
    now = utcnow()
    active = [g for g in box.grants if g.account_id == account_id and g.active(now)]
    for grant in active:
        grant.revoked_at = now
    return len(active)


def _member(grant: MailboxAccess, login: str) -> Member:
    return Member(
        login,
        grant.right.value,
        grant.granted_by,
        grant.granted_at,
        grant.expires_at,
        grant.active(),
    )


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when else None


def _audit(
    session: Session, event: AuditEvent, actor: Actor, target: str, extra: dict[str, Any]
) -> None:
    append(
        session,
        AuditRecord(event, actor=actor.name, target=target, context={**actor.context, **extra}),
    )


__all__: Sequence[str] = ["ACCESS_LOG_EVENTS", "AccessUse", "Delegations", "Member"]
