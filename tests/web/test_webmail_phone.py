"""The webmail on a phone's screen and with the keyboard, in Debian's Chromium: no sideways
scrolling, every form control named for a screen reader, the skip link first in the tab order,
and the language switch. Screenshots in ``test-output/webmail-phone/``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pyotp
import pytest
from playwright.async_api import Page, async_playwright

from imap_fixtures import MARTIN, PASSWORD, Operator, Trust, message
from support import output_folder
from webhelpers import webmail_operator

CHROMIUM = "/usr/bin/chromium"
PHONE = {"width": 375, "height": 740}

# Every visible input, select, textarea and button must have an accessible name.
UNNAMED = """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
  .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
  .map(e => e.outerHTML.slice(0, 80))"""
OVERFLOW = "() => document.documentElement.scrollWidth - window.innerWidth"


@pytest.fixture
async def op(trust: Trust, tmp_path: Path, b_database: dict[str, str]) -> AsyncIterator[Operator]:
    async with webmail_operator(trust, tmp_path / "b", b_database) as running:
        yield running


async def check_page(page: Page, folder: Path, name: str) -> None:
    assert await page.evaluate(UNNAMED) == [], name
    assert await page.evaluate(OVERFLOW) <= 0, f"{name}: wider than the phone"
    await page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


async def test_a_phone_reads_and_writes(op: Operator) -> None:
    import asyncio

    await asyncio.to_thread(op.deliver, message("Résultats du laboratoire"), MARTIN)
    folder = output_folder("webmail-phone")
    base = f"https://127.0.0.1:{op.rt.settings.web.port}/webmail/"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = await browser.new_context(
            ignore_https_errors=True, viewport=PHONE, is_mobile=True, locale="fr-FR"
        )
        page = await context.new_page()
        await page.goto(base)
        await check_page(page, folder, "01-login")
        # The address field has the focus: the keyboard alone logs in.
        assert await page.evaluate("document.activeElement.id") == "address"
        await page.keyboard.type(MARTIN)
        await page.keyboard.press("Tab")
        await page.keyboard.type(PASSWORD)
        await page.keyboard.press("Enter")
        await page.wait_for_url("**/webmail/enrol")
        await check_page(page, folder, "02-enrol")
        secret = await page.get_by_test_id("totp-secret").inner_text()
        await page.get_by_label("Code à 6 chiffres").fill(pyotp.TOTP(secret).now())
        await page.keyboard.press("Enter")
        await page.wait_for_url("**/webmail/f/INBOX")
        await check_page(page, folder, "03-inbox")
        await page.keyboard.press("Tab")  # the skip link comes first
        assert await page.evaluate("document.activeElement.className") == "skip"
        await page.get_by_role("link", name="Résultats du laboratoire").click()
        await page.frame_locator("iframe[data-testid=body]").get_by_text("Cordialement").wait_for()
        await check_page(page, folder, "04-read")
        await page.goto(base + "compose")
        await check_page(page, folder, "05-compose")
        await page.get_by_role("link", name="English").click()
        await page.wait_for_url("**/webmail/compose")
        assert await page.get_by_role("button", name="Send").count() == 1
        await check_page(page, folder, "06-compose-en")
        await browser.close()
