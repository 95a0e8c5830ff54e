"""IMAP AUTHENTICATE XOAUTH2 and OAUTHBEARER with access tokens of the local provider: real
listeners over TLS, a line-level client, every attempt audited, and a session in IDLE ended
when its token is revoked (RFC 7628, RFC 5530 EXPIRED)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import ssl
import time
from collections.abc import AsyncIterator

import pytest
from oidc_helpers import DUBOIS, MARTIN, World, password_form

from mssante.auth.revocation import RevocationWatcher
from mssante.auth.sasl import build_oauthbearer, build_xoauth2
from mssante.imap.service import start_imap
from mssante.operator.runtime import OperatorRuntime, build_runtime, imap_parts
from support import free_port_block


@contextlib.asynccontextmanager
async def running_imap(world: World, *, recheck: float = 60.0) -> AsyncIterator[OperatorRuntime]:
    """The IMAP listeners (143 and 993) of an operator that accepts the provider's tokens."""
    base = free_port_block(2)
    settings = world.settings.model_copy(
        update={
            "imap": world.settings.imap.model_copy(update={"port": base, "tls_port": base + 1}),
            "oidc": world.settings.oidc.model_copy(update={"recheck_seconds": recheck}),
        }
    )
    rt = build_runtime(settings)
    task = await start_imap(imap_parts(rt))
    if task is not None:
        rt.tasks.append(task)
    # The process's one revocation watcher asks the issuer about the sessions' tokens.
    watcher = RevocationWatcher.from_settings(
        settings, rt.node.db, rt.auth.sessions, bearer=rt.bearer
    )
    rt.tasks.append(asyncio.create_task(watcher.run(asyncio.Event())))
    try:
        yield rt
    finally:
        for task in rt.tasks:
            task.cancel()
        await asyncio.gather(*rt.tasks, return_exceptions=True)
        await rt.committer.close()
        rt.node.close()


class Client:
    """A line-level IMAP client over implicit TLS (asyncio streams)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, world: World, port: int) -> Client:
        tls = ssl.create_default_context(cafile=str(world.trust.pki.paths().root))
        tls.check_hostname = False
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
        client = cls(reader, writer)
        assert (await client.line()).startswith(b"* OK")
        return client

    async def line(self, timeout: float = 10) -> bytes:
        return await asyncio.wait_for(self.reader.readline(), timeout)

    async def send(self, data: bytes) -> None:
        self.writer.write(data + b"\r\n")
        await self.writer.drain()

    async def until(self, tag: bytes, timeout: float = 10) -> list[bytes]:
        lines = []
        while True:
            line = await self.line(timeout)
            lines.append(line)
            if line.startswith(tag + b" ") or not line:
                return lines

    async def authenticate(self, mechanism: bytes, message: bytes) -> list[bytes]:
        await self.send(b"a AUTHENTICATE " + mechanism)
        assert (await self.line()).startswith(b"+")
        await self.send(base64.b64encode(message))
        first = await self.line()
        if first.startswith(b"+ "):  # RFC 7628 §3.2.2 error challenge: answer with the dummy
            await self.send(base64.b64encode(b"\x01"))
            return [first, *await self.until(b"a")]
        return [first] if first.startswith(b"a ") else [first, *await self.until(b"a")]

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


def _events(world: World, event: str) -> list[dict[str, object]]:
    return [e.context for e in world.events() if e.event == event]


@pytest.mark.parametrize("mechanism", [b"XOAUTH2", b"OAUTHBEARER"])
async def test_a_token_opens_the_mailbox(world: World, mechanism: bytes) -> None:
    token = (await world.client().tokens(password_form()))["access_token"]
    message = (
        build_xoauth2(MARTIN, token)
        if mechanism == b"XOAUTH2"
        else build_oauthbearer(token, MARTIN, "127.0.0.1", 993)
    )
    async with running_imap(world) as rt:
        client = await Client.connect(world, rt.settings.imap.tls_port)
        try:
            await client.send(b"c CAPABILITY")
            capability = b"".join(await client.until(b"c"))
            answer = await client.authenticate(mechanism, message)
            await client.send(b"s SELECT INBOX")
            selected = await client.until(b"s")
        finally:
            await client.close()
    assert b"AUTH=XOAUTH2" in capability and b"AUTH=OAUTHBEARER" in capability
    assert answer[-1].startswith(b"a OK"), answer
    assert selected[-1].startswith(b"s OK"), selected
    logins = [c for c in _events(world, "auth.login_succeeded") if c.get("method") == "oidc"]
    assert logins and logins[-1]["protocol"] == "imap"
    opened = [e for e in world.events() if e.event == "imap.mailbox_opened"]
    assert opened and opened[-1].target == MARTIN
    assert token not in json.dumps([e.context for e in world.events()])


async def test_tokens_are_not_offered_before_tls(world: World) -> None:
    async with running_imap(world) as rt:
        reader, writer = await asyncio.open_connection("127.0.0.1", rt.settings.imap.port)
        client = Client(reader, writer)
        try:
            greeting = await client.line()
            await client.send(b"a AUTHENTICATE XOAUTH2")
            refused = await client.until(b"a")
        finally:
            await client.close()
    assert b"LOGINDISABLED" in greeting and b"XOAUTH2" not in greeting
    assert refused[-1].startswith((b"a NO", b"a BAD")), refused


@pytest.mark.parametrize(
    "case",
    ["garbage", "other_professional", "malformed"],
)
async def test_a_refused_token_gets_the_rfc7628_challenge_then_no(world: World, case: str) -> None:
    if case == "garbage":
        message = build_xoauth2(MARTIN, "not.a.token")
    elif case == "other_professional":
        token = (await world.client().tokens(password_form(login=DUBOIS)))["access_token"]
        message = build_xoauth2(MARTIN, token)
    else:
        message = b"user=" + MARTIN.encode() + b"\x01auth=Basic abc\x01\x01"
    async with running_imap(world) as rt:
        client = await Client.connect(world, rt.settings.imap.tls_port)
        try:
            answer = await client.authenticate(b"XOAUTH2", message)
            await client.send(b"s SELECT INBOX")
            after = await client.until(b"s")
        finally:
            await client.close()
    if case == "malformed":  # not a bearer message at all: a protocol error, no token checked
        assert answer[-1].startswith(b"a BAD"), answer
    else:
        challenge = json.loads(base64.b64decode(answer[0][2:].strip()))
        assert challenge["status"] == "invalid_token"
        assert challenge["openid-configuration"].endswith("/.well-known/openid-configuration")
        assert answer[-1].startswith(b"a NO [AUTHENTICATIONFAILED]"), answer
        failed = [c for c in _events(world, "auth.login_failed") if c.get("protocol") == "imap"]
        assert failed and failed[-1]["method"] == "oidc"
    assert after[-1].startswith(b"s BAD") or after[-1].startswith(b"s NO"), after


async def test_revoking_the_token_ends_the_idle_session(world: World) -> None:
    client_oidc = world.client()
    tokens = await client_oidc.tokens(password_form())
    async with running_imap(world, recheck=0.5) as rt:
        client = await Client.connect(world, rt.settings.imap.tls_port)
        try:
            answer = await client.authenticate(
                b"XOAUTH2", build_xoauth2(MARTIN, tokens["access_token"])
            )
            assert answer[-1].startswith(b"a OK"), answer
            await client.send(b"s SELECT INBOX")
            await client.until(b"s")
            await client.send(b"i IDLE")
            assert (await client.line()).startswith(b"+")
            await asyncio.sleep(1.2)  # rechecks while the token holds keep the session open
            assert not client.reader.at_eof()
            revoked = await client_oidc.revoke(tokens["refresh_token"], "refresh_token")
            assert revoked.status_code == 200
            started = time.monotonic()
            bye = await client.line(timeout=10)
            ended_after = time.monotonic() - started
            eof = await client.line(timeout=10)
        finally:
            await client.close()
    assert bye.startswith(b"* BYE [EXPIRED]"), bye
    assert eof == b""
    assert ended_after < 3.0
    assert any(c.get("reason") == "token_ended" for c in _events(world, "imap.session_ended"))
    assert _events(world, "oidc.session_ended")
