"""The memory guard of issue 12: while 50 hostile connections of each kind are open (each from
an address of its own, so the per-address caps do not stop them: what is measured is what an
admitted hostile connection costs), an honest client's login, FETCH and submission are served
and the operator's memory stays bounded.

Kinds: a stranger announcing a 25 MB APPEND literal before login; a logged-in client whose
APPEND grows literal after literal; an IMAP connection that says nothing; an SMTP connection on
submission that says nothing.

The bound: before issue 12, twenty pre-login APPENDs took the process from 139 to 819 MB. Now
no literal is read before it is accepted, so 200 hostile connections cost their TLS buffers
(asyncio's 256 KiB read buffer, a command line) and objects: the bound allows 1 MiB each.
Whether the honest client is *fast* belongs in bench/; here it must be served (each step has
the clients' ordinary 20 s timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import smtplib
import socket
import ssl
from pathlib import Path

import pytest

from imap_fixtures import MARTIN, PASSWORD, Operator, Trust, message, running_operator

HOSTILE_EACH = 50


def _rss() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _connect(op: Operator, port: int, source: str, tls: bool = True) -> ssl.SSLSocket:
    sock = socket.create_connection(("127.0.0.1", port), 20, (source, 0))
    wrapped = op.tls().wrap_socket(sock) if tls else sock
    wrapped.recv(4096)  # the greeting
    return wrapped  # type: ignore[return-value]


def _open_hostile(op: Operator) -> list[socket.socket]:
    held: list[socket.socket] = []
    sources = iter(f"127.0.{1 + i // 200}.{10 + i % 200}" for i in range(4 * HOSTILE_EACH))
    for _ in range(HOSTILE_EACH):  # a stranger's APPEND: refused without "+"
        sock = _connect(op, op.imaps_port, next(sources))
        sock.sendall(b"a APPEND INBOX {26214400}\r\n")
        sock.sendall(b"x" * 65536)  # sent all the same, without waiting for "+"
        held.append(sock)
    for _ in range(HOSTILE_EACH):  # a logged-in APPEND growing literal after literal
        sock = _connect(op, op.imaps_port, next(sources))
        sock.sendall(f"l LOGIN {MARTIN} {PASSWORD}\r\n".encode())
        sock.recv(4096)
        sock.sendall(b"a APPEND INBOX {20000000}\r\n")
        held.append(sock)
    for _ in range(HOSTILE_EACH):  # silent IMAP
        held.append(_connect(op, op.imaps_port, next(sources)))
    for _ in range(HOSTILE_EACH):  # silent SMTP submission (587, before STARTTLS)
        held.append(_connect(op, op.rt.settings.smtp.submission_port, next(sources), tls=False))
    return held


def _honest(op: Operator) -> None:
    client = op.client()
    try:
        client.select_folder("INBOX")
        assert client.fetch(client.search(["ALL"]), ["BODY.PEEK[]"])
    finally:
        client.logout()
    ctx = op.tls()
    smtp = smtplib.SMTP_SSL("127.0.0.1", op.rt.settings.smtp.submissions_port, context=ctx)
    try:
        smtp.login(MARTIN, PASSWORD)
        assert smtp.sendmail(MARTIN, [MARTIN], message("Honnete", From=MARTIN)) == {}
    finally:
        smtp.quit()


async def test_hostile_connections_leave_honest_clients_served_and_memory_bounded(
    trust: Trust, tmp_path: Path, b_database: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MSSANTE_AUTH__ARGON2_TIME_COST", "1")  # 50 logins of the same account
    monkeypatch.setenv("MSSANTE_AUTH__ARGON2_MEMORY_KIB", "8")
    caps = {"max_sessions_per_user_address": 100}
    async with running_operator(trust, tmp_path / "b", b_database, **caps) as op:
        await asyncio.to_thread(op.deliver, message("Compte rendu"))
        await asyncio.to_thread(_honest, op)  # warm: the first TLS handshake, login, FETCH
        before = _rss()
        held = await asyncio.to_thread(_open_hostile, op)
        try:
            await asyncio.sleep(0.5)  # the server has read what the hostile clients sent
            during = _rss()
            await asyncio.to_thread(_honest, op)
        finally:
            for sock in held:
                with contextlib.suppress(OSError):
                    sock.close()
        count = len(held)
    growth = during - before
    print(f"\n{count} hostile connections: RSS {before >> 20} -> {during >> 20} MiB")
    assert count == 4 * HOSTILE_EACH
    assert growth < count * (1 << 20), growth  # 1 MiB each at most; was 34 MB per APPEND
