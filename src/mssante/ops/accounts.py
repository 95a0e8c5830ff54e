"""Accounts, professionals and mailboxes: creation, password login, who may send as what.

Used by the admin command line, the demo, SMTP submission and (later) IMAP and the webmail.
Every change is audited in the same transaction.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from mssante.audit.events import Actor, AuditEvent, AuditRecord
from mssante.audit.log import append
from mssante.auth.passwords import hash_password, password_problem, verify_password
from mssante.auth.revocation import Credential as Ground
from mssante.auth.revocation import revoke
from mssante.directory.outbox import enqueue_publication
from mssante.errors import MssanteError, NotFoundError
from mssante.ops.mailstore import MailStore
from mssante.ops.rights import Caller, Operation, authorize
from mssante.pki.ids import parse_id_nat, parse_id_nat_struct
from mssante.store.db import Database
from mssante.store.models import (
    Account,
    AccountKind,
    Credential,
    CredentialKind,
    Mailbox,
    MailboxAccess,
    MailboxType,
    OutboxOperation,
    Professional,
    utcnow,
)


class AccountError(MssanteError):
    """An account or mailbox change was refused."""


@dataclass(frozen=True)
class NewPerson:
    """A professional with a personal mailbox and a login (the mailbox's address)."""

    address: str
    password: str
    id_nat: str
    last_name: str
    first_name: str
    profession_code: str = ""
    profession_label: str = ""
    civility: str = ""


@dataclass(frozen=True)
class NewApplication:
    """The software behind an APP mailbox: its login is the mailbox's address. It has no
    password: it logs in with an organisation certificate bound to it (docs/auth.md)."""

    address: str
    structure_id: str  # IdNatStruct of the structure the mailbox belongs to
    description: str = ""


@dataclass(frozen=True)
class AccountView:
    login: str
    kind: str
    id_nat: str | None
    mailboxes: tuple[str, ...]


class SendAs(frozenset[str]):
    """Every address an account may send as; ``own`` are its own mailboxes, the others are
    granted (mail from them must say ``Sender:`` the account's own address, RFC 5322 §3.6.2)."""

    own: frozenset[str]

    @classmethod
    def of(cls, own: Iterable[str], granted: Iterable[str] = ()) -> SendAs:
        mine = frozenset(own)
        result = cls(mine | frozenset(granted))
        result.own = mine
        return result

    @property
    def delegated(self) -> frozenset[str]:
        return frozenset(self - self.own)


class Accounts:
    def __init__(self, db: Database) -> None:
        self.db = db
        # A hash of a random password, verified against when the login is unknown, so that
        # an unknown login costs the same time as a wrong password (no timing oracle).
        self._dummy_hash = hash_password(secrets.token_urlsafe(16))

    def create_person(
        self, new: NewPerson, actor: Actor, *, domains: Collection[str] | None = None
    ) -> AccountView:
        """A professional, their PER mailbox and their login, in one transaction.

        ``domains``: the operator's domains (``settings.operator.domains``); an address in any
        other domain is refused, nothing stored. None only where no operator is configured
        (tests building a database by hand)."""
        problem = password_problem(new.password)
        if problem:
            raise AccountError(problem)
        id_nat = parse_id_nat(new.id_nat)
        address = check_served_domain(_check_address(new.address), domains)
        digest = hash_password(new.password)
        with self.db.session() as session:
            _refuse_taken(session, address)
            professional = _professional(session, str(id_nat), new)
            account = Account(login=address, kind=AccountKind.PERSON, professional=professional)
            account.credentials.append(Credential(kind=CredentialKind.PASSWORD, secret=digest))
            mailbox = Mailbox(
                address=address,
                type=MailboxType.PER,
                owner_account=account,
                owner_professional=professional,
            )
            MailStore.ensure_folders(session, mailbox)
            session.add_all([account, mailbox])
            session.flush()
            enqueue_publication(session, mailbox, OutboxOperation.INSERT)
            _audit(session, AuditEvent.ACCOUNT_CREATED, actor, address, {"id_nat": str(id_nat)})
            _audit(session, AuditEvent.MAILBOX_CREATED, actor, address, {"type": "PER"})
            return AccountView(address, AccountKind.PERSON.value, str(id_nat), (address,))

    def create_application(
        self, new: NewApplication, actor: Actor, *, domains: Collection[str] | None = None
    ) -> AccountView:
        """An application account and its APP mailbox, in one transaction (``domains``: as
        for :meth:`create_person`)."""
        structure = str(parse_id_nat_struct(new.structure_id))
        address = check_served_domain(_check_address(new.address), domains)
        with self.db.session() as session:
            _refuse_taken(session, address)
            account = Account(login=address, kind=AccountKind.APPLICATION)
            mailbox = Mailbox(
                address=address,
                type=MailboxType.APP,
                owner_account=account,
                structure_id=structure,
                description=new.description.strip()[:500],
            )
            MailStore.ensure_folders(session, mailbox)
            session.add_all([account, mailbox])
            session.flush()
            enqueue_publication(session, mailbox, OutboxOperation.INSERT)
            context = {"kind": AccountKind.APPLICATION.value, "structure_id": structure}
            _audit(session, AuditEvent.ACCOUNT_CREATED, actor, address, context)
            _audit(session, AuditEvent.MAILBOX_CREATED, actor, address, {"type": "APP"})
            return AccountView(address, AccountKind.APPLICATION.value, None, (address,))

    def set_liste_rouge(self, address: str, hidden: bool, actor: Actor) -> bool:
        """Put a mailbox on liste rouge (not published in the directory, BRIEF §4) or take it
        off; the change goes to the directory's outbox in the same transaction. False if it
        already was so."""
        with self.db.session() as session:
            mailbox = _open_mailbox(session, address)
            if mailbox.liste_rouge == hidden:
                return False
            mailbox.liste_rouge = hidden
            session.flush()
            enqueue_publication(session, mailbox, OutboxOperation.REPLACE)
            _audit(
                session, AuditEvent.MAILBOX_UPDATED, actor, mailbox.address, {"liste_rouge": hidden}
            )
            return True

    def close_mailbox(self, address: str, actor: Actor) -> None:
        """Close a mailbox (``closed_at``; it can no longer be sent as): its entry leaves the
        directory (the outbox's delete, in the same transaction). Its row stays, so its address
        is never given to anyone else."""
        with self.db.session() as session:
            mailbox = _open_mailbox(session, address)
            mailbox.closed_at = utcnow()
            session.flush()
            enqueue_publication(session, mailbox, OutboxOperation.DELETE)
            _audit(
                session,
                AuditEvent.MAILBOX_CLOSED,
                actor,
                mailbox.address,
                {"type": mailbox.type.value},
            )

    def disable(self, login: str, actor: Actor) -> None:
        """Disable an account: no new login, and every open session of it ends (IMAP,
        submission, the webmail: docs/revocation.md), in one transaction with the audit."""
        with self.db.session() as session:
            account = _account(session, login)
            if account is None:
                raise NotFoundError(f"no account {login.strip().lower()}")
            account.disabled = True
            _audit(session, AuditEvent.ACCOUNT_DISABLED, actor, account.login, {})
            revoke(session, Ground.account(account.id), "account_disabled", actor=actor.name)

    def authenticate(self, login: str, password: str) -> Account | None:
        """The account if ``password`` is its current password; None otherwise (no detail:
        the caller must not tell an unknown login from a wrong password)."""
        with self.db.session() as session:
            account = _account(session, login)
            if account is None or account.disabled:
                verify_password(self._dummy_hash, password)
                return None
            hashes = [
                c.secret
                for c in account.credentials
                if c.kind is CredentialKind.PASSWORD and c.revoked_at is None
            ]
            if any(verify_password(h, password) for h in hashes):
                return account
            return None

    def sendable_addresses(self, login: str) -> SendAs:
        """Addresses this account may put in MAIL FROM and From:, as the one authorization
        rule says (:func:`mssante.ops.rights.authorize`, checked now: an expired or revoked
        grant no longer counts): the mailboxes it sends as (its own open ones, ``own``), and
        those it sends on behalf of (``send`` grants: ``Sender:`` must then be the account's
        own address, RFC 5322 §3.6.2)."""
        with self.db.session() as session:
            account = _account(session, login)
            if account is None:
                return SendAs.of(())
            granted = select(MailboxAccess.mailbox_id).where(MailboxAccess.account_id == account.id)
            boxes = session.execute(
                select(Mailbox)
                .options(selectinload(Mailbox.grants))
                .where((Mailbox.owner_account_id == account.id) | Mailbox.id.in_(granted))
            ).scalars()
            caller, now = Caller.of(account), utcnow()
            own, behalf = [], []
            for box in boxes:
                if authorize(caller, box, Operation.SEND_AS, now=now):
                    own.append(box.address)
                elif authorize(caller, box, Operation.SEND_ON_BEHALF, now=now):
                    behalf.append(box.address)
            return SendAs.of(own, behalf)

    def get(self, login: str) -> AccountView:
        with self.db.session() as session:
            account = _account(session, login)
            if account is None:
                raise NotFoundError(f"no account {login}")
            boxes = session.execute(
                select(Mailbox.address).where(Mailbox.owner_account_id == account.id)
            ).scalars()
            id_nat = account.professional.id_nat if account.professional else None
            return AccountView(account.login, account.kind.value, id_nat, tuple(sorted(boxes)))


def _check_address(address: str) -> str:
    address = address.strip().lower()
    local, _, domain = address.rpartition("@")
    if not local or "." not in domain or any(c.isspace() for c in address) or len(address) > 254:
        raise AccountError(f"'{address}' is not a valid mail address")
    return address


def check_address(address: str) -> str:
    """The address in lower case, if it looks like a mail address; else :class:`AccountError`."""
    return _check_address(address)


def check_served_domain(address: str, domains: Collection[str] | None) -> str:
    """``address`` (already checked, lower case) if its domain is one this operator serves;
    else :class:`AccountError`. A mailbox outside our domains could never receive mail (peers
    route its domain elsewhere) and would be published to the directory under another
    operator's name. ``domains`` None: not checked (no operator configured)."""
    if domains is None:
        return address
    served = {d.strip().lower().rstrip(".") for d in domains}
    domain = address.rpartition("@")[2]
    if domain not in served:
        ours = ", ".join(sorted(served))
        raise AccountError(
            f"{address} : le domaine {domain} n'est pas servi par cet opérateur (domaines : "
            f"{ours or 'aucun'}) / the domain {domain} is not served by this operator "
            f"(domains: {ours or 'none'})"
        )
    return address


def refuse_taken(session: Session, address: str) -> None:
    """:class:`AccountError` if a mailbox or a login already uses ``address``."""
    _refuse_taken(session, address)


def _refuse_taken(session: Session, address: str) -> None:
    if session.execute(select(Mailbox.id).where(Mailbox.address == address)).first():
        raise AccountError(f"the address {address} is already taken")
    if session.execute(select(Account.id).where(Account.login == address)).first():
        raise AccountError(f"the login {address} is already taken")


def _professional(session: Session, id_nat: str, new: NewPerson) -> Professional:
    existing = session.execute(
        select(Professional).where(Professional.id_nat == id_nat)
    ).scalar_one_or_none()
    if existing is not None:
        return existing
    return Professional(
        id_nat=id_nat,
        id_type="RPPS" if id_nat.startswith("8") else "ADELI",
        id_value=id_nat[1:],
        civility=new.civility,
        last_name=new.last_name,
        first_name=new.first_name,
        profession_code=new.profession_code,
        profession_label=new.profession_label,
    )


def _open_mailbox(session: Session, address: str) -> Mailbox:
    mailbox: Mailbox | None = session.execute(
        select(Mailbox)
        .options(selectinload(Mailbox.owner_professional))
        .where(Mailbox.address == address.strip().lower())
    ).scalar_one_or_none()
    if mailbox is None:
        raise NotFoundError(f"no mailbox {address.strip().lower()}")
    if mailbox.closed_at is not None:
        raise AccountError(f"the mailbox {mailbox.address} is closed")
    return mailbox


def _account(session: Session, login: str) -> Account | None:
    account: Account | None = session.execute(
        select(Account)
        .options(selectinload(Account.credentials), selectinload(Account.professional))
        .where(Account.login == login.strip().lower())
    ).scalar_one_or_none()
    return account


def _audit(
    session: Session, event: AuditEvent, actor: Actor, target: str, extra: Mapping[str, Any]
) -> None:
    append(
        session,
        AuditRecord(event, actor=actor.name, target=target, context={**actor.context, **extra}),
    )
