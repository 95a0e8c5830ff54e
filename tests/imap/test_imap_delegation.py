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
from mssante.audit.events import Actor
from mssante.ops.accounts import AccountError, Accounts, NewPerson
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


def _delegate_session(op: Operator, login: str, mailbox: str) -> imapclient.IMAPClient:
    client = imapclient.IMAPClient(
        "127.0.0.1", op.imaps_port, ssl=True, ssl_context=op.tls(), timeout=20
    )
    client.plain_login(login, PASSWORD, authorization_identity=mailbox)
    return client


def _read_only_delegate_tries_everything(op: Operator) -> dict[str, object]:
    """Durand, with a ``read`` delegation of Martin's mailbox (issue 11, point 2): what
    each of his attempts answers, and what Martin's INBOX holds afterwards."""
    owner = op.client(MARTIN)
    owner.select_folder("INBOX")
    owner.add_flags([2], [b"\\Deleted"])  # Martin's own choice, to expunge later himself
    seen: dict[str, object] = {}
    delegate = _delegate_session(op, DURAND, MARTIN)
    try:
        selected = delegate.select_folder("INBOX")
        seen["permanent"] = selected[b"PERMANENTFLAGS"]
        seen["read_write"] = b"READ-WRITE" in selected
        for name, attempt in (
            ("store_deleted", lambda: delegate.add_flags([1], [b"\\Deleted"])),
            ("expunge", delegate.expunge),
            ("store_flagged", lambda: delegate.add_flags([1], [b"\\Flagged"])),
            ("append", lambda: delegate.append("INBOX", message("Ajout"))),
            ("copy", lambda: delegate.copy([1], "Archive")),
            ("move", lambda: delegate.move([1], "Archive")),
        ):
            try:
                attempt()
                seen[name] = "OK"
            except imapclient.exceptions.IMAPClientError as exc:
                seen[name] = str(exc)
        seen["body"] = delegate.fetch([1], ["BODY[]"])[1][b"BODY[]"]
        seen["delegate_flags"] = delegate.get_flags([1])[1]
        # RFC 4314 §4: CLOSE without the delete right closes and expunges nothing.
        seen["close"] = delegate.close_folder()
    finally:
        delegate.shutdown()
    fetched = owner.fetch([1, 2], ["FLAGS", "BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
    seen["owner"] = sorted(
        (bytes(v[b"BODY[HEADER.FIELDS (SUBJECT)]"]).strip(), sorted(v[b"FLAGS"]))
        for v in fetched.values()
    )
    owner.shutdown()
    return seen


async def test_a_read_only_delegate_cannot_delete_flag_or_file(operator: Operator) -> None:
    """The defect of issue 11, point 2: with only ``read``, a delegate set \\Deleted and ran
    EXPUNGE as the owner, and the owner's mail was gone. Now every change beyond list, read
    and mark seen answers NO [NOPERM] (RFC 4314 §4, RFC 5530 §3), and the mail stays."""
    for subject in ("Premier", "Second"):
        await asyncio.to_thread(operator.deliver, message(subject), MARTIN)
    Delegations(operator.rt.node.db).delegate(MARTIN, DURAND, AccessRight.READ, ADMIN)

    seen = await asyncio.to_thread(_read_only_delegate_tries_everything, operator)

    # RFC 4314 §4: \Seen is shared here, so `s` keeps the folder READ-WRITE, and
    # PERMANENTFLAGS tells the client it may change nothing but \Seen.
    assert seen["permanent"] == (b"\\Seen",)
    assert seen["read_write"]
    for refused in ("store_deleted", "expunge", "store_flagged", "append", "copy", "move"):
        assert "NOPERM" in str(seen[refused]), (refused, seen[refused])
    assert bytes(seen["body"]).startswith(b"From: ")  # type: ignore[arg-type]
    assert seen["delegate_flags"] == (b"\\Seen",)  # BODY[] set \Seen: `s` allows it
    assert b"completed" in seen["close"]  # type: ignore[operator]
    assert seen["owner"] == [
        (b"Subject: Premier", [b"\\Seen"]),
        (b"Subject: Second", [b"\\Deleted"]),
    ]
    refusals = [
        (actor, ctx["operation"])
        for event, actor, ctx in operator.audit_events()
        if event == "mailbox.refused_operation"
    ]
    assert (DURAND, "delete") in refusals and (DURAND, "append") in refusals
    assert (DURAND, "flag") in refusals
    assert all(actor == DURAND for actor, _ in refusals)


def _filing_delegate_deletes(op: Operator) -> tuple[object, int]:
    delegate = _delegate_session(op, DURAND, MARTIN)
    try:
        permanent = delegate.select_folder("INBOX")[b"PERMANENTFLAGS"]
        delegate.move([1], "Archive")
        delegate.add_flags([2], [b"\\Deleted", b"\\Flagged"])
        delegate.expunge()
        return permanent, len(delegate.search("ALL"))
    finally:
        delegate.shutdown()


async def test_a_filing_delegate_files_and_deletes(operator: Operator) -> None:
    """The ``file`` level: flag, delete and expunge, move between folders (no folder
    management: that stays the owner's)."""
    for subject in ("Premier", "Second"):
        await asyncio.to_thread(operator.deliver, message(subject), MARTIN)
    Delegations(operator.rt.node.db).delegate(MARTIN, DURAND, AccessRight.FILE, ADMIN)
    permanent, left = await asyncio.to_thread(_filing_delegate_deletes, operator)
    assert set(permanent) >= {b"\\Seen", b"\\Deleted", b"\\Flagged", b"\\*"}  # type: ignore[call-overload]
    assert left == 0
    owner = await asyncio.to_thread(operator.client, MARTIN)
    try:
        assert await asyncio.to_thread(owner.select_folder, "Archive") is not None
        assert len(await asyncio.to_thread(owner.search, "ALL")) == 1
    finally:
        await asyncio.to_thread(owner.shutdown)
