"""IDLE (RFC 2177): a message stored by SMTP reaches an idling client at once (the in-process
bus), a change made by another process within the poll interval (the database poll), and a
flag change made by another session as an untagged FETCH."""

from __future__ import annotations

import asyncio
import smtplib
import threading
import time
from collections.abc import Callable

from imap_fixtures import DURAND, MARTIN, PASSWORD, Operator, message
from mssante.ops.mailstore import MailStore


def _idle_until(
    op: Operator, wanted: bytes, ready: threading.Event, timeout: float = 5.0
) -> tuple[float, list[object]]:
    """Select INBOX, IDLE, and return (the time ``wanted`` arrived, what arrived)."""
    with op.client() as client:
        client.select_folder("INBOX")
        client.idle()
        ready.set()
        seen: list[object] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            responses = client.idle_check(timeout=deadline - time.monotonic())
            arrived = time.monotonic()
            seen += responses
            if any(wanted in r for r in responses if isinstance(r, tuple)):
                seen += client.idle_check(timeout=0.3)  # what came with it (a FETCH FLAGS)
                client.idle_done()
                return arrived, seen
        client.idle_done()
        raise AssertionError(f"no {wanted!r} within {timeout} s: {seen}")


async def _measure(
    op: Operator, wanted: bytes, action: Callable[[], float]
) -> tuple[float, list[object]]:
    """Start an IDLE, run ``action`` (which returns its start time) once it idles."""
    ready = threading.Event()
    waiter = asyncio.create_task(asyncio.to_thread(_idle_until, op, wanted, ready))
    await asyncio.to_thread(ready.wait, 10)
    await asyncio.sleep(0.2)  # the server is inside IDLE, waiting
    started = await asyncio.to_thread(action)
    arrived, seen = await waiter
    return arrived - started, seen


def _submit_timed(op: Operator) -> float:
    """Submission by Durand to Martin; the time the message data started to go (after the
    TLS handshake, AUTH, MAIL and RCPT)."""
    with smtplib.SMTP("127.0.0.1", op.rt.settings.smtp.submission_port, timeout=20) as smtp:
        smtp.starttls(context=op.tls())
        smtp.login(DURAND, PASSWORD)
        smtp.mail(DURAND)
        smtp.rcpt(MARTIN)
        started = time.monotonic()
        code, _ = smtp.data(message("Urgent : résultats"))
        assert code == 250
        return started


async def test_smtp_delivery_reaches_an_idle_client_within_a_second(operator: Operator) -> None:
    latency, seen = await _measure(operator, b"EXISTS", lambda: _submit_timed(operator))
    print(f"\nIDLE latency, SMTP DATA sent -> EXISTS: {latency * 1000:.1f} ms")
    assert (1, b"EXISTS") in seen
    assert latency < 1.0


async def test_store_delivery_latency(operator: Operator) -> None:
    def deliver() -> float:
        started = time.monotonic()
        operator.deliver(message("Direct"))
        return started

    latency, _ = await _measure(operator, b"EXISTS", deliver)
    print(f"\nIDLE latency, MailStore.deliver -> EXISTS: {latency * 1000:.1f} ms")
    assert latency < 0.5


async def test_another_process_is_seen_through_the_poll(operator: Operator) -> None:
    """A store that does not publish on this process's bus (as another node would): the
    session's poll of UIDNEXT and the message count finds the new message."""
    elsewhere = MailStore(operator.rt.node.db, operator.rt.node.blobs)

    def deliver() -> float:
        started = time.monotonic()
        elsewhere.deliver(message("D'un autre processus"), [MARTIN])
        return started

    latency, _ = await _measure(operator, b"EXISTS", deliver)
    print(f"\nIDLE latency through the 1 s poll: {latency * 1000:.1f} ms")
    assert latency < operator.rt.settings.imap.poll_interval + 1.0


async def test_flags_set_by_another_session_are_pushed(operator: Operator) -> None:
    await asyncio.to_thread(operator.deliver, message("À lire"))

    def flag() -> float:
        with operator.client() as other:
            other.select_folder("INBOX")
            started = time.monotonic()
            other.add_flags([1], [b"\\Flagged"])
            return started

    latency, seen = await _measure(operator, b"FETCH", flag)
    fetches = [r for r in seen if isinstance(r, tuple) and r[1] == b"FETCH"]
    assert fetches and b"\\Flagged" in fetches[0][2][fetches[0][2].index(b"FLAGS") + 1]
    assert latency < 1.0
