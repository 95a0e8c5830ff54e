"""IMAP AUTHENTICATE EXTERNAL (RFC 4422 App. A) with a CPS-like person certificate presented in
the TLS handshake: the card's idNat opens the professional's mailbox; a revoked card, a card of
someone without an account here, or no certificate at all get NO [AUTHENTICATIONFAILED]."""

from __future__ import annotations

import asyncio
import base64
import ssl
from pathlib import Path

from imap_fixtures import MARTIN, Operator, Raw, Trust

MARTIN_ID_NAT = "810001234565"  # the fixture's account for MARTIN


def _tls(operator: Operator, card: tuple[Path, Path] | None) -> ssl.SSLContext:
    ctx = operator.tls()
    if card is not None:
        ctx.load_cert_chain(*card)
    return ctx


def _external(operator: Operator, card: tuple[Path, Path] | None, authzid: str = "") -> list[bytes]:
    raw = Raw(operator.imaps_port, _tls(operator, card))
    try:
        capability = raw.command("c", "CAPABILITY")
        raw.send(b"a AUTHENTICATE EXTERNAL\r\n")
        assert raw.line().startswith(b"+")
        raw.send(base64.b64encode(authzid.encode()) + b"\r\n")
        answer = raw.until("a")
        if answer[-1].startswith(b"a OK"):
            answer += raw.command("s", "SELECT INBOX")
        return capability + answer
    finally:
        raw.close()


def _card(trust: Trust, id_nat: str, last: str) -> tuple[Path, Path]:
    issued = trust.pki.issue_person(id_nat, last, "Test")
    return issued.fullchain, issued.key


async def test_a_person_card_opens_the_professionals_mailbox(
    operator: Operator, trust: Trust
) -> None:
    card = _card(trust, MARTIN_ID_NAT, "Martin")
    lines = await asyncio.to_thread(_external, operator, card)
    assert any(b"AUTH=EXTERNAL" in line for line in lines), lines
    assert any(line.startswith(b"a OK") for line in lines), lines
    assert lines[-1].startswith(b"s OK"), lines
    events = operator.audit_events()
    logins = [
        c for e, _, c in events if e == "auth.login_succeeded" and c.get("protocol") == "imap"
    ]
    assert logins and logins[-1]["method"] == "certificate"
    assert logins[-1]["id_nat"] == MARTIN_ID_NAT
    opened = [a for e, a, _ in events if e == "imap.mailbox_opened"]
    assert opened[-1] == MARTIN


async def test_refused_cards_and_no_card(operator: Operator, trust: Trust) -> None:
    revoked = trust.pki.issue_person(MARTIN_ID_NAT, "Martin", "Test")
    trust.pki.revoke(revoked.cert, "keyCompromise")
    operator.rt.sync.crls.refresh()  # the operator fetches the new CRL
    stranger = _card(trust, "810009999995", "Inconnu")
    cases = {
        "revoked": (revoked.fullchain, revoked.key),
        "stranger": stranger,
        "none": None,
    }
    for name, card in cases.items():
        lines = await asyncio.to_thread(_external, operator, card)
        assert lines[-1].startswith(b"a NO [AUTHENTICATIONFAILED]"), (name, lines)
    failed = [
        c
        for e, _, c in operator.audit_events()
        if e == "auth.login_failed" and c.get("method") == "certificate"
    ]
    reasons = [c["reason"] for c in failed]
    assert len(failed) == 3, reasons
    assert reasons[0] == "revoked" and reasons[2] == "no_certificate", reasons


async def test_external_is_not_offered_before_tls(operator: Operator) -> None:
    def run() -> tuple[bytes, list[bytes]]:
        raw = Raw(operator.imap_port)
        try:
            return raw.greeting, raw.command("a", "AUTHENTICATE EXTERNAL")
        finally:
            raw.close()

    greeting, answer = await asyncio.to_thread(run)
    assert b"EXTERNAL" not in greeting
    assert answer[-1].startswith((b"a NO", b"a BAD")), answer
