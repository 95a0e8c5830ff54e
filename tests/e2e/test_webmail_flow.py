"""The issue's browser acceptance, in the demo's trust space and a real Chromium: Hélène
(hopital-nord) logs in to her webmail, finds Paul (cabinet-sud) in the directory, writes to him
with an attachment and a read-receipt request; Paul logs in to his operator's webmail through
the Pro Santé Connect stand-in (OIDC), reads it,
downloads the attachment and sends the receipt; Hélène's Sent view then says "lu".

Debian's Chromium, driven by Playwright (never ``playwright install``). Screenshots of each step
go to ``test-output/webmail-flow/`` (or ``$MSSANTE_TEST_OUTPUT``)."""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyotp
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from mssante import demo
from support import output_folder

Space = tuple[demo.DemoLayout, dict[str, Any]]
CHROMIUM = "/usr/bin/chromium"
WAIT = 90.0  # seconds: mail between operators, the directory's copy refreshed every 5 s


@pytest.fixture
def chromium() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} missing: apt-get install chromium (scripts/test.sh does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


class Steps:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.count = 0

    def shot(self, page: Page, name: str) -> None:
        self.count += 1
        page.screenshot(path=str(self.folder / f"{self.count:02d}-{name}.png"), full_page=True)


def log_in(page: Page, webmail: str, account: dict[str, str], steps: Steps, who: str) -> None:
    """The first login: password, then the enrolment of a TOTP device (QR code and key)."""
    page.goto(webmail)
    page.wait_for_url(re.compile(r"/webmail/login"))
    page.get_by_label("Adresse MSSanté").fill(account["address"])
    page.get_by_label("Mot de passe").fill(account["password"])
    steps.shot(page, f"{who}-login")
    page.get_by_role("button", name="Se connecter").click()
    page.wait_for_url(re.compile(r"/webmail/enrol"))
    secret = page.get_by_test_id("totp-secret").inner_text()
    steps.shot(page, f"{who}-enrol")
    page.get_by_label("Code à 6 chiffres").fill(pyotp.TOTP(secret).now())
    page.get_by_role("button", name="Valider").click()
    page.wait_for_url(re.compile(r"/webmail/f/INBOX"))


def log_in_with_pro_sante_connect(
    page: Page, webmail: str, account: dict[str, str], steps: Steps, who: str
) -> None:
    """Through the local provider standing in for Pro Santé Connect (code flow with PKCE)."""
    page.goto(webmail)
    page.wait_for_url(re.compile(r"/webmail/login"))
    page.get_by_test_id("oidc").click()
    page.wait_for_url(re.compile(r"/authorize"))
    page.get_by_label("Identifiant (adresse)").fill(account["address"])
    page.get_by_label("Mot de passe").fill(account["password"])
    steps.shot(page, f"{who}-pro-sante-connect")
    page.locator("button[value=password]").click()
    page.wait_for_url(re.compile(r"/webmail/f/INBOX"))


def revoke_every_grant(state: Path) -> None:
    with sqlite3.connect(state) as db:
        db.execute(
            "UPDATE grants SET revoked_at = ?, revoked_reason = 'test' WHERE revoked_at IS NULL",
            (time.time(),),
        )


def until(check: Callable[[], bool], what: str, page: Page) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if check():
            return
        page.wait_for_timeout(1000)
    raise AssertionError(f"{what}: not within {WAIT:.0f} s")


def test_a_letter_with_attachment_and_read_receipt_between_operators(
    trust_space: Space, chromium: Browser
) -> None:
    layout, info = trust_space
    demo.start(layout, info, log_dir=layout.root / "logs")
    demo.wait_until_operators_hold_the_list(info, layout)
    nord, sud = info["operators"]
    helene, paul = nord["accounts"][0], sud["accounts"][0]
    steps = Steps(output_folder("webmail-flow"))

    sender = chromium.new_context(ignore_https_errors=True, locale="fr-FR")
    page = sender.new_page()
    log_in(page, nord["webmail"], helene, steps, "helene")
    steps.shot(page, "helene-inbox")

    # Compose: Paul found through the directory's type-ahead, then a file and a receipt.
    page.get_by_role("link", name="Nouveau message").first.click()
    to = page.get_by_label("À", exact=True)

    def suggested() -> bool:
        to.fill("")
        to.press_sequentially("Durand", delay=20)
        try:
            page.locator(f'.suggestion[data-address="{paul["address"]}"]').wait_for(timeout=2000)
        except Exception:
            return False
        return True

    until(suggested, "Paul in the directory's type-ahead", page)
    steps.shot(page, "helene-type-ahead")
    page.locator(f'.suggestion[data-address="{paul["address"]}"]').click()
    assert paul["address"] in to.input_value()
    page.get_by_label("Objet").fill("Lettre de liaison")
    page.get_by_label("Message", exact=True).fill(
        "Cher confrère,\nVeuillez trouver ci-joint le compte rendu."
    )
    page.get_by_label(re.compile("Pièces jointes")).set_input_files(
        {"name": "compte-rendu.pdf", "mimeType": "application/pdf", "buffer": b"%PDF-1.4 demo"}
    )
    page.get_by_label("Demander un accusé de lecture").check()
    steps.shot(page, "helene-compose")
    page.get_by_role("button", name="Envoyer").click()
    page.wait_for_url(re.compile(r"/webmail/f/Sent"))
    steps.shot(page, "helene-sent")

    # Paul, at the other operator.
    reader = chromium.new_context(ignore_https_errors=True, locale="fr-FR")
    paul_page = reader.new_page()
    log_in_with_pro_sante_connect(paul_page, sud["webmail"], paul, steps, "paul")

    def arrived() -> bool:
        paul_page.reload()
        return paul_page.get_by_role("link", name="Lettre de liaison").count() > 0

    until(arrived, "the letter in Paul's inbox", paul_page)
    steps.shot(paul_page, "paul-inbox")
    paul_page.get_by_role("link", name="Lettre de liaison").click()
    body = paul_page.frame_locator("iframe[data-testid=body]")
    body.get_by_text("Veuillez trouver ci-joint").wait_for()
    with paul_page.expect_download() as download:
        paul_page.get_by_role("link", name="compte-rendu.pdf").click()
    assert Path(download.value.path()).read_bytes() == b"%PDF-1.4 demo"
    steps.shot(paul_page, "paul-read")
    paul_page.get_by_role("button", name="Envoyer l'accusé de lecture").click()
    paul_page.get_by_text("Accusé de lecture envoyé.").wait_for()
    steps.shot(paul_page, "paul-receipt-sent")

    # Back in Hélène's Sent view: Paul's status becomes "lu".
    page.get_by_role("link", name="Lettre de liaison").click()
    status = page.locator(f'[data-testid=status]:has-text("{paul["address"]}")')

    def read() -> bool:
        page.reload()
        return status.get_attribute("data-status") == "read"

    until(read, "the read receipt in Hélène's Sent view", page)
    assert "lu" in status.inner_text()
    steps.shot(page, "helene-sent-status-lu")

    # Paul's grant revoked at the provider (as Pro Santé Connect would on a lost card): his
    # webmail session ends at a request after the next recheck (oidc.recheck_seconds, 5 s here).
    paul_page.goto(sud["webmail"] + "f/INBOX")
    assert "/webmail/f/INBOX" in paul_page.url  # still open: the token holds
    revoke_every_grant(layout.root / "oidc" / "data" / "oidc" / "state.db")

    def sent_to_login() -> bool:
        paul_page.goto(sud["webmail"] + "f/INBOX")
        return "/webmail/login" in paul_page.url

    until(sent_to_login, "Paul's session ended after his token was revoked", paul_page)
    steps.shot(paul_page, "paul-token-revoked")
    sender.close()
    reader.close()
