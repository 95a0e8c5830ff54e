"""AUTH EXTERNAL on submission (587 STARTTLS, 465 implicit TLS): the TLS client certificate
logs in. A CPS-like card opens the professional's account by idNat, an organisation certificate
the APP account its DN is bound to; real sockets, real TLS, a running operator."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import datetime as dt
import smtplib
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from operator_fixtures import MARTIN, MARTIN_ID_NAT, Space
from smtp_helpers import Cert, Client, client_context, message

from mssante.audit.events import Actor
from mssante.audit.log import iter_entries
from mssante.auth.certificates import CertificateBindings
from mssante.config import SmtpSettings
from mssante.operator.runtime import OperatorRuntime, submission_parts
from mssante.ops.accounts import Accounts, NewApplication
from mssante.pki.ca import IssuedPaths
from mssante.smtp.session import SessionLimits
from mssante.smtp.submission import make_submission_protocol
from mssante.tls import submission_context
from support import free_port_block

APP = "automate@b.mssante.test"
APP_STRUCT = "318310021300028"

_LIMITS = SessionLimits.of(SmtpSettings())


def _card(space: Space, **dates: dt.datetime) -> Cert:
    issued = space.pki.issue_person(MARTIN_ID_NAT, "Martin", "Hélène", **dates)  # type: ignore[arg-type]
    return _pair(issued)


def _pair(issued: IssuedPaths) -> Cert:
    return Cert(issued.fullchain, issued.key)


def _events(rt: OperatorRuntime, name: str) -> list[dict[str, Any]]:
    return [{"actor": e.actor, **e.context} for e in iter_entries(rt.node.db) if e.event == name]


async def _session(
    port: int,
    space: Space,
    cert: Cert | None,
    steps: Callable[[Client], Any],
    *,
    implicit: bool = False,
) -> Any:
    def run() -> Any:
        client = Client(
            port, ssl_context=client_context(cert, ca=space.pki.paths().root), implicit=implicit
        )
        try:
            return steps(client)
        finally:
            client.close()

    return await asyncio.to_thread(run)


def _port(rt: OperatorRuntime, implicit: bool) -> int:
    return rt.settings.smtp.submissions_port if implicit else rt.settings.smtp.submission_port


def _mechanisms(client: Client) -> list[str]:
    return client.smtp.esmtp_features.get("auth", "").split()


def _send(sender: str, to: str) -> Callable[[Client], list[tuple[int, str]]]:
    def steps(c: Client) -> list[tuple[int, str]]:
        replies = [c.cmd("AUTH EXTERNAL =")]
        if replies[-1][0] != 235:
            return replies
        replies += [c.cmd(f"MAIL FROM:<{sender}>"), c.cmd(f"RCPT TO:<{to}>")]
        replies.append(c.data(message(sender, to, "Resultats")))
        return replies

    return steps


@pytest.mark.parametrize("implicit", [False, True])
async def test_a_card_logs_in_and_sends(
    operator_b: OperatorRuntime, space: Space, implicit: bool
) -> None:
    card = _card(space)
    port = _port(operator_b, implicit)

    def steps(c: Client) -> tuple[list[str], list[tuple[int, str]]]:
        return _mechanisms(c), _send(MARTIN, MARTIN)(c)

    mechanisms, replies = await _session(port, space, card, steps, implicit=implicit)
    assert "EXTERNAL" in mechanisms and "PLAIN" in mechanisms
    assert [code for code, _ in replies] == [235, 250, 250, 250], replies
    assert [m.subject for m in operator_b.store.list_messages(MARTIN)] == ["Resultats"]
    [login] = _events(operator_b, "auth.login_succeeded")
    assert login["actor"] == MARTIN and login["method"] == "certificate"
    assert login["protocol"] == "submission" and login["peer"] == "127.0.0.1"
    assert login["id_nat"] == MARTIN_ID_NAT and login["kind"] == "person"
    assert login["subject"].startswith(f"CN={MARTIN_ID_NAT},")
    accepted = _events(operator_b, "submission.message_accepted")
    assert accepted and accepted[-1]["actor"] == MARTIN


async def test_the_authorization_identity_names_the_account(
    operator_b: OperatorRuntime, space: Space
) -> None:
    card = _card(space)

    def steps(c: Client) -> tuple[tuple[int, str], tuple[int, str]]:
        other = base64.b64encode(b"someone.else@b.mssante.test").decode()
        refused = c.cmd(f"AUTH EXTERNAL {other}")
        mine = c.cmd("AUTH EXTERNAL " + base64.b64encode(MARTIN.encode()).decode())
        return refused, mine

    refused, mine = await _session(operator_b.settings.smtp.submission_port, space, card, steps)
    assert refused[0] == 535 and "5.7.8" in refused[1]
    assert mine[0] == 235
    assert _events(operator_b, "auth.login_failed")[-1]["reason"] == "login_not_owned"


async def test_external_in_two_steps(operator_b: OperatorRuntime, space: Space) -> None:
    """RFC 4954: without an initial response the server sends an empty challenge."""
    card = _card(space)

    def steps(c: Client) -> tuple[tuple[int, str], tuple[int, str]]:
        challenge = c.cmd("AUTH EXTERNAL")
        return challenge, c.cmd("")  # an empty response: no authorization identity

    challenge, done = await _session(operator_b.settings.smtp.submission_port, space, card, steps)
    assert challenge[0] == 334
    assert done[0] == 235


async def test_without_a_certificate_external_is_refused(
    operator_b: OperatorRuntime, space: Space
) -> None:
    def steps(c: Client) -> tuple[list[str], tuple[int, str]]:
        return _mechanisms(c), c.cmd("AUTH EXTERNAL =")

    mechanisms, reply = await _session(operator_b.settings.smtp.submission_port, space, None, steps)
    assert "EXTERNAL" in mechanisms  # offered over TLS; the certificate decides
    assert reply[0] == 535 and "5.7.8" in reply[1]
    [failed] = _events(operator_b, "auth.login_failed")
    assert failed["reason"] == "no_certificate" and failed["method"] == "certificate"
    # Not audited twice: the refusal's own audit entry stands for it.
    assert not [
        e for e in _events(operator_b, "smtp.refused_protocol") if "535" in str(e.get("reply"))
    ]


async def test_a_revoked_card_is_refused(operator_b: OperatorRuntime, space: Space) -> None:
    card = _card(space)
    space.pki.revoke(card.cert, "keyCompromise")
    operator_b.sync.crls.refresh()

    def steps(c: Client) -> tuple[int, str]:
        return c.cmd("AUTH EXTERNAL =")

    reply = await _session(
        operator_b.settings.smtp.submissions_port, space, card, steps, implicit=True
    )
    assert reply[0] == 535
    failed = _events(operator_b, "auth.login_failed")[-1]
    assert failed["reason"] == "revoked" and failed["protocol"] == "submission"
    assert not _events(operator_b, "auth.login_succeeded")


async def test_an_expired_card_connects_and_is_refused(
    operator_b: OperatorRuntime, space: Space
) -> None:
    now = dt.datetime.now(dt.UTC)
    card = _card(
        space, not_before=now - dt.timedelta(days=400), not_after=now - dt.timedelta(days=1)
    )

    def steps(c: Client) -> tuple[int, str]:
        return c.cmd("AUTH EXTERNAL =")

    reply = await _session(operator_b.settings.smtp.submission_port, space, card, steps)
    assert reply[0] == 535
    assert _events(operator_b, "auth.login_failed")[-1]["reason"] == "expired"


async def test_a_card_of_another_pki_fails_the_handshake(
    operator_b: OperatorRuntime, space: Space
) -> None:
    other = Cert(space.bad["other_ca"].cert, space.bad["other_ca"].key)

    def steps(c: Client) -> tuple[int, str]:
        return c.cmd("AUTH EXTERNAL =")

    with pytest.raises((ssl.SSLError, smtplib.SMTPServerDisconnected, ConnectionError)):
        await _session(
            operator_b.settings.smtp.submissions_port, space, other, steps, implicit=True
        )
    assert not _events(operator_b, "auth.login_succeeded")


async def test_external_is_not_offered_before_tls(
    operator_b: OperatorRuntime, space: Space
) -> None:
    def run() -> tuple[dict[str, str], tuple[int, bytes], list[str]]:
        smtp = smtplib.SMTP("127.0.0.1", operator_b.settings.smtp.submission_port, timeout=20)
        try:
            smtp.ehlo("client.test")
            before = dict(smtp.esmtp_features)
            early = smtp.docmd("AUTH", "EXTERNAL =")
            smtp.starttls(context=client_context(_card(space), ca=space.pki.paths().root))
            smtp.ehlo("client.test")
            return before, early, smtp.esmtp_features.get("auth", "").split()
        finally:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                smtp.quit()

    before, early, after = await asyncio.to_thread(run)
    assert "auth" not in before and "starttls" in before
    assert early[0] == 530  # STARTTLS first (RFC 3207 §4): never 235 in clear
    assert "EXTERNAL" in after
    assert not _events(operator_b, "auth.login_succeeded")


async def test_an_app_mailbox_logs_in_with_its_organisation_certificate(
    operator_b: OperatorRuntime, space: Space
) -> None:
    issued = space.pki.issue_application("automate.b.mssante.test", APP_STRUCT, "OPERATEUR B", "31")
    Accounts(operator_b.node.db).create_application(
        NewApplication(APP, APP_STRUCT, "automate de biologie"), Actor("test")
    )
    bindings = CertificateBindings(operator_b.node.db)
    port = operator_b.settings.smtp.submissions_port
    refused = await _session(port, space, _pair(issued), _send(APP, MARTIN), implicit=True)
    assert refused[0][0] == 535  # not bound yet
    assert _events(operator_b, "auth.login_failed")[-1]["reason"] == "not_bound"
    bindings.bind(APP, issued.subject, Actor("test"))
    replies = await _session(port, space, _pair(issued), _send(APP, MARTIN), implicit=True)
    assert [code for code, _ in replies] == [235, 250, 250, 250], replies
    login = _events(operator_b, "auth.login_succeeded")[-1]
    assert login["actor"] == APP and login["kind"] == "organisation"
    assert login["structure_id"] == APP_STRUCT
    # A professional's card does not open the APP mailbox.
    card_reply = await _session(
        port,
        space,
        _card(space),
        lambda c: c.cmd("AUTH EXTERNAL " + base64.b64encode(APP.encode()).decode()),
        implicit=True,
    )
    assert card_reply[0] == 535
    assert _events(operator_b, "auth.login_failed")[-1]["reason"] == "login_not_owned"


@contextlib.asynccontextmanager
async def _listener(
    rt: OperatorRuntime, *, validator: bool, tls: bool = True
) -> AsyncIterator[int]:
    """A 465-style listener (AUTH allowed at once) of our own: with or without the certificate
    validator, and, to check that EXTERNAL needs TLS whatever the listener, even without TLS."""
    ctx = dataclasses.replace(
        submission_parts(rt), certificates=rt.certificates if validator else None
    )
    context = submission_context(rt.settings)
    port = free_port_block(1)
    server = await asyncio.get_running_loop().create_server(
        make_submission_protocol(ctx, context, implicit_tls=True, timeout=30, limits=_LIMITS),
        "127.0.0.1",
        port,
        ssl=context if tls else None,
    )
    try:
        yield port
    finally:
        server.close()
        await server.wait_closed()


async def test_without_a_validator_external_is_not_offered(
    operator_b: OperatorRuntime, space: Space
) -> None:
    def steps(c: Client) -> tuple[list[str], tuple[int, str]]:
        return _mechanisms(c), c.cmd("AUTH EXTERNAL =")

    async with _listener(operator_b, validator=False) as port:
        mechanisms, reply = await _session(port, space, _card(space), steps, implicit=True)
    assert "EXTERNAL" not in mechanisms and "PLAIN" in mechanisms
    assert reply[0] == 504


async def test_external_needs_tls_even_where_auth_does_not(
    operator_b: OperatorRuntime, space: Space
) -> None:
    """On a listener that (wrongly) allows AUTH in clear, EXTERNAL is still neither offered nor
    accepted: without TLS there is no client certificate to speak of."""

    def run(port: int) -> tuple[list[str], tuple[int, bytes]]:
        smtp = smtplib.SMTP("127.0.0.1", port, timeout=20)
        try:
            smtp.ehlo("client.test")
            return smtp.esmtp_features.get("auth", "").split(), smtp.docmd("AUTH", "EXTERNAL =")
        finally:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                smtp.quit()

    async with _listener(operator_b, validator=True, tls=False) as port:
        mechanisms, reply = await asyncio.to_thread(run, port)
    assert "PLAIN" in mechanisms and "EXTERNAL" not in mechanisms
    assert reply[0] == 504
    assert not _events(operator_b, "auth.login_succeeded")
