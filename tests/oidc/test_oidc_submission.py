"""SMTP AUTH XOAUTH2 and OAUTHBEARER on submission (587 STARTTLS, 465 implicit TLS) with access
tokens of the local provider: a real smtplib client, real listeners, every attempt audited."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import smtplib
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from oidc_helpers import DUBOIS, MARTIN, World, password_form

from mssante.auth.revocation import RevocationWatcher
from mssante.auth.sasl import build_oauthbearer, build_xoauth2
from mssante.config import SmtpSettings
from mssante.operator.runtime import build_runtime, submission_parts
from mssante.smtp.session import SessionLimits
from mssante.smtp.submission import make_submission_protocol
from mssante.tls import submission_context
from support import free_port_block

_LIMITS = SessionLimits.of(SmtpSettings())


@dataclass(frozen=True)
class Ports:
    starttls: int
    implicit: int


@contextlib.asynccontextmanager
async def running_submission(
    world: World, *, bearer: bool = True, recheck: float | None = None
) -> AsyncIterator[Ports]:
    """The submission listeners of an operator whose accounts the provider knows; with
    ``recheck``, its revocation watcher asks the issuer that often about open sessions."""
    settings = world.settings
    if recheck is not None:
        oidc = settings.oidc.model_copy(update={"recheck_seconds": recheck})
        settings = settings.model_copy(update={"oidc": oidc})
    rt = build_runtime(settings)
    ctx = dataclasses.replace(submission_parts(rt), bearer=rt.bearer if bearer else None)
    tls = submission_context(world.settings)
    base = free_port_block(2)
    loop = asyncio.get_running_loop()
    servers = [
        await loop.create_server(
            make_submission_protocol(ctx, tls, implicit_tls=False, timeout=30, limits=_LIMITS),
            "127.0.0.1",
            base,
        ),
        await loop.create_server(
            make_submission_protocol(ctx, tls, implicit_tls=True, timeout=30, limits=_LIMITS),
            "127.0.0.1",
            base + 1,
            ssl=tls,
        ),
    ]
    watcher = RevocationWatcher.from_settings(
        settings, rt.node.db, rt.auth.sessions, bearer=rt.bearer
    )
    watching = asyncio.create_task(watcher.run(asyncio.Event()))
    try:
        yield Ports(base, base + 1)
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
        for server in servers:
            server.close()
            await server.wait_closed()
        await rt.committer.close()
        rt.node.close()


def _client_tls(world: World) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(world.trust.pki.paths().root))
    ctx.check_hostname = False  # we connect to 127.0.0.1
    return ctx


def _connect(world: World, ports: Ports, implicit: bool) -> smtplib.SMTP:
    if implicit:
        return smtplib.SMTP_SSL("127.0.0.1", ports.implicit, context=_client_tls(world), timeout=20)
    smtp = smtplib.SMTP("127.0.0.1", ports.starttls, timeout=20)
    smtp.starttls(context=_client_tls(world))
    return smtp


async def _session(
    world: World, ports: Ports, steps: Callable[[smtplib.SMTP], Any], *, implicit: bool = False
) -> Any:
    def run() -> Any:
        smtp = _connect(world, ports, implicit)
        try:
            smtp.ehlo("client.test")
            return steps(smtp)
        finally:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                smtp.quit()

    return await asyncio.to_thread(run)


def _message(sender: str) -> bytes:
    return (
        f"From: {sender}\r\nTo: {sender}\r\nSubject: Compte rendu\r\n"
        "Message-ID: <oidc-1@test>\r\nDate: Wed, 25 Nov 2026 10:00:00 +0100\r\n\r\nBonjour.\r\n"
    ).encode()


@pytest.mark.parametrize("implicit", [False, True])
async def test_xoauth2_login_then_a_message(world: World, implicit: bool) -> None:
    tokens = await world.client().tokens(password_form())
    token = tokens["access_token"]

    def steps(smtp: smtplib.SMTP) -> tuple[str, tuple[int, bytes]]:
        mechanisms = smtp.esmtp_features["auth"]
        reply = smtp.auth("XOAUTH2", lambda _=None: build_xoauth2(MARTIN, token).decode())
        smtp.sendmail(MARTIN, [MARTIN], _message(MARTIN))
        return mechanisms, reply

    async with running_submission(world) as ports:
        mechanisms, reply = await _session(world, ports, steps, implicit=implicit)
    assert "XOAUTH2" in mechanisms and "OAUTHBEARER" in mechanisms
    assert reply[0] == 235
    events = world.events()
    login = [
        e for e in events if e.event == "auth.login_succeeded" and e.context.get("method") == "oidc"
    ]
    assert login and login[-1].context["protocol"] == "submission"
    accepted = [e for e in events if e.event == "submission.message_accepted"]
    assert accepted and accepted[-1].actor == MARTIN
    assert token not in json.dumps([e.context for e in events])


async def test_oauthbearer_login(world: World) -> None:
    tokens = await world.client(world.trust.martin_card).tokens({"method": "certificate"})

    def steps(smtp: smtplib.SMTP) -> tuple[int, bytes]:
        message = build_oauthbearer(tokens["access_token"], MARTIN, "127.0.0.1", 587)
        return smtp.auth("OAUTHBEARER", lambda _=None: message.decode())

    async with running_submission(world) as ports:
        code, _ = await _session(world, ports, steps)
    assert code == 235


async def test_a_token_for_another_professional_is_refused_with_the_rfc7628_challenge(
    world: World,
) -> None:
    tokens = await world.client().tokens(password_form(login=DUBOIS))
    message = build_oauthbearer(tokens["access_token"], MARTIN)

    def steps(smtp: smtplib.SMTP) -> tuple[tuple[int, bytes], tuple[int, bytes]]:
        challenge = smtp.docmd("AUTH", "OAUTHBEARER " + base64.b64encode(message).decode())
        final = smtp.docmd(base64.b64encode(b"\x01").decode())  # RFC 7628 §3.2.3
        return challenge, final

    async with running_submission(world) as ports:
        challenge, final = await _session(world, ports, steps)
    assert challenge[0] == 334
    assert json.loads(base64.b64decode(challenge[1])) == {
        "status": "invalid_token",
        "schemes": "bearer",
        "scope": "openid scope_all",
    }
    assert final[0] == 535
    failed = [e for e in world.events() if e.event == "auth.login_failed"]
    assert failed[-1].context["reason"] == "login_not_owned"
    assert failed[-1].context["method"] == "oidc"


async def test_xoauth2_with_a_revoked_token_is_refused(world: World) -> None:
    client = world.client()
    tokens = await client.tokens(password_form())
    await client.revoke(tokens["refresh_token"], "refresh_token")

    def steps(smtp: smtplib.SMTP) -> None:
        smtp.auth("XOAUTH2", lambda _=None: build_xoauth2(MARTIN, tokens["access_token"]).decode())

    async with running_submission(world) as ports:
        with pytest.raises(smtplib.SMTPAuthenticationError) as info:
            await _session(world, ports, steps)
    assert info.value.smtp_code == 535
    assert [e for e in world.events() if e.event == "auth.login_failed"][-1].context[
        "reason"
    ] == "inactive"


async def test_a_token_revoked_at_the_provider_ends_the_open_session(world: World) -> None:
    """Issue 11, one revocation path: a submission session opened with a token ends (421, the
    connection closed) within 5 s once the token is revoked at the provider."""
    client = world.client()
    tokens = await client.tokens(password_form())
    token = tokens["access_token"]

    async with running_submission(world, recheck=0.3) as ports:
        smtp = await asyncio.to_thread(_connect, world, ports, False)
        try:
            await asyncio.to_thread(smtp.ehlo, "client.test")
            reply = await asyncio.to_thread(
                smtp.auth, "XOAUTH2", lambda _=None: build_xoauth2(MARTIN, token).decode()
            )
            assert reply[0] == 235
            assert (await asyncio.to_thread(smtp.noop))[0] == 250  # the token holds: open
            revoked = await client.revoke(tokens["refresh_token"], "refresh_token")
            assert revoked.status_code == 200
            ended = await _ended_within(smtp, 5.0)
        finally:
            with contextlib.suppress(Exception):
                smtp.close()
    assert ended, "the session was still answering 5 s after the revocation"


async def _ended_within(smtp: smtplib.SMTP, bound: float) -> bool:
    """NOOP until the server says 421 or closes the connection, for at most ``bound`` s."""
    deadline = asyncio.get_running_loop().time() + bound
    while asyncio.get_running_loop().time() < deadline:
        try:
            code, _ = await asyncio.to_thread(smtp.noop)
        except (smtplib.SMTPServerDisconnected, OSError):
            return True
        if code == 421:
            return True
        await asyncio.sleep(0.1)
    return False


async def test_malformed_xoauth2_is_a_syntax_error(world: World) -> None:
    def steps(smtp: smtplib.SMTP) -> tuple[int, bytes]:
        return smtp.docmd("AUTH", "XOAUTH2 " + base64.b64encode(b"user=x\x01").decode())

    async with running_submission(world) as ports:
        code, _ = await _session(world, ports, steps)
    assert code == 501
    assert any(e.event == "smtp.refused_protocol" for e in world.events())


async def test_without_a_validator_the_mechanisms_are_not_offered(world: World) -> None:
    def steps(smtp: smtplib.SMTP) -> tuple[str, tuple[int, bytes]]:
        return smtp.esmtp_features["auth"], smtp.docmd("AUTH", "XOAUTH2 =")

    async with running_submission(world, bearer=False) as ports:
        mechanisms, reply = await _session(world, ports, steps)
    assert "XOAUTH2" not in mechanisms and "PLAIN" in mechanisms
    assert reply[0] == 504
