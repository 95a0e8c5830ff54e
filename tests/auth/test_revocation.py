"""One revocation path (docs/revocation.md): revoking what a session rests on ends it within
5 s on every door where it opened one — IMAP (``* BYE``, RFC 5530), SMTP submission
(``421 4.7.0``) and the webmail (its row gone: the next request lands on the login page; its
server-sent-events stream closes) — and a peer whose certificate is revoked is refused on
inbound SMTP once the CRL is republished, without a whitelist refresh.

One operator for the whole module (real sockets, TLS, a real PKI and CRLs), with short
intervals: ``auth.revocation_poll_seconds`` 0.2 s, ``pki.crl_refresh_seconds`` 0.5 s. Each case
makes its own professional, so the cases do not depend on each other. Every outcome is polled
up to a 5 s deadline (the acceptance bound), never waited for a fixed time.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import re
import smtplib
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from imap_fixtures import HOST, STRUCT, Operator, Trust, running_operator
from imap_fixtures import trust as trust  # the session's PKI and whitelist  # noqa: PLC0414
from mssante.audit.events import Actor
from mssante.auth.revocation import RevocationWatcher, SessionRegistry, request_trust_refresh
from mssante.auth.service import AuthService
from mssante.auth.totp import code_for, step_at
from mssante.ops.accounts import Accounts, NewPerson
from mssante.ops.delegation import Delegations
from mssante.pki.ids import luhn_key
from mssante.store.models import AccessRight
from support import (
    drop_schema,
    free_port_block,
    is_postgres,
    new_schema_name,
    selected_database_url,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

BOUND = 5.0  # seconds: the acceptance bound of issue 11, point 3
PASSWORD = "mot-de-passe-solide-42"
ACTOR = Actor("test")
DOMAIN = "b.mssante.test"
_serial = count(1)


@dataclass
class World:
    op: Operator
    trust: Trust

    def person(self) -> tuple[str, str]:
        """A new professional with an account: (login, idNat)."""
        n = next(_serial)
        digits = f"2{n:09d}"
        id_nat = "8" + digits + luhn_key(digits)
        login = f"p{n}.revocation@{DOMAIN}"
        Accounts(self.op.rt.node.db).create_person(
            NewPerson(login, PASSWORD, id_nat, f"Nom{n}", "Test"), ACTOR
        )
        return login, id_nat

    @property
    def auth(self) -> AuthService:
        return self.op.rt.auth

    def tls(self, card: tuple[Path, Path] | None = None) -> ssl.SSLContext:
        context = self.op.tls()
        if card is not None:
            context.load_cert_chain(*card)
        return context


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Any:
    if not is_postgres():
        yield {"url": f"sqlite:///{tmp_path_factory.mktemp('revocation') / 'b.db'}"}
        return
    schema = new_schema_name()
    yield {"url": selected_database_url(), "schema_name": schema}
    drop_schema(schema)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(
    trust: Trust, tmp_path_factory: pytest.TempPathFactory, database: dict[str, str]
) -> AsyncIterator[World]:
    running = running_operator(trust, tmp_path_factory.mktemp("revocation-op"), database)
    settings = running.settings
    running.settings = settings.model_copy(
        update={
            "auth": settings.auth.model_copy(
                update={
                    "argon2_time_cost": 1,
                    "argon2_memory_kib": 8,
                    "throttle_base": 0.0,
                    "revocation_poll_seconds": 0.2,
                }
            ),
            "pki": settings.pki.model_copy(update={"crl_refresh_seconds": 0.5}),
            "web": settings.web.model_copy(
                update={
                    "port": free_port_block(1),
                    "require_second_factor": False,
                    "client_certificates": True,
                }
            ),
        }
    )
    async with running as op:
        yield World(op, trust)


# -- clients ---------------------------------------------------------------------------------------
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class Browser:
    """An HTTPS client keeping cookies and the pages' CSRF token (as tests/web's)."""

    def __init__(self, op: Operator, *, cert: tuple[Path, Path] | None = None) -> None:
        context = op.tls()
        if cert is not None:
            context.load_cert_chain(*cert)
        self.http = httpx.AsyncClient(
            base_url=f"https://127.0.0.1:{op.rt.settings.web.port}", verify=context, timeout=30
        )
        self.csrf = ""

    async def get(self, path: str) -> httpx.Response:
        return self._remember(await self.http.get(path))

    async def post(self, path: str, data: dict[str, str]) -> httpx.Response:
        return self._remember(await self.http.post(path, data={"csrf": self.csrf, **data}))

    async def login(self, address: str, password: str) -> httpx.Response:
        await self.get("/webmail/login")
        return await self.post("/webmail/login", {"address": address, "password": password})

    def _remember(self, response: httpx.Response) -> httpx.Response:
        found = (
            _CSRF.search(response.text)
            if "html" in response.headers.get("content-type", "")
            else None
        )
        if found:
            self.csrf = found.group(1)
        return response

    async def close(self) -> None:
        await self.http.aclose()


class Lines:
    """A line-level client over implicit TLS (IMAP 993, submission 465)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int, tls: ssl.SSLContext) -> Lines:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
        client = cls(reader, writer)
        await client.line()  # the greeting
        return client

    async def send(self, line: bytes) -> None:
        self.writer.write(line + b"\r\n")
        await self.writer.drain()

    async def line(self, timeout: float = 10.0) -> bytes:
        return await asyncio.wait_for(self.reader.readline(), timeout)

    async def until(self, prefix: bytes) -> list[bytes]:
        lines = [await self.line()]
        while not lines[-1].startswith(prefix) and lines[-1]:
            lines.append(await self.line())
        return lines

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await self.writer.wait_closed()


async def imap(world: World, login: str, password: str, authzid: str = "") -> Lines:
    client = await Lines.connect(world.op.imaps_port, world.tls())
    plain = base64.b64encode(f"{authzid}\0{login}\0{password}".encode())
    await client.send(b"a AUTHENTICATE PLAIN")
    assert (await client.line()).startswith(b"+")
    await client.send(plain)
    answer = await client.until(b"a ")
    assert answer[-1].startswith(b"a OK"), answer
    await client.send(b"s SELECT INBOX")
    assert (await client.until(b"s "))[-1].startswith(b"s OK")
    return client


async def imap_card(world: World, card: tuple[Path, Path]) -> Lines:
    client = await Lines.connect(world.op.imaps_port, world.tls(card))
    await client.send(b"a AUTHENTICATE EXTERNAL")
    assert (await client.line()).startswith(b"+")
    await client.send(b"")
    answer = await client.until(b"a ")
    assert answer[-1].startswith(b"a OK"), answer
    return client


async def submission(world: World, login: str, password: str) -> Lines:
    client = await Lines.connect(world.op.rt.settings.smtp.submissions_port, world.tls())
    await client.send(b"EHLO client.test")
    await client.until(b"250 ")
    plain = base64.b64encode(f"\0{login}\0{password}".encode())
    await client.send(b"AUTH PLAIN " + plain)
    answer = await client.line()
    assert answer.startswith(b"235"), answer
    return client


async def submission_card(world: World, card: tuple[Path, Path]) -> Lines:
    client = await Lines.connect(world.op.rt.settings.smtp.submissions_port, world.tls(card))
    await client.send(b"EHLO client.test")
    await client.until(b"250 ")
    await client.send(b"AUTH EXTERNAL =")
    answer = await client.line()
    assert answer.startswith(b"235"), answer
    return client


async def imap_ends(client: Lines, started: float) -> tuple[bytes, float]:
    """NOOP every 0.2 s until the server says BYE (the issue: NOOP kept answering OK): the BYE
    line and the seconds it took after ``started``; no OK may follow the revocation's end."""
    deadline = started + BOUND
    tag = 0
    while time.monotonic() < deadline:
        tag += 1
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await client.send(b"n%d NOOP" % tag)
        while True:
            try:
                line = await client.line(timeout=max(0.05, min(0.2, deadline - time.monotonic())))
            except TimeoutError:
                break
            if line.startswith(b"* BYE"):
                elapsed = time.monotonic() - started
                assert await client.line() == b"", "the connection must close after BYE"
                return line, elapsed
            if not line:
                raise AssertionError("closed without BYE")
            if line.startswith(b"n%d OK" % tag):
                break
    raise AssertionError(f"the IMAP session still answers {BOUND} s after the revocation")


async def idle_ends(client: Lines, started: float) -> tuple[bytes, float]:
    """A session in IDLE is told at once: the BYE, and how long it took."""
    line = (await client.until(b"* BYE"))[-1]
    return line, time.monotonic() - started


async def smtp_ends(client: Lines, started: float) -> tuple[bytes, float]:
    """The 421 the server sends (at once, or to the next command), and how long it took."""
    deadline = started + BOUND
    while time.monotonic() < deadline:
        try:
            line = await client.line(timeout=max(0.05, min(0.3, deadline - time.monotonic())))
        except TimeoutError:
            await client.send(b"NOOP")
            continue
        if line.startswith(b"421"):
            return line, time.monotonic() - started
        if not line:
            raise AssertionError("closed without 421")
    raise AssertionError(f"the submission session is still open {BOUND} s after the revocation")


async def web_ends(browser: Browser, started: float) -> float:
    """Until a page of the session sends to the login page."""
    deadline = started + BOUND
    while time.monotonic() < deadline:
        response = await browser.get("/webmail/f/INBOX")
        if response.status_code == 303 and "/webmail/login" in response.headers["location"]:
            return time.monotonic() - started
        assert response.status_code == 200, response.status_code
        await asyncio.sleep(0.1)
    raise AssertionError(f"the web session still works {BOUND} s after the revocation")


async def web_session(world: World, login: str) -> Browser:
    browser = Browser(world.op)
    response = await browser.login(login, PASSWORD)
    assert response.status_code == 303, response.text
    assert (await browser.get("/webmail/f/INBOX")).status_code == 200
    return browser


async def event_stream(browser: Browser) -> asyncio.Task[float]:
    """The session's server-sent events, open; the task ends (with when) when the server
    closes the stream."""
    opened = asyncio.Event()

    async def read() -> float:
        async with browser.http.stream("GET", "/webmail/events") as response:
            assert response.status_code == 200
            opened.set()
            async for _ in response.aiter_bytes():
                pass
        return time.monotonic()

    task = asyncio.create_task(read())
    await asyncio.wait_for(opened.wait(), BOUND)
    return task


async def timed(action: Callable[[], Any]) -> float:
    """Run a blocking revocation in a thread; the moment it was asked for (the times measured
    include the revocation's own transaction)."""
    started = time.monotonic()
    await asyncio.to_thread(action)
    return started


async def gather_ends(*waits: Awaitable[Any]) -> list[Any]:
    return list(await asyncio.gather(*waits))


# -- the cases ---------------------------------------------------------------------------------------
async def test_a_revoked_app_password_ends_its_imap_and_submission_sessions(world: World) -> None:
    login, _ = world.person()
    app = await asyncio.to_thread(world.auth.add_app_password, login, "Thunderbird", ACTOR)
    other = await asyncio.to_thread(world.auth.add_app_password, login, "Téléphone", ACTOR)
    mail = await imap(world, login, app.password)
    idle = await imap(world, login, app.password)
    sending = await submission(world, login, app.password)
    kept = await imap(world, login, other.password)  # another app password: not revoked
    await idle.send(b"i IDLE")
    assert (await idle.line()).startswith(b"+")
    try:
        started = await timed(lambda: world.auth.revoke_app_password(login, "Thunderbird", ACTOR))
        (bye, imap_took), (idle_bye, idle_took), (reply, smtp_took) = await gather_ends(
            imap_ends(mail, started), idle_ends(idle, started), smtp_ends(sending, started)
        )
        await kept.send(b"k NOOP")
        assert (await kept.until(b"k "))[-1].startswith(b"k OK")
    finally:
        for client in (mail, idle, sending, kept):
            await client.close()
    assert bye.startswith(b"* BYE [EXPIRED]"), bye
    assert idle_bye.startswith(b"* BYE [EXPIRED]"), idle_bye
    assert reply.startswith(b"421 4.7.0"), reply
    print(f"app password: imap {imap_took:.3f}s idle {idle_took:.3f}s submission {smtp_took:.3f}s")
    assert max(imap_took, idle_took, smtp_took) < BOUND
    events = [(e, c) for e, _, c in world.op.audit_events()]
    assert any(
        e == "imap.session_ended" and c.get("reason") == "app_password_revoked" for e, c in events
    )
    assert any(e == "submission.session_ended" for e, _ in events)


async def test_a_password_change_ends_imap_submission_and_other_web_sessions(
    world: World,
) -> None:
    login, _ = world.person()
    mail = await imap(world, login, PASSWORD)
    sending = await submission(world, login, PASSWORD)
    browser = await web_session(world, login)
    try:
        started = await timed(
            lambda: world.auth.change_password(login, "un-autre-mot-de-passe-77", ACTOR)
        )
        (bye, imap_took), (reply, smtp_took), web_took = await gather_ends(
            imap_ends(mail, started), smtp_ends(sending, started), web_ends(browser, started)
        )
    finally:
        await mail.close()
        await sending.close()
        await browser.close()
    assert bye.startswith(b"* BYE [EXPIRED]") and reply.startswith(b"421 4.7.0")
    print(f"password: imap {imap_took:.3f}s submission {smtp_took:.3f}s web {web_took:.3f}s")
    assert max(imap_took, smtp_took, web_took) < BOUND


async def test_the_web_session_changing_the_password_goes_on(world: World) -> None:
    login, _ = world.person()
    browser = await web_session(world, login)
    other = await web_session(world, login)
    try:
        await browser.get("/webmail/account")
        changed = await browser.post(
            "/webmail/account/password",
            {
                "current": PASSWORD,
                "new": "encore-un-mot-de-passe-88",
                "confirm": "encore-un-mot-de-passe-88",
            },
        )
        assert changed.status_code == 200, changed.text
        started = time.monotonic()
        await web_ends(other, started)
        assert (await browser.get("/webmail/f/INBOX")).status_code == 200
    finally:
        await browser.close()
        await other.close()


async def test_a_disabled_account_ends_every_door(world: World) -> None:
    login, _ = world.person()
    mail = await imap(world, login, PASSWORD)
    sending = await submission(world, login, PASSWORD)
    browser = await web_session(world, login)
    stream = await event_stream(browser)
    try:
        started = await timed(lambda: Accounts(world.op.rt.node.db).disable(login, ACTOR))
        (bye, imap_took), (reply, smtp_took), web_took = await gather_ends(
            imap_ends(mail, started), smtp_ends(sending, started), web_ends(browser, started)
        )
        closed_at = await asyncio.wait_for(stream, BOUND)
    finally:
        stream.cancel()
        await mail.close()
        await sending.close()
        await browser.close()
    stream_took = closed_at - started
    assert bye.startswith(b"* BYE [EXPIRED]") and reply.startswith(b"421 4.7.0")
    print(
        f"account: imap {imap_took:.3f}s submission {smtp_took:.3f}s web {web_took:.3f}s "
        f"events {stream_took:.3f}s"
    )
    assert max(imap_took, smtp_took, web_took, stream_took) < BOUND


async def test_a_revoked_delegation_ends_the_delegates_sessions(world: World) -> None:
    owner, _ = world.person()
    delegate, _ = world.person()
    delegations = Delegations(world.op.rt.node.db)
    await asyncio.to_thread(delegations.delegate, owner, delegate, AccessRight.SEND, ACTOR)
    shared = await imap(world, delegate, PASSWORD, authzid=owner)
    own = await imap(world, delegate, PASSWORD)  # its own mailbox: not resting on the grant
    sending = await submission(world, delegate, PASSWORD)  # may send as the owner
    try:
        started = await timed(lambda: delegations.revoke(owner, delegate, ACTOR))
        (bye, imap_took), (reply, smtp_took) = await gather_ends(
            imap_ends(shared, started), smtp_ends(sending, started)
        )
        await own.send(b"k NOOP")
        assert (await own.until(b"k "))[-1].startswith(b"k OK")
    finally:
        for client in (shared, own, sending):
            await client.close()
    assert bye.startswith(b"* BYE [NOPERM]"), bye
    assert reply.startswith(b"421 4.7.0"), reply
    print(f"delegation revoked: imap {imap_took:.3f}s submission {smtp_took:.3f}s")
    assert max(imap_took, smtp_took) < BOUND


async def test_a_delegation_reaching_its_end_date_ends_the_session(world: World) -> None:
    owner, _ = world.person()
    delegate, _ = world.person()
    until = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)
    await asyncio.to_thread(
        Delegations(world.op.rt.node.db).delegate,
        owner,
        delegate,
        AccessRight.READ,
        ACTOR,
        until=until,
    )
    shared = await imap(world, delegate, PASSWORD, authzid=owner)
    try:
        ends_in = (until - dt.datetime.now(dt.UTC)).total_seconds()
        assert ends_in > 0, "the login took longer than the grant"
        started = time.monotonic() + ends_in
        bye = (await asyncio.wait_for(shared.until(b"* BYE"), ends_in + BOUND))[-1]
        took = time.monotonic() - started
    finally:
        await shared.close()
    assert bye.startswith(b"* BYE [NOPERM]"), bye
    print(f"delegation ended: imap {took:.3f}s after its end date")
    assert took < BOUND


async def test_a_card_revoked_at_the_pki_ends_its_sessions(world: World) -> None:
    login, id_nat = world.person()
    issued = world.trust.pki.issue_person(id_nat, "Carte", "Test")
    card = (issued.fullchain, issued.key)
    mail = await imap_card(world, card)
    sending = await submission_card(world, card)
    browser = Browser(world.op, cert=card)
    opened = await browser.get("/webmail/certificate")
    assert opened.status_code == 303 and opened.headers["location"] == "/webmail/"
    assert (await browser.get("/webmail/f/INBOX")).status_code == 200
    try:
        started = await timed(lambda: world.trust.pki.revoke(issued.cert, "keyCompromise"))
        (bye, imap_took), (reply, smtp_took), web_took = await gather_ends(
            imap_ends(mail, started), smtp_ends(sending, started), web_ends(browser, started)
        )
    finally:
        await mail.close()
        await sending.close()
        await browser.close()
    assert bye.startswith(b"* BYE [EXPIRED]") and reply.startswith(b"421 4.7.0")
    print(f"card: imap {imap_took:.3f}s submission {smtp_took:.3f}s web {web_took:.3f}s")
    assert max(imap_took, smtp_took, web_took) < BOUND
    assert login


def _peer_mail_from(port: int, tls: ssl.SSLContext, rounds: float) -> list[int]:
    """One inbound session: MAIL FROM, then again after each RSET, until refused or the
    deadline (monotonic ``rounds``); the codes."""
    codes: list[int] = []
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.ehlo("smtp.peer.test")
        smtp.starttls(context=tls)
        smtp.ehlo("smtp.peer.test")
        while True:
            code, _ = smtp.mail(f"someone@{DOMAIN}")
            codes.append(code)
            if code != 250 or time.monotonic() > rounds:
                return codes
            smtp.rset()
            time.sleep(0.1)


async def test_a_peer_revoked_at_the_pki_is_refused_within_the_crl_interval(
    world: World,
) -> None:
    """Same DN as operator B's (listed on the whitelist for b.mssante.test), another key."""
    peer = world.trust.pki.issue_server(HOST, STRUCT, "OPERATEUR B", "31")
    tls = world.tls((peer.fullchain, peer.key))
    port = world.op.rt.settings.smtp.inbound_port
    first = await asyncio.to_thread(_peer_mail_from, port, tls, time.monotonic())
    assert first == [250], first
    whitelist_before = world.op.rt.sync.keeper.current()

    async def revoke_later() -> float:
        await asyncio.sleep(0.3)
        return await timed(lambda: world.trust.pki.revoke(peer.cert, "keyCompromise"))

    revoking = asyncio.create_task(revoke_later())
    codes = await asyncio.to_thread(_peer_mail_from, port, tls, time.monotonic() + 0.3 + BOUND)
    took = time.monotonic() - await revoking
    assert codes[0] == 250 and codes[-1] == 550, codes  # refused on the same connection
    assert world.op.rt.sync.keeper.current() is whitelist_before  # no whitelist refresh
    print(f"inbound peer: refused {took:.3f}s after the CRL was republished")
    assert took < BOUND


# -- point 5: the hint for a mail client that needs an app password ------------------------------------
def _enrol_totp(auth: AuthService, login: str) -> None:
    enrolment = auth.enrol_totp(login, ACTOR)
    secret = enrolment.uri.split("secret=")[1].split("&")[0]
    auth.confirm_totp(login, code_for(secret, step_at(auth.clock() - 30)), ACTOR)


async def test_a_totp_account_is_told_to_make_an_app_password(world: World) -> None:
    login, _ = world.person()
    await asyncio.to_thread(_enrol_totp, world.auth, login)
    answers = {}
    for name, password in (("right", PASSWORD), ("wrong", "pas-le-bon-mot-de-passe")):
        client = await Lines.connect(world.op.imaps_port, world.tls())
        await client.send(f'a LOGIN "{login}" "{password}"'.encode())
        imap_answer = (await client.until(b"a "))[-1]
        await client.close()
        client = await Lines.connect(world.op.rt.settings.smtp.submissions_port, world.tls())
        await client.send(b"EHLO client.test")
        await client.until(b"250 ")
        await client.send(b"AUTH PLAIN " + base64.b64encode(f"\0{login}\0{password}".encode()))
        smtp_answer = await client.line()
        await client.close()
        answers[name] = (imap_answer, smtp_answer)
    hint = b"Ce compte utilise la double authentification : creez un mot de passe d'application"
    right_imap, right_smtp = answers["right"]
    assert right_imap.startswith(b"a NO [AUTHENTICATIONFAILED] " + hint), right_imap
    assert b"/ This account uses two-factor authentication" in right_imap
    assert right_smtp.startswith(b"535 5.7.8 " + hint), right_smtp
    wrong_imap, wrong_smtp = answers["wrong"]  # nothing told to someone with a wrong password
    assert wrong_imap.startswith(b"a NO [AUTHENTICATIONFAILED]") and hint not in wrong_imap
    assert wrong_smtp.startswith(b"535 5.7.8") and hint not in wrong_smtp


async def test_a_trust_refresh_asked_by_another_process_reaches_a_watcher(
    world: World,
) -> None:
    """``mssante operator refresh-whitelist`` / ``refresh-crls`` in another process write a
    row; a running server's watcher reads it and refreshes its CRLs and whitelist."""
    refreshed = asyncio.Event()

    async def refresh() -> None:
        refreshed.set()

    db = world.op.rt.node.db
    watcher = RevocationWatcher(db, SessionRegistry(), refresh_trust=refresh)
    await watcher.tick()  # where its reading starts
    with db.session() as session:
        request_trust_refresh(session, actor="test")
    await watcher.tick()
    assert refreshed.is_set()
