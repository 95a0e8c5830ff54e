"""Fuzzing the real servers (issue 12): hypothesis-made SMTP sessions, IMAP sessions with
literals, and MIME trees stored then read through IMAP and the webmail's reader.

Fixed budget and derandomized (the same examples on every run: CI's verdict never depends on
luck or on the machine's speed); longer, random runs: ``fuzz/README.md``. Each example is one
connection; what must hold for every one of them:

- no traceback, no ``SERVERBUG`` and no exception text reaches the client;
- the server answers or closes, and afterwards an honest client is served normally (checked
  every few examples and at the end: login, FETCH, submission);
- no exception escaped a session (the audit log has no entry naming one).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest
from fuzz_strategies import imap_session, messages, smtp_session
from hypothesis import HealthCheck, given, settings

from imap_fixtures import MARTIN, PASSWORD, Operator, Raw, Trust, message, running_operator
from mssante.config import MimeSettings
from mssante.mail.reading import parse_message

# CI's budget; MSSANTE_FUZZ_EXAMPLES raises it for a longer run (fuzz/README.md).
EXAMPLES = int(os.environ.get("MSSANTE_FUZZ_EXAMPLES", "60"))
_SETTINGS = settings(
    max_examples=EXAMPLES,
    derandomize=os.environ.get("MSSANTE_FUZZ_RANDOM") != "1",
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
_LEAKS = (b"Traceback", b"SERVERBUG", b"500 Error: (", b"Exception", b'File "/')
_SILENCE = 0.3  # seconds without a byte after which what the server said is examined


def _hostile_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Thousands of malformed logins from one address would be slowed down by the throttle,
    as they should: the fuzz run gives the address room (the throttle has its own tests)."""
    monkeypatch.setenv("MSSANTE_AUTH__THROTTLE_ADDRESS_ALLOWANCE", "1000000")
    monkeypatch.setenv("MSSANTE_AUTH__ARGON2_TIME_COST", "1")
    monkeypatch.setenv("MSSANTE_AUTH__ARGON2_MEMORY_KIB", "8")


def _tls(op: Operator) -> ssl.SSLContext:
    ctx = op.tls()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def _exchange(op: Operator, port: int, payload: list[bytes], prelude: list[bytes]) -> bytes:
    """Connect over TLS, send ``prelude`` then each of ``payload``, and return everything the
    server said until it closed or fell silent."""
    raw = socket.create_connection(("127.0.0.1", port), 10)
    sock = _tls(op).wrap_socket(raw)
    sock.settimeout(_SILENCE)
    heard = bytearray()
    try:
        heard += _drain(sock)
        # pipelined, as a hostile client would (and one wait for the answers, not ten); if
        # the server closed meanwhile, what it said is examined
        with contextlib.suppress(OSError):
            sock.sendall(b"".join([*prelude, *payload]))
        heard += _drain(sock)
    finally:
        sock.close()
    return bytes(heard)


def _drain(sock: ssl.SSLSocket) -> bytes:
    out = bytearray()
    while True:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return bytes(out)
        except OSError:
            return bytes(out)
        if not chunk:
            return bytes(out)
        out += chunk


def _no_leak(heard: bytes) -> None:
    for leak in _LEAKS:
        assert leak not in heard, heard[-2000:]


def _honest_client_is_served(op: Operator) -> None:
    """Login, SELECT, FETCH over IMAP; login and MAIL FROM on submission."""
    client = op.client()
    try:
        client.select_folder("INBOX")
        uids = client.search(["ALL"])
        if uids:
            assert client.fetch(uids[:1], ["RFC822.SIZE"])
    finally:
        client.logout()
    import smtplib

    smtp = smtplib.SMTP_SSL("127.0.0.1", op.rt.settings.smtp.submissions_port, context=_tls(op))
    try:
        smtp.login(MARTIN, PASSWORD)
        assert smtp.mail(MARTIN)[0] == 250
    finally:
        smtp.quit()


def _no_escaped_exception(op: Operator) -> None:
    escaped = [
        (event, context)
        for event, _, context in op.audit_events()
        if "error" in context and event != "smtp.tls_failed"
    ]
    assert escaped == []


def _run(op: Operator, body: Callable[[], None]) -> None:
    body()
    _honest_client_is_served(op)
    _no_escaped_exception(op)


async def test_fuzzed_smtp_sessions(
    trust: Trust, tmp_path: Path, b_database: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SMTP command lines on submission over implicit TLS, before and after a login."""
    _hostile_env(monkeypatch)
    async with running_operator(trust, tmp_path / "b", b_database) as op:
        port = op.rt.settings.smtp.submissions_port
        counter = [0]
        from base64 import b64encode

        login = b"AUTH PLAIN " + b64encode(f"\0{MARTIN}\0{PASSWORD}".encode()) + b"\r\n"

        @_SETTINGS
        @given(session=smtp_session)
        def fuzz(session: list[bytes]) -> None:
            counter[0] += 1
            prelude = [b"EHLO fuzz.test\r\n"] + ([login] if counter[0] % 2 else [])
            _no_leak(_exchange(op, port, session, prelude))
            if counter[0] % 20 == 0:
                _honest_client_is_served(op)

        await asyncio.to_thread(_run, op, fuzz)
    assert counter[0] >= min(EXAMPLES, 40)


async def test_fuzzed_imap_sessions(
    trust: Trust, tmp_path: Path, b_database: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """IMAP command lines and literals on 993, before and after a login, a folder selected."""
    _hostile_env(monkeypatch)
    async with running_operator(trust, tmp_path / "b", b_database, login_timeout=5) as op:
        await asyncio.to_thread(op.deliver, message("Compte rendu"))
        port = op.imaps_port
        counter = [0]
        login = [f"l LOGIN {MARTIN} {PASSWORD}\r\n".encode(), b"s SELECT INBOX\r\n"]

        @_SETTINGS
        @given(session=imap_session)
        def fuzz(session: list[bytes]) -> None:
            counter[0] += 1
            _no_leak(_exchange(op, port, session, login if counter[0] % 2 else []))
            if counter[0] % 20 == 0:
                _honest_client_is_served(op)

        await asyncio.to_thread(_run, op, fuzz)
    assert counter[0] >= min(EXAMPLES, 40)


async def test_fuzzed_mime_trees_are_read_everywhere(
    trust: Trust, tmp_path: Path, b_database: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """MIME trees stored as they are (a message from before the limits, or from a peer that
    got through): BODYSTRUCTURE, ENVELOPE, sections and SEARCH answer without BYE, and the
    webmail's reader reads each without an exception."""
    _hostile_env(monkeypatch)
    async with running_operator(trust, tmp_path / "b", b_database) as op:
        port = op.imaps_port
        limits = MimeSettings()
        counter = [0]
        reads = [
            "FETCH * (BODYSTRUCTURE ENVELOPE FLAGS RFC822.SIZE)",
            "FETCH * (BODY.PEEK[] BODY.PEEK[1] BODY.PEEK[1.MIME] BODY.PEEK[2.1])",
            "FETCH * (BINARY.PEEK[1] BODY.PEEK[HEADER.FIELDS (SUBJECT)] BODY.PEEK[TEXT])",
            "SEARCH TEXT compte",
            "SEARCH BODY x HEADER Subject y",
        ]

        @_SETTINGS
        @given(raw=messages)
        def fuzz(raw: bytes) -> None:
            counter[0] += 1
            parse_message(raw, limits)  # the webmail's reader: no exception
            op.deliver(raw)
            client = Raw(port, _tls(op), timeout=60)  # answers read to their tag: no guessing
            try:
                assert client.command("l", f"LOGIN {MARTIN} {PASSWORD}")[-1].startswith(b"l OK")
                assert client.command("s", "SELECT INBOX")[-1].startswith(b"s OK")
                for i, read in enumerate(reads):
                    answer = client.command(f"f{i}", read)
                    heard = b"".join(answer)
                    _no_leak(heard)
                    assert not any(line.startswith(b"* BYE") for line in answer), heard[-2000:]
                    assert answer[-1].startswith(f"f{i} OK".encode()), heard[-2000:]
            finally:
                client.close()

        await asyncio.to_thread(_run, op, fuzz)
    assert counter[0] >= min(EXAMPLES, 40)
