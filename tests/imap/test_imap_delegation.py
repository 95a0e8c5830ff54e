"""Shared and delegated mailboxes (docs/delegation.md): an ORG mailbox read by its members over
IMAP (SASL authorization identity), delegations that expire or are revoked, send-as with
``Sender:``, and the access log naming the person behind each use."""

from __future__ import annotations

import asyncio
import smtplib
from datetime import UTC, datetime, timedelta

import imapclient
import pytest
from sqlalchemy import update

from imap_fixtures import DURAND, MARTIN, PASSWORD, Operator, message
from mssante.ops.accounts import AccountError, Accounts, Actor, NewPerson
from mssante.ops.delegation import Delegations
from mssante.store.models import AccessRight, MailboxAccess

ORG = "secretariat.cardio@b.mssante.test"
CAROLE = "carole.petit@b.mssante.test"
ADMIN = Actor("cli:admin", {"via": "cli"})


def _carole(op: Operator) -> None:
    Accounts(op.rt.node.db).create_person(
        NewPerson(CAROLE, PASSWORD, "810001234573", "Petit", "Carole"), Actor("test")
    )


def _open(op: Operator, login: str, mailbox: str) -> int:
    """Log in as ``login`` asking for ``mailbox`` (RFC 4616 authzid); INBOX's message count."""
    client = imapclient.IMAPClient(
        "127.0.0.1", op.imaps_port, ssl=True, ssl_context=op.tls(), timeout=20
    )
    try:
        client.plain_login(login, PASSWORD, authorization_identity=mailbox)
        return int(client.select_folder("INBOX")[b"EXISTS"])
    finally:
        client.shutdown()


def _refused(op: Operator, login: str, mailbox: str) -> bool:
    try:
        _open(op, login, mailbox)
    except imapclient.exceptions.LoginError:
        return True
    return False


def _submit(op: Operator, login: str, sender: str, raw: bytes) -> tuple[int, bytes]:
    """MAIL FROM ``sender`` to Carole; the first refusal, or the answer to DATA."""
    with smtplib.SMTP("127.0.0.1", op.rt.settings.smtp.submission_port, timeout=20) as smtp:
        smtp.starttls(context=op.tls())
        smtp.login(login, PASSWORD)
        for reply in (smtp.mail(sender), smtp.rcpt(CAROLE)):
            if reply[0] != 250:
                return reply
        return smtp.data(raw)


async def test_org_mailbox_is_read_by_its_members_only(operator: Operator) -> None:
    delegations = Delegations(operator.rt.node.db)
    _carole(operator)
    delegations.create_org(ORG, "Secrétariat de cardiologie", ADMIN)
    delegations.grant(ORG, MARTIN, AccessRight.READ, ADMIN)
    delegations.grant(ORG, DURAND, AccessRight.SEND, ADMIN)
    await asyncio.to_thread(operator.deliver, message("Pour le service"), ORG)

    assert await asyncio.to_thread(_open, operator, MARTIN, ORG) == 1
    assert await asyncio.to_thread(_open, operator, DURAND, ORG) == 1
    assert await asyncio.to_thread(_refused, operator, CAROLE, ORG)
    assert await asyncio.to_thread(_open, operator, MARTIN, "") == 0  # still his own by default

    members = {m.login: m.right for m in delegations.members(ORG)}
    assert members == {MARTIN: "read", DURAND: "send"}
    log = [(u.event, u.actor) for u in delegations.access_log(ORG)]
    assert ("mailbox.delegated_access", MARTIN) in log
    assert ("mailbox.delegated_access", DURAND) in log
    assert all(actor != CAROLE for _, actor in log)


async def test_delegation_expires_and_revocation_ends_access(operator: Operator) -> None:
    delegations = Delegations(operator.rt.node.db)
    past = datetime.now(UTC) - timedelta(days=1)
    with pytest.raises(AccountError):
        delegations.delegate(MARTIN, DURAND, AccessRight.READ, ADMIN, until=past)

    delegations.delegate(
        MARTIN, DURAND, AccessRight.READ, ADMIN, until=datetime.now(UTC) + timedelta(days=7)
    )
    assert await asyncio.to_thread(_open, operator, DURAND, MARTIN) == 0
    with operator.rt.node.db.session() as session:  # a week later: the grant ends by itself
        session.execute(update(MailboxAccess).values(expires_at=past))
    assert await asyncio.to_thread(_refused, operator, DURAND, MARTIN)

    delegations.delegate(MARTIN, DURAND, AccessRight.READ, ADMIN)
    assert await asyncio.to_thread(_open, operator, DURAND, MARTIN) == 0
    delegations.revoke(MARTIN, DURAND, ADMIN)
    assert await asyncio.to_thread(_refused, operator, DURAND, MARTIN)

    events = [u.event for u in delegations.access_log(MARTIN)]
    assert events.count("mailbox.access_granted") == 2
    assert events.count("mailbox.access_revoked") == 1
    granted = [u for u in delegations.access_log(MARTIN) if u.event == "mailbox.access_granted"]
    assert all(u.context["on_behalf_of"] == MARTIN for u in granted)


async def test_send_as_needs_a_grant_and_says_who_sent(operator: Operator) -> None:
    delegations = Delegations(operator.rt.node.db)
    _carole(operator)
    mail = message("De la part du Dr Martin", From=MARTIN, To=CAROLE)
    signed = message("De la part du Dr Martin", From=MARTIN, To=CAROLE, Sender=DURAND)

    code, _ = await asyncio.to_thread(_submit, operator, DURAND, MARTIN, signed)
    assert code == 553  # no grant: not even MAIL FROM
    code, _ = await asyncio.to_thread(_submit, operator, DURAND, DURAND, signed)
    assert code == 553  # From: Martin's mailbox without a grant

    delegations.delegate(MARTIN, DURAND, AccessRight.SEND, ADMIN)
    code, reply = await asyncio.to_thread(_submit, operator, DURAND, MARTIN, mail)
    assert code == 553 and b"Sender" in reply  # on behalf of: Sender: is required
    code, _ = await asyncio.to_thread(_submit, operator, DURAND, MARTIN, signed)
    assert code == 250

    sends = [u for u in delegations.access_log(MARTIN) if u.event == "mailbox.delegated_send"]
    assert [u.actor for u in sends] == [DURAND]
    assert await asyncio.to_thread(_open, operator, CAROLE, "") == 1
