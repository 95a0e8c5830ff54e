"""Issue 12, the web door against a hostile client: a forged ``X-Forwarded-For``, too many
connections or requests at once, line breaks in the compose form's header fields, attachments
a browser would run (docs/webmail.md "Limits", "Attachments").

The forwarded-address and connection tests go through the operator's real uvicorn listener
over HTTPS; the per-address middleware is also driven through a bare ASGI harness with small
limits. No assertion depends on the machine's speed: a blocked request is held by an event or
an open stream, never by a sleep, and waits are for a state, with a generous deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import make_msgid
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from starlette.responses import StreamingResponse

from imap_fixtures import Operator, Trust
from mssante.audit.events import AuditEvent
from mssante.config import load_settings
from mssante.mail.reading import parse_message
from mssante.operator.web import create_operator_app, uvicorn_concurrency
from mssante.web.limits import RequestsPerAddress
from webhelpers import DURAND, MARTIN, Browser, tls, webmail_operator

Message = MutableMapping[str, Any]
FORGED = [f"203.0.113.{n}" for n in range(1, 6)]
DEADLINE = 60.0  # seconds a wait for a state may take before the test fails (never reached)


class hostile_operator(webmail_operator):
    """The webmail operator without the AuthService's growing delays (``throttle_base`` 0),
    so that many wrong passwords in a row cost no time; the per-address login limit stays."""

    def __init__(self, trust: Trust, root: Path, database: dict[str, str], **web: Any) -> None:
        super().__init__(trust, root, database, **web)
        auth = self.settings.auth.model_copy(update={"throttle_base": 0.0})
        self.settings = self.settings.model_copy(update={"auth": auth})


async def wrong_login(browser: Browser, forwarded: str) -> httpx.Response:
    await browser.get("/webmail/login")
    return await browser.post(
        "/webmail/login",
        {"address": MARTIN, "password": "mauvais mot de passe", "code": ""},
        headers={"X-Forwarded-For": forwarded},
    )


def failed_login_peers(op: Operator) -> list[str]:
    return [
        str(context.get("peer"))
        for event, _, context in op.audit_events()
        if event == AuditEvent.LOGIN_FAILED.value
    ]


async def until(check: Callable[[], Awaitable[bool]]) -> None:
    """Wait for a state (polling), failing only after ``DEADLINE``."""
    loop = asyncio.get_running_loop()
    end = loop.time() + DEADLINE
    while not await check():
        assert loop.time() < end, "the state was never reached"
        await asyncio.sleep(0.05)


# --- 1. X-Forwarded-For ----------------------------------------------------------------------


async def test_a_forged_forwarded_for_is_ignored_by_default(
    trust: Trust, tmp_path: Path, b_database: dict[str, str]
) -> None:
    """From 127.0.0.1 (which uvicorn believed by default), each wrong password with another
    forged address: the audit records the TCP peer, and the limit of 3 a minute applies."""
    async with (
        hostile_operator(trust, tmp_path / "b", b_database, login_attempts_per_minute=3) as op,
        Browser(op) as browser,
    ):
        assert op.rt.web is not None
        assert op.rt.web.server.config.proxy_headers is False
        for forged in FORGED[:3]:
            assert (await wrong_login(browser, forged)).status_code == 401
        throttled = await wrong_login(browser, FORGED[3])
        assert throttled.status_code == 429
        peers = failed_login_peers(op)
    assert peers == ["127.0.0.1"] * 3
    everything = repr(op.audit_events())
    assert not [forged for forged in FORGED if forged in everything]


async def test_a_trusted_proxys_forwarded_for_is_believed(
    trust: Trust, tmp_path: Path, b_database: dict[str, str]
) -> None:
    async with (
        hostile_operator(
            trust,
            tmp_path / "b",
            b_database,
            login_attempts_per_minute=3,
            trusted_proxies=["127.0.0.1"],
        ) as op,
        Browser(op) as browser,
    ):
        for forged in FORGED:  # five addresses, one attempt each: none reaches its limit
            assert (await wrong_login(browser, forged)).status_code == 401
        assert failed_login_peers(op) == FORGED
        for _ in range(3):  # the limit is per forwarded address
            assert (await wrong_login(browser, "198.51.100.7")).status_code == 401
        assert (await wrong_login(browser, "198.51.100.7")).status_code == 429
        # The right-most address the proxy did not add is the client (the proxy appends).
        assert (await wrong_login(browser, "192.0.2.1, 198.51.100.8")).status_code == 401
        assert failed_login_peers(op)[-1] == "198.51.100.8"


# --- 2. Caps: connections, requests per address -----------------------------------------------


async def test_beyond_max_connections_uvicorn_answers_503(
    trust: Trust, tmp_path: Path, b_database: dict[str, str]
) -> None:
    """``max_connections=1``: one connection is served; while a second is open (an idle TLS
    connection that never sends a request), a new one gets 503."""
    async with hostile_operator(trust, tmp_path / "b", b_database, max_connections=1) as op:
        assert op.rt.web is not None
        assert op.rt.web.server.config.limit_concurrency == uvicorn_concurrency(1) == 2
        port = op.rt.settings.web.port
        async with Browser(op) as first:
            assert (await first.get("/webmail/login")).status_code == 200
        _, idle = await asyncio.open_connection("127.0.0.1", port, ssl=tls(op))
        try:
            async with Browser(op) as second:
                refused = await second.get("/webmail/login")
                assert refused.status_code == 503
        finally:
            idle.close()
            with contextlib.suppress(ssl.SSLError, ConnectionError):
                await idle.wait_closed()

        async def served() -> bool:
            async with Browser(op) as again:
                return (await again.get("/webmail/login")).status_code == 200

        await until(served)


async def test_silent_and_slow_clients_lose_their_connection(
    trust: Trust, tmp_path: Path, b_database: dict[str, str]
) -> None:
    """``header_timeout``: a connection that sends nothing, or a header a byte at a time
    (slowloris), is closed; the connection slot comes back (docs/security.md)."""
    async with hostile_operator(trust, tmp_path / "b", b_database, header_timeout=0.5) as op:
        port = op.rt.settings.web.port
        silent_r, silent_w = await asyncio.open_connection("127.0.0.1", port, ssl=tls(op))
        slow_r, slow_w = await asyncio.open_connection("127.0.0.1", port, ssl=tls(op))
        slow_w.write(b"GET /webmail/login HTTP/1.1\r\nHost: x\r\n")

        async def trickle() -> None:
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                while not slow_w.is_closing():
                    slow_w.write(b"X")
                    await slow_w.drain()
                    await asyncio.sleep(0.1)

        trickling = asyncio.create_task(trickle())
        try:
            for reader in (silent_r, slow_r):  # closed by the server: end of stream
                assert await asyncio.wait_for(reader.read(), DEADLINE) == b""
        finally:
            trickling.cancel()
            for writer in (silent_w, slow_w):
                writer.close()
        async with Browser(op) as browser:  # an honest client is served as before
            assert (await browser.get("/webmail/login")).status_code == 200


async def test_one_address_beyond_its_requests_in_flight_gets_429(
    trust: Trust, tmp_path: Path, b_database: dict[str, str]
) -> None:
    """``max_requests_per_address=1``: while the event stream is open, another request of the
    same address is refused with 429 and Retry-After; once the stream is closed, served."""
    async with (
        hostile_operator(trust, tmp_path / "b", b_database, max_requests_per_address=1) as op,
        Browser(op) as browser,
    ):
        await browser.login_enrolling()
        async with browser.http.stream("GET", "/webmail/events") as events:
            assert events.status_code == 200
            first = await anext(events.aiter_text())  # the stream is in flight
            assert "retry:" in first
            refused = await browser.get("/webmail/f/INBOX")
            assert refused.status_code == 429
            assert int(refused.headers["retry-after"]) >= 1
            assert "Trop de requêtes simultanées" in refused.text
            assert refused.headers["x-content-type-options"] == "nosniff"
            assert "content-security-policy" in refused.headers

        async def served() -> bool:
            return (await browser.get("/webmail/f/INBOX")).status_code == 200

        await until(served)


def test_the_operator_app_carries_the_per_address_limit(tmp_path: Path) -> None:
    settings = load_settings(None, data_dir=tmp_path, web={"max_requests_per_address": 7})
    app = create_operator_app(settings, None, None)  # type: ignore[arg-type]
    limits = [m for m in app.user_middleware if m.cls is cast(Any, RequestsPerAddress)]
    assert len(limits) == 1
    assert limits[0].kwargs["limit"] == 7


class Gate:
    """An ASGI app: ``/block`` waits until ``opened``, ``/boom`` raises, anything else 200."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.entered: asyncio.Queue[str] = asyncio.Queue()

    async def __call__(self, scope: Message, receive: Any, send: Any) -> None:
        if scope["path"] == "/boom":
            raise RuntimeError("boom")
        if scope["path"] == "/block":
            await self.entered.put(scope["client"][0])
            await self.opened.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def call(
    app: Any,
    path: str,
    client: str = "192.0.2.1",
    receive: Callable[[], Awaitable[Message]] | None = None,
) -> tuple[int, dict[bytes, bytes], bytes]:
    """One request through ``app``: status, headers, body."""
    sent: list[Message] = []

    async def request() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "headers": [],
        "query_string": b"",
        "client": (client, 50000),
    }
    await app(scope, receive or request, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start.get("headers", [])), body


async def test_the_middleware_counts_requests_in_flight_per_address() -> None:
    gate = Gate()
    limiter = RequestsPerAddress(gate, limit=2)
    held = [asyncio.create_task(call(limiter, "/block")) for _ in range(2)]
    for _ in held:
        await gate.entered.get()
    status, headers, body = await call(limiter, "/ok")
    assert status == 429
    assert int(headers[b"retry-after"]) >= 1
    assert "Trop de requêtes simultanées" in body.decode()
    assert (await call(limiter, "/ok", client="192.0.2.2"))[0] == 200  # another address
    gate.opened.set()
    assert [(await task)[0] for task in held] == [200, 200]
    assert (await call(limiter, "/ok"))[0] == 200
    assert limiter.active == {}


async def test_an_ipv6_client_is_counted_by_its_slash_64() -> None:
    gate = Gate()
    limiter = RequestsPerAddress(gate, limit=1)
    held = asyncio.create_task(call(limiter, "/block", client="2001:db8::1"))
    await gate.entered.get()
    assert (await call(limiter, "/ok", client="2001:db8::2"))[0] == 429
    assert (await call(limiter, "/ok", client="2001:db8:0:1::1"))[0] == 200
    gate.opened.set()
    await held
    assert limiter.active == {}


async def test_the_count_is_given_back_on_an_error_and_a_cancellation() -> None:
    gate = Gate()
    limiter = RequestsPerAddress(gate, limit=1)
    with pytest.raises(RuntimeError):
        await call(limiter, "/boom")
    assert (await call(limiter, "/ok"))[0] == 200
    held = asyncio.create_task(call(limiter, "/block"))
    await gate.entered.get()
    assert (await call(limiter, "/ok"))[0] == 429
    held.cancel()  # the server ending the request's task
    with contextlib.suppress(asyncio.CancelledError):
        await held
    assert (await call(limiter, "/ok"))[0] == 200
    assert limiter.active == {}


async def test_the_count_is_given_back_when_the_client_disconnects() -> None:
    """A stream that never ends by itself (like the event stream): the client going away ends
    it (Starlette's StreamingResponse listens for ``http.disconnect``), and the count with it."""
    streaming = asyncio.Event()
    gone = asyncio.Event()

    async def forever() -> AsyncIterator[bytes]:
        yield b"retry: 5000\n\n"
        streaming.set()
        await asyncio.Event().wait()  # never set
        yield b""  # pragma: no cover

    async def app(scope: Message, receive: Any, send: Any) -> None:
        await StreamingResponse(forever(), media_type="text/event-stream")(scope, receive, send)

    async def receive() -> Message:
        await gone.wait()
        return {"type": "http.disconnect"}

    limiter = RequestsPerAddress(app, limit=1)
    held = asyncio.create_task(call(limiter, "/events", receive=receive))
    await streaming.wait()
    assert limiter.active == {"192.0.2.1": 1}
    assert (await call(limiter, "/other"))[0] == 429
    gone.set()
    assert (await held)[0] == 200
    assert limiter.active == {}


# --- 3. Line breaks in the compose form --------------------------------------------------------

BODY = "Texte du brouillon à garder, écrit longuement."


@pytest.fixture
async def op(trust: Trust, tmp_path: Path, b_database: dict[str, str]) -> AsyncIterator[Operator]:
    async with webmail_operator(trust, tmp_path / "b", b_database) as running:
        yield running


@pytest.mark.parametrize(
    ("field", "value", "label"),
    [
        ("subject", "Compte rendu\r\nBcc: espion@b.mssante.test", "L'objet"),
        ("subject", "Compte rendu\nBcc: espion@b.mssante.test", "L'objet"),
        ("in_reply_to", "<a@b.mssante.test>\r\nBcc: espion@b.mssante.test", "In-Reply-To"),
        ("references", "<a@b.mssante.test>\rBcc: espion@b.mssante.test", "References"),
        ("sender", f"{MARTIN}\r\nBcc: espion@b.mssante.test", "L'expéditeur"),
        ("sender", '"', "L'expéditeur"),  # not a line break: the email package's IndexError
    ],
)
async def test_a_line_break_in_a_header_field_is_a_form_error(
    op: Operator, field: str, value: str, label: str
) -> None:
    async with Browser(op) as browser:
        await browser.login_enrolling()
        for action in ("send", "save"):
            await browser.get("/webmail/compose")
            form = {
                "to": DURAND,
                "subject": "Compte rendu",
                "body": BODY,
                "in_reply_to": "<a@b.mssante.test>",
                "references": "<a@b.mssante.test>",
                "action": action,
                field: value,
            }
            refused = await browser.post("/webmail/compose", form)
            assert refused.status_code in (400, 422), refused.text
            assert 'data-testid="compose-error"' in refused.text
            assert label in refused.text.replace("&#39;", "'")
            assert BODY in refused.text  # the draft comes back
            if field == "subject":
                assert f'value="{value}"' in refused.text  # as typed
            assert f'value="{DURAND}"' in refused.text
            assert (await browser.get("/webmail/f/INBOX")).status_code == 200  # still fine
    for address, folder in ((DURAND, "INBOX"), (MARTIN, "Sent"), (MARTIN, "Drafts")):
        assert op.rt.store.list_messages(address, folder=folder) == [], (address, folder)


async def test_the_fields_still_send_when_clean(op: Operator) -> None:
    async with Browser(op) as browser:
        await browser.login_enrolling()
        await browser.get("/webmail/compose")
        sent = await browser.post(
            "/webmail/compose",
            {
                "to": DURAND,
                "subject": "Objet\u00a0: tabulé\tet insécable",
                "body": BODY,
                "in_reply_to": "<a@b.mssante.test>",
                "references": "<z@b.mssante.test> <a@b.mssante.test>",
                "action": "send",
            },
        )
        assert sent.status_code == 303, sent.text
    received = op.rt.store.list_messages(DURAND)
    assert len(received) == 1
    assert "insécable" in received[0].subject


# --- 4. Attachments a browser would run --------------------------------------------------------

SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(document.domain)</script></svg>'
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000100e221bc330000000049454e44ae426082"
)
ACTIVE = {
    "dessin.svg": ("image", "svg+xml", SVG),
    "page.html": ("text", "html", b"<script>alert(1)</script>"),
    "page.xhtml": ("application", "xhtml+xml", b"<html xmlns='http://www.w3.org/1999/xhtml'/>"),
    "donnees.xml": ("text", "xml", b"<?xml version='1.0'?><a/>"),
    "donnees2.xml": ("application", "xml", b"<?xml version='1.0'?><a/>"),
    "code.js": ("application", "javascript", b"alert(1)"),
    "code2.js": ("text", "javascript", b"alert(1)"),
    "inconnu.bin": ("application", "x-inconnu", b"<script>alert(1)</script>"),
}
PASSIVE = {
    "point.png": ("image", "png", PNG),
    "compte-rendu.pdf": ("application", "pdf", b"%PDF-1.4 test"),
    "note.txt": ("text", "plain", b"Bonjour."),
}


def attachments_mail() -> bytes:
    msg = EmailMessage()
    msg["From"] = "Dr Paul Durand <dr.durand@b.mssante.test>"
    msg["To"] = MARTIN
    msg["Subject"] = "Pièces jointes"
    msg["Date"] = "Wed, 25 Nov 2026 10:00:00 +0100"
    msg["Message-ID"] = make_msgid(domain="test")
    msg.set_content("Version texte.\n")
    msg.add_alternative('<p>Voir <img src="cid:dessin@test"></p>', subtype="html")
    for name, (maintype, subtype, content) in {**ACTIVE, **PASSIVE}.items():
        msg.add_attachment(
            content,
            maintype=maintype,
            subtype=subtype,
            filename=name,
            disposition="inline" if name == "dessin.svg" else "attachment",
            cid="<dessin@test>" if name == "dessin.svg" else None,
        )
    return msg.as_bytes(policy=SMTP)


def assert_download(response: httpx.Response, name: str) -> None:
    assert response.status_code == 200, (name, response.status_code)
    assert response.headers["content-type"] == "application/octet-stream", name
    assert response.headers["content-disposition"].startswith("attachment;"), name
    assert response.headers["x-content-type-options"] == "nosniff", name
    assert "sandbox" in response.headers["content-security-policy"], name


async def test_attachments_a_browser_would_run_are_always_downloads(op: Operator) -> None:
    raw = attachments_mail()
    await asyncio.to_thread(op.deliver, raw, MARTIN)
    parts = {a.filename: a.part_id for a in parse_message(raw).attachments}
    assert set(parts) >= {*ACTIVE, *PASSIVE}
    async with Browser(op) as browser:
        await browser.login_enrolling()
        base = "/webmail/f/INBOX/m/1/part/"
        for name, (_, _, content) in ACTIVE.items():
            for query in ("", "?inline=1"):
                response = await browser.get(f"{base}{parts[name]}{query}")
                assert_download(response, name + query)
                assert response.content == content
        for name in PASSIVE:  # downloaded unless the page asks for it inline
            assert_download(await browser.get(f"{base}{parts[name]}"), name)
        shown = await browser.get(f"{base}{parts['point.png']}?inline=1")
        assert shown.headers["content-type"] == "image/png"
        assert shown.headers["content-disposition"].startswith("inline;")
        assert shown.headers["x-content-type-options"] == "nosniff"
        assert "sandbox" in shown.headers["content-security-policy"]
        assert shown.content == PNG
        body = await browser.get("/webmail/f/INBOX/m/1/body")
        assert body.status_code == 200
