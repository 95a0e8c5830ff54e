"""Submission on 587 (STARTTLS) and 465 (implicit TLS): login, sender rules, trust-space
recipients, local delivery and queueing, each refusal audited and nothing stored."""

from __future__ import annotations

import asyncio
import base64
import smtplib
import ssl

import pytest
from operator_fixtures import MARTIN, PASSWORD, Space
from smtp_helpers import Client, message

from mssante.audit.events import Actor
from mssante.audit.log import iter_entries
from mssante.operator.runtime import OperatorRuntime
from mssante.ops.accounts import Accounts, NewPerson
from mssante.queue.store import recipients_of

DUBOIS = "secretariat.dubois@b.mssante.test"


def _ctx(space: Space) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cafile=str(space.pki.paths().root))
    return ctx


_WORKERS = ("pki.", "whitelist.")  # the trust workers audit their refreshes at any moment


def _events(rt: OperatorRuntime) -> list[str]:
    """The audit log's events, but the trust workers' (a CRL refresh may land between)."""
    return [e.event for e in iter_entries(rt.node.db) if not e.event.startswith(_WORKERS)]


async def _submit(
    rt: OperatorRuntime,
    space: Space,
    steps,
    *,
    implicit: bool = False,
    login: tuple[str, str] | None = (MARTIN, PASSWORD),
):  # type: ignore[no-untyped-def]
    port = rt.settings.smtp.submissions_port if implicit else rt.settings.smtp.submission_port

    def run():  # type: ignore[no-untyped-def]
        client = Client(port, ssl_context=_ctx(space), implicit=implicit)
        try:
            if login:
                client.smtp.login(*login)
            return steps(client)
        finally:
            client.close()

    return await asyncio.to_thread(run)


def _send_to(to: str, sender: str = MARTIN, header_from: str = MARTIN):  # type: ignore[no-untyped-def]
    def steps(c: Client) -> list[tuple[int, str]]:
        out = [c.cmd(f"MAIL FROM:<{sender}>")]
        if out[-1][0] != 250:
            return out
        out.append(c.cmd(f"RCPT TO:<{to}>"))
        if out[-1][0] != 250:
            return out
        out.append(c.data(message(header_from, to, "Courrier")))
        return out

    return steps


@pytest.fixture
def dubois(operator_b: OperatorRuntime) -> str:
    Accounts(operator_b.node.db).create_person(
        NewPerson(DUBOIS, "autre-mot-de-passe-7", "810001234573", "Dubois", "Anne"), Actor("test")
    )
    return DUBOIS


@pytest.mark.parametrize("implicit", [False, True])
async def test_local_delivery_and_sent_copy(
    operator_b: OperatorRuntime, space: Space, dubois: str, implicit: bool
) -> None:
    replies = await _submit(operator_b, space, _send_to(dubois), implicit=implicit)
    assert [c for c, _ in replies] == [250, 250, 250], replies
    assert [m.subject for m in operator_b.store.list_messages(dubois)] == ["Courrier"]
    sent = operator_b.store.list_messages(MARTIN, folder="Sent")
    assert [(m.subject, m.flags) for m in sent] == [("Courrier", ("\\Seen",))]
    raw = operator_b.store.read(operator_b.store.list_messages(dubois)[0].blob_sha256)
    assert b"with ESMTPSA" in raw.split(b"\r\n\r\n")[0]
    events = _events(operator_b)
    assert "auth.login_succeeded" in events and events[-1] == "submission.message_accepted"


async def test_remote_recipient_in_trust_space_is_queued(
    operator_b: OperatorRuntime, space: Space
) -> None:
    replies = await _submit(operator_b, space, _send_to("dr.durand@a.mssante.test"))
    assert [c for c, _ in replies] == [250, 250, 250], replies
    with operator_b.node.db.session() as s:
        from sqlalchemy import select

        from mssante.store.models import QueueMessage

        queued = s.execute(select(QueueMessage)).scalars().all()
        assert len(queued) == 1
        pk = queued[0].id
    assert [r.address for r in recipients_of(operator_b.node.db, pk)] == [
        "dr.durand@a.mssante.test"
    ]


async def test_recipient_outside_the_trust_space_is_refused_in_french(
    operator_b: OperatorRuntime, space: Space
) -> None:
    replies = await _submit(operator_b, space, _send_to("jean.dupont@gmail.com"))
    code, text = replies[1]
    assert code == 550
    assert "jean.dupont@gmail.com n'appartient pas a l'espace de confiance MSSante" in text
    assert _events(operator_b)[-1] == "submission.refused_recipient"


async def test_smtputf8_client_gets_the_accents(operator_b: OperatorRuntime, space: Space) -> None:
    def steps(c: Client) -> list[tuple[int, str]]:
        return [c.cmd(f"MAIL FROM:<{MARTIN}> SMTPUTF8"), c.cmd("RCPT TO:<jean@gmail.com>")]

    replies = await _submit(operator_b, space, steps)
    assert "n'appartient pas à l'espace de confiance MSSanté" in replies[1][1]


async def test_sending_as_someone_else_is_refused(
    operator_b: OperatorRuntime, space: Space, dubois: str
) -> None:
    replies = await _submit(operator_b, space, _send_to(MARTIN, sender=dubois))
    assert replies[0] == (
        553,
        f"5.7.1 vous ne pouvez pas envoyer avec l'adresse {dubois} / you may not send as {dubois}",
    )
    assert _events(operator_b)[-1] == "submission.refused_sender"


async def test_from_header_must_match_too(
    operator_b: OperatorRuntime, space: Space, dubois: str
) -> None:
    replies = await _submit(operator_b, space, _send_to(dubois, header_from=dubois))
    assert replies[-1][0] == 553 and "From: header" in replies[-1][1]
    assert operator_b.store.list_messages(dubois) == []


async def test_wrong_password_is_refused_audited_and_slowed(
    operator_b: OperatorRuntime, space: Space
) -> None:
    def attempt(c: Client) -> None:
        return None

    for _ in range(2):
        with pytest.raises(smtplib.SMTPAuthenticationError):
            await _submit(operator_b, space, attempt, login=(MARTIN, "mauvais-mot-de-passe"))
    # smtplib tries PLAIN, then LOGIN: every AUTH attempt is one audit entry
    assert _events(operator_b).count("auth.login_failed") == 4
    assert operator_b.settings is not None
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(smtplib.SMTPAuthenticationError):
        await _submit(operator_b, space, attempt, login=("inconnu@b.mssante.test", "x" * 12))
    # smtplib retries with LOGIN after PLAIN: that second attempt waits 0.5 s for this login's
    # first failure (the address, 4 failures, is within its allowance: docs/security.md)
    assert loop.time() - started >= 0.45


async def test_mail_without_auth_is_refused(operator_b: OperatorRuntime, space: Space) -> None:
    replies = await _submit(operator_b, space, _send_to(MARTIN), login=None)
    assert replies[0][0] == 530


async def test_auth_is_not_offered_before_tls(operator_b: OperatorRuntime) -> None:
    def run() -> tuple[int, str]:
        smtp = smtplib.SMTP("127.0.0.1", operator_b.settings.smtp.submission_port, timeout=10)
        try:
            smtp.ehlo("client")
            assert not smtp.has_extn("auth")
            token = base64.b64encode(f"\0{MARTIN}\0{PASSWORD}".encode()).decode()
            code, text = smtp.docmd("AUTH", f"PLAIN {token}")
            return code, text.decode()
        finally:
            smtp.close()

    code, _ = await asyncio.to_thread(run)
    assert code == 530


async def test_an_app_password_works_for_submission_and_can_be_revoked(
    operator_b: OperatorRuntime, space: Space, dubois: str
) -> None:
    new = operator_b.auth.add_app_password(MARTIN, "Thunderbird cabinet", Actor("test"))
    replies = await _submit(operator_b, space, _send_to(dubois), login=(MARTIN, new.password))
    assert [c for c, _ in replies] == [250, 250, 250]
    operator_b.auth.revoke_app_password(MARTIN, "Thunderbird cabinet", Actor("test"))
    with pytest.raises(smtplib.SMTPAuthenticationError):
        await _submit(operator_b, space, _send_to(dubois), login=(MARTIN, new.password))
