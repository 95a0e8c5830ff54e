"""Login: TLS first (LOGINDISABLED on 143 until STARTTLS), implicit TLS on 993, wrong
passwords audited and slowed down, and a session never opens someone else's mailbox."""

from __future__ import annotations

import asyncio
import base64
import time

import imapclient
import pytest
from imapclient.exceptions import LoginError

from imap_fixtures import DURAND, MARTIN, PASSWORD, Operator, Raw, message
from mssante.audit.events import Actor


def _plain(raw: Raw, tag: str, authzid: str, login: str, password: str) -> list[bytes]:
    """AUTHENTICATE PLAIN (RFC 4616), the response sent after the server's "+" challenge."""
    raw.send(tag.encode() + b" AUTHENTICATE PLAIN\r\n")
    challenge = raw.line()
    if not challenge.startswith(b"+"):
        return [challenge]
    raw.send(base64.b64encode(f"{authzid}\0{login}\0{password}".encode()) + b"\r\n")
    return raw.until(tag)


def _caps(line: bytes) -> set[bytes]:
    return set(line.split(b"[CAPABILITY ", 1)[1].split(b"]", 1)[0].split())


async def test_login_refused_before_starttls_then_accepted(operator: Operator) -> None:
    def scenario() -> list[list[bytes]]:
        raw = Raw(operator.imap_port)
        try:
            before = _caps(raw.greeting)
            assert {b"STARTTLS", b"LOGINDISABLED"} <= before
            assert not any(c.startswith(b"AUTH=") for c in before)
            refused = [
                raw.command("a1", f"LOGIN {MARTIN} {PASSWORD}"),
                raw.command("a2", "AUTHENTICATE PLAIN"),
                raw.command("a3", "SELECT INBOX"),
            ]
            assert raw.command("a4", "STARTTLS")[-1].startswith(b"a4 OK")
            raw.starttls(operator.tls())
            after = raw.command("a5", "CAPABILITY")
            caps = set(after[0].split()[2:])
            assert (
                b"AUTH=PLAIN" in caps and b"LOGINDISABLED" not in caps and b"STARTTLS" not in caps
            )
            assert raw.command("a6", f"LOGIN {MARTIN} {PASSWORD}")[-1].startswith(b"a6 OK")
            assert raw.command("a7", "SELECT INBOX")[-1].startswith(b"a7 OK")
            return refused
        finally:
            raw.close()

    refused = await asyncio.to_thread(scenario)
    assert refused[0][-1].startswith(b"a1 NO") and b"LOGINDISABLED" in refused[0][-1]
    assert refused[1][-1].startswith(b"a2 NO")
    assert refused[2][-1].startswith(b"a3 BAD")  # wrong state: not authenticated
    events = operator.audit_events()
    cleartext = [ctx for event, _, ctx in events if event == "imap.refused_cleartext"]
    assert [c["command"] for c in cleartext] == ["LOGIN", "AUTHENTICATE"]
    assert ("auth.login_succeeded", MARTIN) in [(e, a) for e, a, _ in events]
    assert ("imap.mailbox_opened", MARTIN) in [(e, a) for e, a, _ in events]


async def test_implicit_tls_offers_login_at_once(operator: Operator) -> None:
    def scenario() -> tuple[set[bytes], list[bytes]]:
        raw = Raw(operator.imaps_port, operator.tls())
        try:
            return _caps(raw.greeting), _plain(raw, "a", "", MARTIN, PASSWORD)
        finally:
            raw.close()

    caps, answer = await asyncio.to_thread(scenario)
    assert {b"AUTH=PLAIN", b"AUTH=LOGIN"} <= caps
    assert b"STARTTLS" not in caps and b"LOGINDISABLED" not in caps
    assert answer[-1].startswith(b"a OK")
    logged_in = _caps(answer[-1])  # RFC 9051 §6.2.2: capabilities again after login
    assert {b"IDLE", b"UIDPLUS", b"MOVE", b"SPECIAL-USE", b"APPENDLIMIT=26214400"} <= logged_in


async def test_wrong_password_is_audited_and_slowed_down(operator: Operator) -> None:
    def attempt(password: str) -> float:
        start = time.monotonic()
        client = imapclient.IMAPClient(
            "127.0.0.1", operator.imaps_port, ssl=True, ssl_context=operator.tls(), timeout=30
        )
        try:
            client.login(MARTIN, password)
        except LoginError as exc:
            assert "AUTHENTICATIONFAILED" in str(exc)
        finally:
            client.shutdown()
        return time.monotonic() - start

    first = await asyncio.to_thread(attempt, "pas-le-bon")
    second = await asyncio.to_thread(attempt, "toujours-pas")
    third = await asyncio.to_thread(attempt, PASSWORD)  # right, but still made to wait
    assert second >= 0.5 > first - 0.45  # LoginThrottle: 0.5 s after one failure
    assert third >= 1.0  # then 1 s after two
    events = operator.audit_events()  # audited by the one authentication layer
    failed = [(actor, ctx) for event, actor, ctx in events if event == "auth.login_failed"]
    assert [actor for actor, _ in failed] == [MARTIN, MARTIN]
    assert all(ctx["peer"] == "127.0.0.1" and ctx["protocol"] == "imap" for _, ctx in failed)
    assert [e for e, _, _ in events].count("auth.login_succeeded") == 1
    assert [e for e, _, _ in events].count("imap.mailbox_opened") == 1


async def test_a_session_never_opens_another_mailbox(operator: Operator) -> None:
    await asyncio.to_thread(operator.deliver, message("Pour Martin seulement"), MARTIN)

    def scenario() -> tuple[list[bytes], list[bytes], int]:
        raw = Raw(operator.imaps_port, operator.tls())
        try:  # Durand asks, as SASL authorization identity, for Martin's mailbox
            refused = _plain(raw, "a", MARTIN, DURAND, PASSWORD)
            accepted = _plain(raw, "b", DURAND, DURAND, PASSWORD)
        finally:
            raw.close()
        with operator.client(DURAND) as client:
            exists = client.select_folder("INBOX")[b"EXISTS"]
            with pytest.raises(imapclient.exceptions.IMAPClientError):
                client.select_folder(f"../{MARTIN}/INBOX")
        return refused, accepted, exists

    refused, accepted, exists = await asyncio.to_thread(scenario)
    assert refused[-1].startswith(b"a NO") and b"AUTHORIZATIONFAILED" in refused[-1]
    assert accepted[-1].startswith(b"b OK")
    assert exists == 0
    denied = [(a, ctx) for e, a, ctx in operator.audit_events() if e == "imap.refused_access"]
    assert [a for a, _ in denied] == [DURAND]


async def test_an_app_password_opens_imap(operator: Operator) -> None:
    """Mail clients may use an app password (docs/auth.md), through the same layer."""
    new = await asyncio.to_thread(
        operator.rt.auth.add_app_password, MARTIN, "Thunderbird", Actor("test")
    )

    def scenario() -> int:
        with operator.client(MARTIN, new.password) as client:
            return int(client.select_folder("INBOX")[b"EXISTS"])

    assert await asyncio.to_thread(scenario) == 0
    opened = [c for e, _, c in operator.audit_events() if e == "auth.login_succeeded"]
    assert opened[-1]["app_password"] == "Thunderbird" and opened[-1]["protocol"] == "imap"
