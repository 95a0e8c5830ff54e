"""The CPS-like card logs in to the webmail: TLS client authentication on the web listener
itself (decision 0012), the certificate verified and mapped like IMAP's EXTERNAL (decision
0008). No card, a revoked card or someone else's card: the login page again, nothing opened."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from imap_fixtures import MARTIN, Operator, Trust
from webhelpers import Browser, webmail_operator

MARTIN_ID_NAT = "810001234565"  # the fixture's account for MARTIN


@pytest.fixture
async def op(trust: Trust, tmp_path: Path, b_database: dict[str, str]) -> AsyncIterator[Operator]:
    async with webmail_operator(trust, tmp_path / "b", b_database) as running:
        yield running


def card(trust: Trust, id_nat: str, last: str) -> tuple[Path, Path]:
    issued = trust.pki.issue_person(id_nat, last, "Test")
    return issued.fullchain, issued.key


async def test_the_card_opens_the_professionals_mailbox(op: Operator, trust: Trust) -> None:
    async with Browser(op, cert=card(trust, MARTIN_ID_NAT, "Martin")) as browser:
        opened = await browser.get("/webmail/certificate")
        assert opened.status_code == 303, opened.text
        inbox = await browser.get("/webmail/f/INBOX")
    assert inbox.status_code == 200
    assert MARTIN in inbox.text
    sessions = [c for e, _, c in op.audit_events() if e == "web.session_opened"]
    assert sessions[-1]["method"] == "certificate"


async def test_no_card_or_an_unknown_card_opens_nothing(op: Operator, trust: Trust) -> None:
    async with Browser(op) as browser:
        refused = await browser.get("/webmail/certificate")
        assert refused.status_code == 401
        assert "Aucune carte reconnue" in refused.text
        assert (await browser.get("/webmail/f/INBOX")).status_code == 303
    async with Browser(op, cert=card(trust, "810009999995", "Inconnu")) as browser:
        assert (await browser.get("/webmail/certificate")).status_code == 401
        assert (await browser.get("/webmail/f/INBOX")).status_code == 303


async def test_a_revoked_card_is_refused(op: Operator, trust: Trust) -> None:
    revoked = trust.pki.issue_person(MARTIN_ID_NAT, "Martin", "Revoquee")
    trust.pki.revoke(revoked.cert, "keyCompromise")
    op.rt.sync.crls.refresh()
    async with Browser(op, cert=(revoked.fullchain, revoked.key)) as browser:
        assert (await browser.get("/webmail/certificate")).status_code == 401
