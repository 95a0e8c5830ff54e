"""The webmail's defences over real HTTPS against a running operator B (docs/webmail.md
"Security"): the CSRF token on every state change (the routes enumerated from the app itself,
so a route added later is checked too), the security headers and the session cookie, guessing
other people's messages and odd names, the login rate limit, how sessions end, remote images.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import make_msgid
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from sqlalchemy import func, select

from imap_fixtures import Operator, Trust, message
from mssante.audit.events import Actor
from mssante.ops.delegation import Delegations
from mssante.store.models import AccessRight, Account, WebSession
from mssante.web.context import LOGIN_CSRF_COOKIE
from mssante.web.sessions import COOKIE, token_hash
from webhelpers import DURAND, MARTIN, PASSWORD, Browser, webmail_operator

SECRETARIAT = "secretariat@b.mssante.test"
EVIL_ORIGIN = "https://evil.example"
WRONG_TOKEN = "x" * 43  # the shape of a real token (token_urlsafe(32))
THROTTLED = "Trop de tentatives. Patientez une minute avant de réessayer."


@pytest.fixture
async def op(trust: Trust, tmp_path: Path, b_database: dict[str, str]) -> AsyncIterator[Operator]:
    async with webmail_operator(trust, tmp_path / "b", b_database) as running:
        yield running


async def deliver(op: Operator, raw: bytes, *to: str) -> None:
    await asyncio.to_thread(op.deliver, raw, *to)


def html_mail(
    subject: str, html: str, *, attachment: bytes | None = None, to: str = MARTIN
) -> bytes:
    """A multipart/alternative mail (text and HTML), with a PDF attached if given."""
    msg = EmailMessage()
    msg["From"] = "Dr Paul Durand <dr.durand@b.mssante.test>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = "Wed, 25 Nov 2026 10:00:00 +0100"
    msg["Message-ID"] = make_msgid(domain="test")
    msg.set_content("Version texte.\n")
    msg.add_alternative(html, subtype="html")
    if attachment is not None:
        msg.add_attachment(
            attachment, maintype="application", subtype="pdf", filename="compte-rendu.pdf"
        )
    return msg.as_bytes(policy=SMTP)


def next_code(secret: str) -> str:
    """The code of the next 30-second step: accepted now (one step of tolerance, RFC 6238
    §5.2) and later than the step the enrolment consumed, so not refused as a replay. A second
    login of the same person then needs no wait for the next step."""
    return pyotp.TOTP(secret).at(time.time() + 30)


async def second_login(op: Operator, secret: str) -> Browser:
    """Another browser, logged in as Martin with his device (close it with ``__aexit__``)."""
    browser = Browser(op)
    response = await browser.login(MARTIN, code=next_code(secret))
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/webmail/"
    assert (await browser.get("/webmail/f/INBOX")).status_code == 200
    return browser


def webmail_routes(op: Operator, method: str) -> dict[str, Any]:
    """The app's own routes under /webmail answering ``method``, by path template (included
    routers flattened as FastAPI's OpenAPI generator does)."""
    assert op.rt.web is not None
    app = op.rt.web.server.config.app
    assert isinstance(app, FastAPI)
    return {
        route.path: route
        for route in iter_route_contexts(app.routes)
        if route.path and route.path.startswith("/webmail") and method in (route.methods or set())
    }


def concrete(template: str, **values: str) -> str:
    """``/webmail/f/{folder:path}/m/{uid}/flag`` with its parameters filled in."""

    def value(match: re.Match[str]) -> str:
        return values.get(match.group(1), {"folder": "INBOX", "uid": "1"}.get(match.group(1), "x"))

    return re.sub(r"\{(\w+)(?::\w+)?\}", value, template)


def subjects(op: Operator, address: str, folder: str = "INBOX") -> list[str]:
    return [m.subject for m in op.rt.store.list_messages(address, folder=folder)]


def inbox_uids(op: Operator, address: str = MARTIN, folder: str = "INBOX") -> set[int]:
    return {m.uid for m in op.rt.store.list_messages(address, folder=folder)}


def flags_of(op: Operator, uid: int, address: str = MARTIN) -> set[str]:
    found = [m for m in op.rt.store.list_messages(address) if m.uid == uid]
    assert found, f"no message {uid} in {address}'s INBOX"
    return set(found[0].flags)


def session_rows(op: Operator, address: str) -> int:
    with op.rt.node.db.session() as session:
        count = session.scalar(
            select(func.count())
            .select_from(WebSession)
            .join(Account, Account.id == WebSession.account_id)
            .where(Account.login == address)
        )
    return int(count or 0)


def session_row(op: Operator, browser: Browser) -> WebSession | None:
    with op.rt.node.db.session() as session:
        row = session.get(WebSession, token_hash(browser.http.cookies[COOKIE]))
        if row is not None:
            session.expunge(row)
        return row


def audited(op: Operator, event: str, actor: str = MARTIN) -> int:
    return sum(1 for e, a, _ in op.audit_events() if e == event and a == actor)


# --- CSRF ---------------------------------------------------------------------------------------


@dataclass
class Case:
    """One state change: a request that makes it with the right token, what must still hold
    after each refused attempt (``unchanged``), and what holds after the accepted one."""

    path: str
    form: dict[str, str]
    unchanged: Callable[[], Awaitable[None]]
    changed: Callable[[], Awaitable[None]] | None = None


async def refused_without_the_right_token(
    browser: Browser, path: str, form: dict[str, str], other_session_token: str
) -> None:
    """No token, a wrong one (field or htmx header), another session's, and the right token
    sent from another origin: each answers 403."""
    attempts: dict[str, tuple[dict[str, str], dict[str, str]]] = {
        "no token": (form, {}),
        "a wrong token": ({**form, "csrf": WRONG_TOKEN}, {}),
        "a wrong X-CSRF-Token header": (form, {"X-CSRF-Token": WRONG_TOKEN}),
        "another session's token": ({**form, "csrf": other_session_token}, {}),
        "the right token from another origin": (
            {**form, "csrf": browser.csrf},
            {"Origin": EVIL_ORIGIN},
        ),
    }
    for what, (data, headers) in attempts.items():
        response = await browser.http.post(path, data=data, headers=headers)
        assert response.status_code == 403, f"POST {path} with {what}: {response.status_code}"
        assert COOKIE not in response.cookies, f"POST {path} with {what} set a session cookie"


class Scene:
    """Martin logged in twice (``a``, ``b``), messages 1 to 4 in his INBOX (4 asks for a read
    receipt), a shared mailbox, an app password, a second device waiting for its code: each
    state change of the webmail has something to change, and a check that it did not."""

    def __init__(self, op: Operator, a: Browser, b: Browser, kept: int, device: str) -> None:
        self.op, self.a, self.b, self.kept, self.device = op, a, b, kept, device

    def cases(self) -> dict[str, Case]:
        b_prefix = token_hash(self.b.http.cookies[COOKIE])[:16]
        flag = {"name": "\\Flagged", "on": "1"}
        mail = {"to": DURAND, "subject": "Par CSRF", "body": "b", "action": "send"}
        return {
            "/webmail/f/{folder:path}/m/{uid}/flag": Case(
                "/webmail/f/INBOX/m/1/flag", flag, self.not_flagged, self.flagged
            ),
            "/webmail/f/{folder:path}/m/{uid}/move": Case(
                "/webmail/f/INBOX/m/2/move", {"to": "Archive"}, self.not_moved, self.archived
            ),
            "/webmail/f/{folder:path}/m/{uid}/delete": Case(
                "/webmail/f/INBOX/m/3/delete", {}, self.not_deleted, self.in_trash
            ),
            "/webmail/f/{folder:path}/m/{uid}/receipt": Case(
                "/webmail/f/INBOX/m/4/receipt", {}, self.no_receipt, self.receipt_sent
            ),
            "/webmail/compose": Case("/webmail/compose", mail, self.not_sent, self.sent),
            "/webmail/account/app-passwords": Case(
                "/webmail/account/app-passwords",
                {"label": "Par CSRF"},
                self.no_new_app_password,
                self.new_app_password,
            ),
            "/webmail/account/app-passwords/{ident}/revoke": Case(
                f"/webmail/account/app-passwords/{self.kept}/revoke",
                {},
                self.not_revoked,
                self.revoked,
            ),
            "/webmail/mailbox": Case(
                "/webmail/mailbox", {"address": SECRETARIAT}, self.own_mailbox, self.switched
            ),
            "/webmail/enrol": Case(
                "/webmail/enrol",
                {"code": pyotp.TOTP(self.device).now()},
                self.device_kept,
                self.device_replaced,
            ),
            "/webmail/account/sessions/{prefix}/end": Case(
                f"/webmail/account/sessions/{b_prefix}/end",
                {},
                self.other_session_alive,
                self.other_session_ended,
            ),
            # Accepted, it would end the session the last case needs: the basics test covers
            # it; here only its refusals.
            "/webmail/logout-everywhere": Case("/webmail/logout-everywhere", {}, self.logged_in),
            "/webmail/logout": Case("/webmail/logout", {}, self.logged_in, self.logged_out),
        }

    async def alive(self, browser: Browser) -> bool:
        return (await browser.get("/webmail/f/INBOX")).status_code == 200

    def app_passwords(self) -> dict[str, int]:
        return {p.label: p.id for p in self.op.rt.auth.list_app_passwords(MARTIN)}

    async def not_flagged(self) -> None:
        assert "\\Flagged" not in flags_of(self.op, 1)

    async def flagged(self) -> None:
        assert "\\Flagged" in flags_of(self.op, 1)

    async def not_moved(self) -> None:
        assert 2 in inbox_uids(self.op)
        assert inbox_uids(self.op, folder="Archive") == set()

    async def archived(self) -> None:
        assert 2 not in inbox_uids(self.op)
        assert len(inbox_uids(self.op, folder="Archive")) == 1

    async def not_deleted(self) -> None:
        assert 3 in inbox_uids(self.op)
        assert inbox_uids(self.op, folder="Trash") == set()

    async def in_trash(self) -> None:
        assert 3 not in inbox_uids(self.op)
        assert len(inbox_uids(self.op, folder="Trash")) == 1

    async def no_receipt(self) -> None:
        assert "$MDNSent" not in flags_of(self.op, 4)
        assert subjects(self.op, DURAND) == []

    async def receipt_sent(self) -> None:
        assert "$MDNSent" in flags_of(self.op, 4)
        assert len(subjects(self.op, DURAND)) == 1

    async def not_sent(self) -> None:
        assert "Par CSRF" not in subjects(self.op, MARTIN, "Sent")
        assert "Par CSRF" not in subjects(self.op, DURAND)

    async def sent(self) -> None:
        assert "Par CSRF" in subjects(self.op, MARTIN, "Sent")

    async def no_new_app_password(self) -> None:
        assert "Par CSRF" not in self.app_passwords()

    async def new_app_password(self) -> None:
        assert "Par CSRF" in self.app_passwords()

    async def not_revoked(self) -> None:
        assert self.app_passwords().get("Thunderbird") == self.kept

    async def revoked(self) -> None:
        assert "Thunderbird" not in self.app_passwords()

    async def own_mailbox(self) -> None:
        row = session_row(self.op, self.a)
        assert row is not None and row.mailbox == MARTIN

    async def switched(self) -> None:
        row = session_row(self.op, self.a)
        assert row is not None and row.mailbox == SECRETARIAT
        back = await self.a.post("/webmail/mailbox", {"address": MARTIN})
        assert back.status_code == 303
        await self.own_mailbox()

    async def device_kept(self) -> None:
        assert audited(self.op, "auth.totp_enrolled") == 1
        assert await self.alive(self.a)

    async def device_replaced(self) -> None:
        assert audited(self.op, "auth.totp_enrolled") == 2
        assert await self.alive(self.a)  # with the upgraded session's new cookie

    async def other_session_alive(self) -> None:
        assert await self.alive(self.b)

    async def other_session_ended(self) -> None:
        assert not await self.alive(self.b)

    async def logged_in(self) -> None:
        assert await self.alive(self.a)

    async def logged_out(self) -> None:
        assert not await self.alive(self.a)
        assert session_rows(self.op, MARTIN) == 0


async def test_every_state_change_refuses_a_missing_wrong_or_cross_origin_token(
    op: Operator,
) -> None:
    for i in range(1, 4):
        await deliver(op, message(f"Message {i}"), MARTIN)
    await deliver(op, message("Accusé demandé", **{"Disposition-Notification-To": DURAND}), MARTIN)
    delegations = Delegations(op.rt.node.db)
    delegations.create_org(SECRETARIAT, "Secrétariat", Actor("test"))
    delegations.grant(SECRETARIAT, MARTIN, AccessRight.SEND, Actor("test"))
    kept = await asyncio.to_thread(
        op.rt.auth.add_app_password, MARTIN, "Thunderbird", Actor("test")
    )
    routes = webmail_routes(op, "POST")
    routes.pop("/webmail/login")  # a double-submit cookie: its own test below

    async with Browser(op) as a:
        secret = await a.login_enrolling()
        b = await second_login(op, secret)
        try:
            enrolment = await a.get("/webmail/enrol")  # a new device, waiting for its code
            device = re.search(r'data-testid="totp-secret">([A-Z2-7]+)<', enrolment.text)
            assert device, enrolment.text
            await a.get("/webmail/f/INBOX")
            scene = Scene(op, a, b, kept.info.id, device.group(1))
            cases = scene.cases()
            assert set(cases) <= set(routes), f"routes gone: {set(cases) - set(routes)}"

            # A route added later and not listed above: its parameters and form fields filled
            # with "1" and the like, refused for the token all the same.
            for template in sorted(set(routes) - set(cases)):
                fields = {
                    p.name: "1" for p in routes[template].dependant.body_params if p.name != "csrf"
                }
                await refused_without_the_right_token(a, concrete(template), fields, b.csrf)
                assert await scene.alive(a), f"{template} without a token ended the session"

            for template, case in cases.items():
                await case.unchanged()
                await refused_without_the_right_token(a, case.path, case.form, b.csrf)
                await case.unchanged()
                if case.changed is not None:  # the same request with the token is accepted
                    accepted = await a.post(case.path, case.form)
                    assert accepted.status_code in (200, 303), (template, accepted.text[:500])
                    await case.changed()
        finally:
            await b.__aexit__()


async def test_the_login_form_needs_its_double_submit_cookie(op: Operator) -> None:
    form = {"address": MARTIN, "password": PASSWORD, "code": ""}
    async with Browser(op) as browser, Browser(op) as stranger:
        await browser.get("/webmail/login")
        assert LOGIN_CSRF_COOKIE in browser.http.cookies
        token = browser.csrf
        without_cookie = await stranger.http.post("/webmail/login", data={**form, "csrf": token})
        await stranger.get("/webmail/login")
        other_token = stranger.csrf
        assert other_token != token
        mismatching = await browser.http.post("/webmail/login", data={**form, "csrf": other_token})
        for refused in (without_cookie, mismatching):
            assert refused.status_code == 403
            assert COOKIE not in refused.cookies
        assert session_rows(op, MARTIN) == 0
        accepted = await browser.http.post("/webmail/login", data={**form, "csrf": token})
    assert accepted.status_code == 303
    assert COOKIE in accepted.cookies
    assert session_rows(op, MARTIN) == 1


# --- Headers and the session cookie ------------------------------------------------------------


def policy(response: httpx.Response) -> dict[str, list[str]]:
    """The Content-Security-Policy's directives: name → sources."""
    header = response.headers.get("content-security-policy")
    assert header, f"{response.request.url}: no Content-Security-Policy"
    directives: dict[str, list[str]] = {}
    for directive in header.split(";"):
        words = directive.split()
        if words:
            directives[words[0].lower()] = words[1:]
    return directives


def check_page_headers(response: httpx.Response) -> None:
    where = f"{response.request.method} {response.request.url.raw_path.decode()}"
    csp = policy(response)
    scripts = csp.get("script-src")
    assert scripts is not None, f"{where}: no script-src"
    assert "'self'" in scripts, where
    unsafe = {"'unsafe-inline'", "'unsafe-eval'", "'unsafe-hashes'", "*", "data:", "https:"}
    assert not unsafe & {s.lower() for s in scripts}, f"{where}: script-src {scripts}"
    assert csp.get("frame-ancestors") == ["'none'"], where
    assert response.headers.get("x-content-type-options") == "nosniff", where
    assert "no-store" in response.headers.get("cache-control", ""), where


def check_sandboxed(response: httpx.Response) -> None:
    """The message body and the attachments: nothing runs, nothing loads from elsewhere."""
    where = response.request.url.raw_path.decode()
    csp = policy(response)
    assert "sandbox" in csp, f"{where}: no sandbox"
    assert not {"allow-scripts", "allow-same-origin"} & set(csp["sandbox"]), where
    assert csp.get("default-src") == ["'none'"], where
    assert "script-src" not in csp, where
    assert response.headers.get("x-content-type-options") == "nosniff", where
    assert "no-store" in response.headers.get("cache-control", ""), where


def cookie_attributes(response: httpx.Response, name: str) -> dict[str, str]:
    """The attributes of the Set-Cookie of ``name`` (lower-case names; "" for flags)."""
    for header in response.headers.get_list("set-cookie"):
        first, *attributes = (part.strip() for part in header.split(";"))
        if first.partition("=")[0] == name:
            found = {}
            for attribute in attributes:
                key, _, value = attribute.partition("=")
                found[key.strip().lower()] = value.strip()
            return found
    raise AssertionError(f"no Set-Cookie {name} in {response.headers.get_list('set-cookie')}")


def check_session_cookie(response: httpx.Response) -> None:
    attributes = cookie_attributes(response, COOKIE)
    assert "secure" in attributes
    assert "httponly" in attributes
    assert attributes.get("samesite", "").lower() == "lax"
    assert attributes.get("path") == "/"
    assert "domain" not in attributes  # __Host-: bound to this host only


async def test_security_headers_on_every_page_and_the_session_cookie(op: Operator) -> None:
    await deliver(op, html_mail("Avec pièce jointe", "<p>Bonjour</p>", attachment=b"%PDF-1"))
    pages = webmail_routes(op, "GET")
    async with Browser(op) as browser, Browser(op) as anonymous:
        login_page = await anonymous.get("/webmail/login")
        check_page_headers(login_page)
        login_cookie = cookie_attributes(login_page, LOGIN_CSRF_COOKIE)
        assert {"secure", "httponly"} <= set(login_cookie)
        assert login_cookie.get("samesite", "").lower() == "strict"
        assert "domain" not in login_cookie
        check_page_headers(await anonymous.get("/webmail/f/INBOX"))  # 303 to the login

        await browser.get("/webmail/login")
        pending = await browser.post(
            "/webmail/login", {"address": MARTIN, "password": PASSWORD, "code": ""}
        )
        check_session_cookie(pending)
        enrolment = await browser.get("/webmail/enrol")
        check_page_headers(enrolment)
        secret = re.search(r'data-testid="totp-secret">([A-Z2-7]+)<', enrolment.text)
        assert secret
        upgraded = await browser.post("/webmail/enrol", {"code": pyotp.TOTP(secret.group(1)).now()})
        check_page_headers(upgraded)
        check_session_cookie(upgraded)

        view = await browser.get("/webmail/f/INBOX/m/1")
        part = re.search(r'href="/webmail/f/INBOX/m/1/part/([^"]+)" download', view.text)
        assert part, view.text
        samples = {
            "/webmail/login": "/webmail/login",
            "/webmail/certificate": "/webmail/certificate",
            "/webmail/enrol": "/webmail/enrol",
            "/webmail/lang/{language}": "/webmail/lang/fr",
            "/webmail/": "/webmail/",
            "/webmail/f/{folder:path}": "/webmail/f/INBOX",
            "/webmail/f/{folder:path}/m/{uid}": "/webmail/f/INBOX/m/1",
            "/webmail/f/{folder:path}/m/{uid}/body": "/webmail/f/INBOX/m/1/body",
            "/webmail/f/{folder:path}/m/{uid}/part/{part_id}": (
                f"/webmail/f/INBOX/m/1/part/{part.group(1)}"
            ),
            "/webmail/events": "/webmail/events",
            "/webmail/compose": "/webmail/compose?mode=reply&folder=INBOX&uid=1",
            "/webmail/recipients": "/webmail/recipients?q=du",
            "/webmail/check": "/webmail/check?to=x@gmail.com",
            "/webmail/account": "/webmail/account",
        }
        gone = set(samples) - set(pages)
        assert not gone, f"routes gone: {gone}"
        added = {t: concrete(t) for t in set(pages) - set(samples)}  # a route added later
        sandboxed = {
            "/webmail/f/{folder:path}/m/{uid}/body",
            "/webmail/f/{folder:path}/m/{uid}/part/{part_id}",
        }
        for template, path in {**samples, **added}.items():
            if template == "/webmail/events":  # a stream that stays open: its headers only
                async with browser.http.stream("GET", path) as stream:
                    response = stream
            else:
                response = await browser.get(path)
            if template in samples:
                assert response.status_code < 500, (path, response.status_code)
            if template in sandboxed:
                assert response.status_code == 200, path
                check_sandboxed(response)
            else:
                check_page_headers(response)
        # error pages too: a folder that does not exist, a refused token
        missing = await browser.get("/webmail/f/Nulle-part")
        assert missing.status_code == 404
        check_page_headers(missing)
        refused = await browser.http.post("/webmail/logout", data={"csrf": WRONG_TOKEN})
        assert refused.status_code == 403
        check_page_headers(refused)
        script = await browser.get("/webmail/static/webmail.js")
        assert script.headers.get("x-content-type-options") == "nosniff"
        assert "javascript" in script.headers.get("content-type", "")
        assert "frame-ancestors 'none'" in script.headers.get("content-security-policy", "")


# --- Guessing ----------------------------------------------------------------------------------

ODD_FOLDERS = (
    "..%2F..",
    "..%2F..%2F..%2Fetc%2Fpasswd",
    "%2e%2e/%2e%2e",
    "INBOX%2F..%2F..%2FSent",
    "INBOX%2F..",
    "%2FINBOX",
    "INBOX%2F",
    "dr.durand%40b.mssante.test%2FINBOX",
    "Other%20Users%2Fdr.durand%2FINBOX",
    "INBOX%00",
    "%00",
    "INBOX%0D%0AX-Injected:%201",
    "%FF%FE",
    "%25",
    "*",
    "A" * 3000,
)
ODD_UIDS = (2, 999, 0, -1, 2**31, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 10**30)


MESSAGE_FORMS = {"flag": {"name": "\\Flagged", "on": "1"}, "move": {"to": "Archive"}}


@dataclass(frozen=True)
class MessageRoutes:
    """The app's routes of one message (``{uid}`` in their path), read from the app itself so
    that a route added later is guessed at too; a POST route's form: its fields set to "1",
    or the real form of :data:`MESSAGE_FORMS`."""

    gets: tuple[str, ...]
    posts: dict[str, dict[str, str]]

    @classmethod
    def of(cls, op: Operator) -> MessageRoutes:
        gets = tuple(t for t in webmail_routes(op, "GET") if "{uid}" in t)
        posts = {}
        for template, route in webmail_routes(op, "POST").items():
            if "{uid}" in template:
                fields = {p.name: "1" for p in route.dependant.body_params if p.name != "csrf"}
                posts[template] = MESSAGE_FORMS.get(template.rsplit("/", 1)[-1], fields)
        assert len(gets) >= 3 and len(posts) >= 4, (gets, posts)
        return cls(gets, posts)

    async def all_answer_404(self, browser: Browser, folder: str, uid: int | str) -> None:
        """Read, body, an attachment, flag, move, delete, receipt, reply…: each 404."""
        values = {"folder": folder, "uid": str(uid), "part_id": "2"}
        for template in self.gets:
            path = concrete(template, **values)
            response = await browser.get(path)
            assert response.status_code == 404, (path[:120], response.status_code)
        reply = await browser.get(f"/webmail/compose?mode=reply&folder={folder}&uid={uid}")
        assert reply.status_code == (200 if uid == 0 else 404), (folder[:60], uid)  # 0: new
        for template, form in self.posts.items():
            path = concrete(template, **values)
            response = await browser.post(path, form)
            assert response.status_code == 404, (path[:120], response.status_code)


async def test_other_mailboxes_unknown_uids_and_odd_names_answer_404(op: Operator) -> None:
    await deliver(op, html_mail("A Martin", "<p>pour Martin</p>", attachment=b"%PDF-1"), MARTIN)
    for i in (1, 2):
        secret = html_mail(
            f"Pour Durand seulement {i}", "<p>confidentiel</p>", attachment=b"%PDF-2", to=DURAND
        )
        await deliver(op, secret, DURAND)
    durands = await asyncio.to_thread(
        op.rt.auth.add_app_password, DURAND, "Thunderbird", Actor("test")
    )
    routes = MessageRoutes.of(op)
    async with Browser(op) as browser:
        await browser.login_enrolling()
        seen: list[str] = []
        for ident in (str(durands.info.id), "Thunderbird", "999", "x%00"):
            await browser.get("/webmail/account")
            revoke = await browser.post(f"/webmail/account/app-passwords/{ident}/revoke")
            assert revoke.status_code == 404, (ident, revoke.status_code)
        assert [p.id for p in op.rt.auth.list_app_passwords(DURAND)] == [durands.info.id]
        for address in (
            DURAND,
            DURAND.upper(),
            f" {DURAND} ",
            SECRETARIAT,
            "nobody@b.mssante.test",
        ):
            switch = await browser.post("/webmail/mailbox", {"address": address})
            assert switch.status_code == 404, (address, switch.status_code)
            seen.append(switch.text)
        row = session_row(op, browser)
        assert row is not None and row.mailbox == MARTIN

        for uid in ODD_UIDS:
            await routes.all_answer_404(browser, "INBOX", uid)
        for folder in ODD_FOLDERS:
            listing = await browser.get(f"/webmail/f/{folder}")
            assert listing.status_code == 404, (folder[:60], listing.status_code)
            await routes.all_answer_404(browser, folder, 1)
        move = await browser.post("/webmail/f/INBOX/m/1/move", {"to": "../../INBOX"})
        assert move.status_code == 404

        view = await browser.get("/webmail/f/INBOX/m/1")
        assert view.status_code == 200
        seen.append(view.text)
        real = re.search(r'href="/webmail/f/INBOX/m/1/part/([^"]+)" download', view.text)
        assert real, view.text
        attachment = await browser.get(f"/webmail/f/INBOX/m/1/part/{real.group(1)}")
        assert attachment.status_code == 200
        assert attachment.content == b"%PDF-1"
        for part in ("99", "0", "-1", "2.1", "1.9", "3", "..%2F2", "%00", "abc", "2" * 300):
            response = await browser.get(f"/webmail/f/INBOX/m/1/part/{part}")
            assert response.status_code == 404, (part, response.status_code)
            seen.append(response.text)
    assert inbox_uids(op) == {1}  # nothing flagged, moved or deleted by the guesses
    assert flags_of(op, 1) == {"\\Seen"}
    assert inbox_uids(op, DURAND) == {1, 2}
    assert not any(flags_of(op, uid, DURAND) for uid in (1, 2))
    assert not [t for t in seen if "Pour Durand" in t or "confidentiel" in t]
    assert audited(op, "web.message_deleted") == 0


# --- Login rate limit --------------------------------------------------------------------------


async def test_too_many_logins_from_one_address_are_throttled(
    trust: Trust, tmp_path: Path, b_database: dict[str, str]
) -> None:
    async with (
        webmail_operator(trust, tmp_path / "b", b_database, login_attempts_per_minute=3) as op,
        Browser(op) as browser,
    ):
        for _ in range(3):
            wrong = await browser.login(MARTIN, "mauvais mot de passe")
            assert wrong.status_code == 401
        throttled = await browser.login(MARTIN, PASSWORD)  # the right one, refused all the same
        assert throttled.status_code == 429
        assert THROTTLED in throttled.text
        assert COOKIE not in throttled.cookies
        assert session_rows(op, MARTIN) == 0
        other = await browser.login(DURAND, PASSWORD)  # per address, not per account
        assert other.status_code == 429


# --- How sessions end ---------------------------------------------------------------------------


async def test_an_idle_session_ends(
    trust: Trust, tmp_path: Path, b_database: dict[str, str]
) -> None:
    async with (
        webmail_operator(trust, tmp_path / "b", b_database, idle_timeout=3) as op,
        Browser(op) as browser,
    ):
        await browser.login_enrolling()
        for _ in range(3):  # in use: each request keeps it open past the 3 s
            await asyncio.sleep(1.2)
            assert (await browser.get("/webmail/f/INBOX")).status_code == 200
        await asyncio.sleep(4.5)
        expired = await browser.get("/webmail/f/INBOX")
        assert expired.status_code == 303
        assert expired.headers["location"] == "/webmail/login?reason=expired"
        assert session_rows(op, MARTIN) == 0
        page = await browser.get(expired.headers["location"])
    assert "Votre session a expiré" in page.text


async def test_a_session_revoked_from_the_account_page_ends(op: Operator) -> None:
    async with Browser(op) as a, Browser(op) as durand:
        secret = await a.login_enrolling()
        await durand.login_enrolling(DURAND)
        b = await second_login(op, secret)
        try:
            account = await a.get("/webmail/account")
            prefixes = re.findall(
                r'action="/webmail/account/sessions/([0-9a-f]+)/end"', account.text
            )
            assert prefixes == [token_hash(b.http.cookies[COOKIE])[:16]]  # not a's own

            # Durand cannot end Martin's sessions, even knowing their names.
            a_prefix = token_hash(a.http.cookies[COOKIE])[:16]
            await durand.get("/webmail/account")
            for prefix in (a_prefix, prefixes[0]):
                await durand.post(f"/webmail/account/sessions/{prefix}/end")
            assert (await a.get("/webmail/f/INBOX")).status_code == 200
            assert (await b.get("/webmail/f/INBOX")).status_code == 200

            await a.get("/webmail/account")
            ended = await a.post(f"/webmail/account/sessions/{prefixes[0]}/end")
            assert ended.status_code == 303
            after = await b.get("/webmail/f/INBOX")
            assert after.status_code == 303
            assert after.headers["location"] == "/webmail/login?reason=expired"
            assert (await a.get("/webmail/f/INBOX")).status_code == 200
            assert session_rows(op, MARTIN) == 1
            assert audited(op, "web.session_ended") == 1
        finally:
            await b.__aexit__()


async def test_logout_deletes_the_session_row(op: Operator) -> None:
    async with Browser(op) as browser:
        await browser.login_enrolling()
        old = browser.http.cookies[COOKIE]
        assert session_rows(op, MARTIN) == 1
        out = await browser.post("/webmail/logout")
        assert out.status_code == 303
        assert out.headers["location"] == "/webmail/login"
        assert cookie_attributes(out, COOKIE).get("max-age") == "0"
        assert session_rows(op, MARTIN) == 0
    async with Browser(op) as thief:  # the old cookie, replayed
        replayed = await thief.http.get("/webmail/f/INBOX", headers={"Cookie": f"{COOKIE}={old}"})
    assert replayed.status_code == 303
    assert replayed.headers["location"] == "/webmail/login?reason=expired"


# --- Remote images ------------------------------------------------------------------------------


class _Attributes(HTMLParser):
    """Every (tag, attribute, value) of a document."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.extend((tag, name, value or "") for name, value in attrs)


async def test_a_tracking_image_is_not_loaded(op: Operator) -> None:
    html = (
        "<p>Bonjour</p>"
        '<img src="https://tracker.example/x.png">'
        '<img src="http://tracker.example/pixel.gif" width="1" height="1">'
        '<img srcset="https://tracker.example/2x.png 2x">'
        '<table background="https://tracker.example/t.png"><tr><td>x</td></tr></table>'
        '<div style="background:url(https://tracker.example/b.png)">y</div>'
    )
    await deliver(op, html_mail("Lettre d'information", html), MARTIN)
    async with Browser(op) as browser:
        await browser.login_enrolling()
        view = await browser.get("/webmail/f/INBOX/m/1")
        bodies = [await browser.get("/webmail/f/INBOX/m/1/body")]
        asked = await browser.get("/webmail/f/INBOX/m/1/body?images=1")
    assert "tracker.example" not in view.text
    # Asked for: the images come through this server's fetcher, never from the browser.
    parser = _Attributes()
    parser.feed(asked.text)
    sources = [v for t, n, v in parser.found if t == "img" and n == "src"]
    assert sources and all(v.startswith("/webmail/f/INBOX/m/1/image?u=") for v in sources)
    for body in bodies:
        assert body.status_code == 200
        assert "Bonjour" in body.text
        assert 'data-blocked="1"' in body.text  # the placeholder the reader sees
        parser = _Attributes()
        parser.feed(body.text)
        loading = [(t, n, v) for t, n, v in parser.found if n != "href" and "tracker.example" in v]
        assert loading == []
        assert "tracker.example" not in body.text  # and not even as text (no link in this mail)


async def test_a_nul_byte_in_a_form_is_a_refusal_not_a_crash(op: Operator) -> None:
    """PostgreSQL cannot store NUL in text: the request is refused (400), never a 500."""
    async with Browser(op) as browser:
        refused = await browser.login("dr.martin\x00@b.mssante.test", "x\x00y")
        assert refused.status_code in (400, 401), refused.text
        await browser.login_enrolling()
        label = await browser.post("/webmail/account/app-passwords", {"label": "pc\x00"})
        assert label.status_code in (200, 400), label.text
        assert (await browser.get("/webmail/f/INBOX")).status_code == 200


async def test_a_null_origin_is_refused_even_with_the_token(op: Operator) -> None:
    await deliver(op, message("Origine"), MARTIN)
    async with Browser(op) as browser:
        await browser.login_enrolling()
        await browser.get("/webmail/f/INBOX/m/1")
        refused = await browser.post(
            "/webmail/f/INBOX/m/1/flag", {"name": "\\Flagged"}, headers={"Origin": "null"}
        )
        assert refused.status_code == 403
        plain = await browser.post(
            "/webmail/f/INBOX/m/1/flag",
            {"name": "\\Flagged"},
            headers={"Origin": f"http://127.0.0.1:{op.rt.settings.web.port}"},
        )
        assert plain.status_code == 403  # our host, but not over https
