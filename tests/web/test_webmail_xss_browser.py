"""The XSS corpus (``data/xss.txt``, one payload a line) sent as HTML mail to Martin and read
in a real Chromium, driven by Playwright (Debian's ``/usr/bin/chromium``; never
``playwright install``): no dialog opens, no script sets the ``window.__xss`` canary in the page
or in any frame, no request leaves 127.0.0.1, no window opens (docs/webmail.md "Security").

Two walls stand between a mail and the page: the sanitiser (``web/sanitize.py``) and the
sandboxed iframe whose body has a CSP of its own (``web/mail.py``). This test sees only what
passes both, as a person would.

- One mail per batch of about 20 payloads keeps the test fast. Each payload is followed by
  :data:`CLOSER` (it ends a comment, a raw-text element, foreign content…) and a marker
  ``<b>⟦n⟧</b>``; the test checks in the browser that every marker is a live element, so no
  payload hid the payloads after it from the test. The few that swallow what follows even so
  (``<plaintext>``…) go last in their mail.
- Requests are seen when the page makes them, before the body's CSP refuses them: a remote
  or ``javascript:`` URL the sanitiser let through fails the test even though the CSP would
  have stopped it; so does a console message saying the sandbox or the CSP stopped a script
  (:data:`STOPPED`). Each wall must hold on its own.
- The iframe's sandbox has no ``allow-modals``: a script that did run in it could not open an
  ``alert()``. So the corpus is sent a second time with ``alert(1)`` replaced by
  ``window.__xss=1`` (the canary mails), and ``window.__xss`` is read in every frame:
  Playwright evaluates through the DevTools protocol, which works in a frame whose own scripts
  are disabled.

Screenshots of each read view (and a log of the console) go to the test's ``tmp_path``, or to
``test-output/webmail-xss/`` when ``MSSANTE_TEST_OUTPUT`` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import make_msgid
from pathlib import Path
from urllib.parse import urlsplit

import pyotp
import pytest
from playwright.async_api import Browser as Chromium
from playwright.async_api import (
    BrowserContext,
    ConsoleMessage,
    Dialog,
    Error,
    Page,
    Request,
    async_playwright,
)

from imap_fixtures import Operator, Trust
from mssante.web.sanitize import sanitize_html
from support import output_folder
from webhelpers import MARTIN, PASSWORD, webmail_operator

CHROMIUM = "/usr/bin/chromium"
CORPUS = Path(__file__).parent / "data" / "xss.txt"
BATCH = 20
HOST = "127.0.0.1"
# After each payload: whatever context it opened is closed, so the next one is parsed as markup.
CLOSER = (
    "\"'>--></script></style></textarea></title></xmp></noscript></noembed></noframes>"
    "</iframe></template></select></option></svg></math></audio></video></object></form></a>"
)
MARKER = re.compile(r"⟦(\d+)⟧")
SETTLE_MS = 500  # after the body's load event: image errors, autofocus, toggles fire by then
EVALUATE_TIMEOUT = 5.0  # seconds: Playwright's evaluate has none; a busy frame would hang it
# What Chromium logs when the second wall (the sandbox, the body's CSP) stopped something the
# first (the sanitiser) let through: a failure too, each wall must hold on its own.
STOPPED = ("Blocked script execution", "Content Security Policy", "Ignored call to", "sandboxed")
READ_TIMEOUT = 60.0  # seconds for one read view, so that a page a payload keeps busy (a loop of
# dialogs and focus events, say) fails the test instead of hanging it


@dataclass(frozen=True)
class Mail:
    subject: str
    payloads: tuple[tuple[int, str], ...]  # (line number in the corpus, payload)

    def html(self) -> str:
        parts = [f"<p>{self.subject}</p>"]
        for number, payload in self.payloads:
            parts.append(f"{payload}{CLOSER}<b>⟦{number}⟧</b>\n")
        return "".join(parts)

    def raw(self) -> bytes:
        msg = EmailMessage()
        msg["From"] = "Dr Paul Durand <dr.durand@b.mssante.test>"
        msg["To"] = MARTIN
        msg["Subject"] = self.subject
        msg["Date"] = "Wed, 25 Nov 2026 10:00:00 +0100"
        msg["Message-ID"] = make_msgid(domain="test")
        msg.set_content("Version texte.\n")
        msg.add_alternative(self.html(), subtype="html")
        return msg.as_bytes(policy=SMTP)


def corpus() -> list[tuple[int, str]]:
    lines = CORPUS.read_text(encoding="utf-8").splitlines()
    return [(n, line) for n, line in enumerate(lines, start=1) if line.strip()]


def swallows(payload: str) -> bool:
    """Whether ``payload`` hides what follows it even after :data:`CLOSER` (an unclosed
    ``<plaintext>``…). Only to lay the mails out: the browser checks the markers."""
    probe = sanitize_html(f"{payload}{CLOSER}<b>⟦0⟧</b>", cid_url=lambda _: None).html
    return "<b>⟦0⟧</b>" not in probe


def mails(name: str, payloads: list[tuple[int, str]]) -> list[Mail]:
    """About :data:`BATCH` payloads a mail; a payload that swallows the rest goes last."""
    last = [p for p in payloads if swallows(p[1])]
    rest = [p for p in payloads if not swallows(p[1])]
    groups = [rest[i : i + BATCH] for i in range(0, len(rest), BATCH)]
    for i, payload in enumerate(last):
        if i < len(groups):
            groups[i].append(payload)
        else:
            groups.append([payload])
    total = len(groups)
    return [Mail(f"XSS {name} {i}/{total}", tuple(g)) for i, g in enumerate(groups, start=1)]


@dataclass
class Watch:
    """What the browser did that a mail must not make it do."""

    dialogs: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    popups: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)

    def attach(self, context: BrowserContext, page: Page) -> None:
        context.on("dialog", self.on_dialog)  # any page's, popups' included
        context.on("request", self.on_request)
        context.on("page", self.on_page)
        page.on("console", self.on_console)

    async def on_dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(
            f"{dialog.type}({dialog.message!r}) on {dialog.page and dialog.page.url}"
        )
        with contextlib.suppress(Error):  # already gone: its page navigated away or closed
            await dialog.dismiss()

    def on_request(self, request: Request) -> None:
        url = urlsplit(request.url)
        remote = url.scheme in ("http", "https", "ws", "wss") and url.hostname != HOST
        if remote or url.scheme in ("javascript", "vbscript"):
            self.requests.append(request.url)

    def on_page(self, page: Page) -> None:
        self.popups.append(page.url)

    def on_console(self, message: ConsoleMessage) -> None:
        self.console.append(f"{message.type}: {message.text}")


@pytest.fixture
async def op(trust: Trust, tmp_path: Path, b_database: dict[str, str]) -> AsyncIterator[Operator]:
    async with webmail_operator(trust, tmp_path / "b", b_database) as running:
        yield running


@pytest.fixture
async def chromium() -> AsyncIterator[Chromium]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} missing: apt-get install chromium (scripts/test.sh does)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            await browser.close()


def artefacts(tmp_path: Path) -> Path:
    return output_folder("webmail-xss") if os.environ.get("MSSANTE_TEST_OUTPUT") else tmp_path


async def log_in(page: Page, base: str) -> None:
    """The real login form, then the enrolment of a device as a first login does."""
    await page.goto(f"{base}/webmail/login")
    await page.fill("#address", MARTIN)
    await page.fill("#password", PASSWORD)
    await page.click("form[action='/webmail/login'] button[type=submit]")
    await page.wait_for_url(re.compile(r"/webmail/enrol$"))
    secret = await page.inner_text("[data-testid=totp-secret]")
    await page.fill("#code", pyotp.TOTP(secret.strip()).now())
    await page.click("form[action='/webmail/enrol'] button[type=submit]")
    await page.wait_for_url(re.compile(r"/webmail/f/INBOX$"))


async def canaries(page: Page) -> dict[str, str]:
    """``window.__xss`` in the page and in every frame, where it is not undefined."""
    found: dict[str, str] = {}
    for frame in page.frames:
        try:
            value = await asyncio.wait_for(
                frame.evaluate("typeof window.__xss === 'undefined' ? null : String(window.__xss)"),
                EVALUATE_TIMEOUT,
            )
        except Error as exc:  # a frame that cannot be read counts as a failure too
            value = f"unreadable: {exc.message}"
        except TimeoutError:
            value = f"unreadable: no answer in {EVALUATE_TIMEOUT:.0f} s"
        if value is not None:
            found[frame.url or "about:blank"] = value
    return found


async def read(page: Page, base: str, uid: int, mail: Mail, shot: Path) -> list[str]:
    """Open the read view of ``uid``; what is wrong with it."""
    await page.goto(f"{base}/webmail/f/INBOX/m/{uid}")
    handle = await page.wait_for_selector("iframe[data-testid=body]")
    frame = await handle.content_frame()
    assert frame is not None
    await frame.wait_for_load_state("load")
    await page.wait_for_timeout(SETTLE_MS)
    await page.screenshot(path=str(shot), full_page=True)
    problems: list[str] = []
    if await page.title() != f"{mail.subject} · MSSanté":
        problems.append(f"the read view of {mail.subject} did not stay: {page.url}")
    text = await frame.inner_text("body")
    if mail.subject not in text:
        problems.append(
            f"{mail.subject}: the body frame shows nothing (the test would see nothing)"
        )
    live = {int(n) for t in await frame.locator("b").all_inner_texts() for n in MARKER.findall(t)}
    numbers = [n for n, _ in mail.payloads]
    hidden = [n for n in numbers[:-1] if n not in live]  # the last one may swallow its marker
    if hidden:
        problems.append(f"{mail.subject}: payloads {hidden} were hidden by the one before them")
    for where, value in (await canaries(page)).items():
        problems.append(f"{mail.subject}: window.__xss = {value} in {where}")
    return problems


@pytest.mark.slow
async def test_the_xss_corpus_runs_nothing_in_chromium(
    op: Operator, chromium: Chromium, tmp_path: Path
) -> None:
    payloads = corpus()
    canary = [(n, p.replace("alert(1)", "window.__xss=1")) for n, p in payloads if "alert(1)" in p]
    batches = mails("corpus", payloads) + mails("canari", canary)
    assert len(payloads) >= 100 and len(batches) <= 20
    for mail in batches:  # UIDs 1, 2… in this order
        await asyncio.to_thread(op.deliver, mail.raw(), MARTIN)
    base = f"https://{HOST}:{op.rt.settings.web.port}"
    folder = artefacts(tmp_path)

    context = await chromium.new_context(ignore_https_errors=True, locale="fr-FR")
    await context.add_init_script("window.__xss = undefined")
    page = await context.new_page()
    page.set_default_timeout(20_000)
    watch = Watch()
    watch.attach(context, page)
    problems: list[str] = []
    try:
        await log_in(page, base)
        for uid, mail in enumerate(batches, start=1):
            shot = folder / f"{uid:02d}-{mail.subject.replace(' ', '-').replace('/', '-')}.png"
            try:
                async with asyncio.timeout(READ_TIMEOUT):
                    problems += await read(page, base, uid, mail, shot)
            except (TimeoutError, Error) as exc:
                problems.append(f"{mail.subject}: the read view did not settle ({exc!r:.200})")
                break  # the page is wedged: what it did is reported below
    finally:
        (folder / "console.log").write_text("\n".join(watch.console) + "\n", encoding="utf-8")
        await context.close()
    problems += [f"dialog: {d}" for d in watch.dialogs]
    problems += [f"request off {HOST}: {r}" for r in watch.requests]
    problems += [f"a window opened: {p}" for p in watch.popups]
    problems += [f"console: {c}" for c in watch.console if any(s in c for s in STOPPED)]
    assert problems == [], "\n".join(problems)
