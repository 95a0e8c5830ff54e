"""Hostile SMTP clients (issue 12, findings 2 and 9): connections beyond a listener's caps,
sessions beyond an account's, a flood of refused recipients, a failed TLS handshake's entry.

Each refusal is checked on the wire (its code), in the audit log (bounded: one entry per run,
not one per attempt), and against an honest client that is still served meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from pathlib import Path

import pytest
from operator_fixtures import MARTIN, PASSWORD, Space, running_operator_b
from smtp_helpers import DOMAIN_A, Client, client_context, message

from mssante.audit.log import iter_entries
from mssante.operator.runtime import OperatorRuntime

_WORKERS = ("pki.", "whitelist.")
_TOO_MANY = b"421 4.7.0 Too many connections, try again later\r\n"


def _entries(rt: OperatorRuntime) -> list[tuple[str, str, dict[str, str]]]:
    return [
        (e.event, e.actor, e.context)
        for e in iter_entries(rt.node.db)
        if not e.event.startswith(_WORKERS)
    ]


def _greeting(port: int, source: str = "127.0.0.1") -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(("127.0.0.1", port), 10, (source, 0))
    return sock, sock.makefile("rb").readline()


def _tls(space: Space) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cafile=str(space.pki.paths().root))
    return ctx


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(100) == b""
    except ConnectionError:
        return True


async def test_connections_beyond_a_listeners_caps_get_421(
    space: Space, tmp_path: Path, b_database: dict[str, str]
) -> None:
    """Finding 2: an address holds at most smtp.max_connections_per_address connections on
    each listener (the next get 421 4.7.0 and are closed; audited on the 1st and 10th); another
    address is still served; the listener's total holds for everyone."""
    caps = {"max_connections_per_address": 2, "max_connections": 4}
    async with running_operator_b(space, tmp_path / "b", b_database, **caps) as rt:
        port = rt.settings.smtp.submission_port

        def scenario() -> dict[str, object]:
            held = [_greeting(port)[0] for _ in range(2)]
            answers: dict[str, object] = {}
            try:
                refused = [_greeting(port) for _ in range(10)]
                answers["refused"] = [line for _, line in refused]
                answers["closed"] = all(_closed(sock) for sock, _ in refused)
                for sock, _ in refused:
                    sock.close()
                other, answers["other"] = _greeting(port, "127.0.0.2")
                held.append(other)
                inbound, answers["inbound"] = _greeting(rt.settings.smtp.inbound_port)
                held.append(inbound)  # each listener counts its own connections
                held.append(_greeting(port, "127.0.0.3")[0])  # four on submission: full
                full, answers["full"] = _greeting(port, "127.0.0.4")
                full.close()
            finally:
                for sock in held:
                    sock.close()
            return answers

        answers = await asyncio.to_thread(scenario)
        entries = _entries(rt)
    assert answers["refused"] == [_TOO_MANY] * 10 and answers["closed"]
    assert str(answers["other"]).startswith("b'220") and str(answers["inbound"]).startswith("b'220")
    assert answers["full"] == _TOO_MANY
    refused = [(actor, c) for e, actor, c in entries if e == "connection.refused"]
    assert refused == [
        (peer, {"peer": peer, "via": "submission", "reason": reason, "refused_so_far": n})
        for peer, reason, n in [
            ("127.0.0.1", "address_full", "1"),
            ("127.0.0.1", "address_full", "10"),
            ("127.0.0.4", "listener_full", "1"),
        ]
    ]
    assert not [e for e, _, _ in entries if e == "smtp.refused_protocol"]  # no other entry


async def test_an_account_holds_a_bounded_number_of_submission_sessions(
    space: Space, tmp_path: Path, b_database: dict[str, str]
) -> None:
    """smtp.max_sessions_per_user_address: the next login of the account from that address
    gets 454 4.7.0 (RFC 4954 §6) though its password was right; once a session ends the
    account logs in again. A session not logged in does not count against the account."""
    async with running_operator_b(
        space, tmp_path / "b", b_database, max_sessions_per_user_address=2
    ) as rt:
        port = rt.settings.smtp.submission_port

        def scenario() -> dict[str, tuple[int, str]]:
            clients = [Client(port, ssl_context=_tls(space)) for _ in range(3)]
            answers: dict[str, tuple[int, str]] = {}
            try:
                for i, client in enumerate(clients):
                    code, text = client.smtp.docmd("AUTH", "PLAIN " + _plain(MARTIN, PASSWORD))
                    answers[f"login{i}"] = (code, text.decode())
                clients[0].close()
                again = Client(port, ssl_context=_tls(space))
                clients.append(again)
                code, text = again.smtp.docmd("AUTH", "PLAIN " + _plain(MARTIN, PASSWORD))
                answers["again"] = (code, text.decode())
                answers["send"] = again.cmd(f"MAIL FROM:<{MARTIN}>")
            finally:
                for client in clients[1:]:
                    client.close()
            return answers

        answers = await asyncio.to_thread(scenario)
        entries = _entries(rt)
    assert answers["login0"][0] == 235 and answers["login1"][0] == 235
    assert answers["login2"] == (454, "4.7.0 Too many sessions of this account from this address")
    assert answers["again"][0] == 235 and answers["send"][0] == 250
    refused = [c for e, _, c in entries if e == "connection.refused"]
    assert refused == [
        {
            "peer": "127.0.0.1",
            "via": "submission",
            "reason": "user_address_full",
            "refused_so_far": "1",
        }
    ]


def _plain(login: str, password: str) -> str:
    import base64

    return base64.b64encode(f"\0{login}\0{password}".encode()).decode()


async def test_refused_recipients_are_audited_once_then_counted(
    space: Space, tmp_path: Path, b_database: dict[str, str]
) -> None:
    """Finding 9: 10,000 pipelined RCPT wrote 9,900 audit rows. Now the first refused
    recipient of a transaction is audited in detail and the others summed up in one
    ``smtp.recipients_refused`` entry; the message still goes to the good recipient."""
    async with running_operator_b(space, tmp_path / "b", b_database) as rt:

        def scenario() -> list[tuple[int, str]]:
            client = Client(rt.settings.smtp.submission_port, ssl_context=_tls(space))
            try:
                client.smtp.login(MARTIN, PASSWORD)
                replies = [client.cmd(f"MAIL FROM:<{MARTIN}>")]
                replies += [client.cmd(f"RCPT TO:<nobody{i}@b.mssante.test>") for i in range(8)]
                replies.append(client.cmd(f"RCPT TO:<{MARTIN}>"))
                replies.append(client.data(message(MARTIN, MARTIN, "A soi-meme")))
                return replies
            finally:
                client.close()

        replies = await asyncio.to_thread(scenario)
        entries = _entries(rt)
    assert [code for code, _ in replies] == [250] + [550] * 8 + [250, 250]
    detailed = [(a, c) for e, a, c in entries if e == "submission.refused_recipient"]
    assert len(detailed) == 1 and detailed[0][1]["reply"].startswith("550 5.1.1 nobody0@")
    summary = [c for e, _, c in entries if e == "smtp.recipients_refused"]
    assert summary == [
        {
            "peer": "127.0.0.1",
            "via": "submission",
            "refused": "8",
            "codes": "unknown_recipient:7",
            "sample": " ".join(f"nobody{i}@b.mssante.test" for i in range(1, 6)),
        }
    ]


async def test_a_flood_of_refused_commands_closes_the_session(
    space: Space, tmp_path: Path, b_database: dict[str, str]
) -> None:
    """Finding 9: 2,000 pipelined RCPT to unknown addresses. After smtp.max_refused_commands
    refusals the session is closed with 421 4.7.0: a bounded number of replies and of audit
    rows, nothing stored, and the next client is served."""
    async with running_operator_b(space, tmp_path / "b", b_database, max_refused_commands=20) as rt:

        def scenario() -> tuple[list[bytes], tuple[int, str]]:
            client = Client(rt.settings.smtp.submission_port, ssl_context=_tls(space))
            client.smtp.login(MARTIN, PASSWORD)
            client.cmd(f"MAIL FROM:<{MARTIN}>")
            sock = client.smtp.sock
            burst = b"".join(b"RCPT TO:<n%d@b.mssante.test>\r\n" % i for i in range(2000))
            with contextlib.suppress(OSError):  # closed while the burst was being written
                sock.sendall(burst)
            lines = []
            reader = sock.makefile("rb")
            try:
                while line := reader.readline():
                    lines.append(line)
            except OSError:
                pass
            client.smtp.close()
            honest = Client(rt.settings.smtp.submission_port, ssl_context=_tls(space))
            try:
                honest.smtp.login(MARTIN, PASSWORD)
                return lines, honest.cmd(f"MAIL FROM:<{MARTIN}>")
            finally:
                honest.close()

        lines, honest = await asyncio.to_thread(scenario)
        entries = _entries(rt)
        stored = rt.store.list_messages(MARTIN)
    assert len(lines) == 21 and all(line.startswith(b"550 5.1.1") for line in lines[:20])
    assert lines[-1] == b"421 4.7.0 Too many refused commands, closing connection\r\n"
    assert honest[0] == 250
    events = [e for e, _, _ in entries]
    assert events.count("submission.refused_recipient") == 1
    assert events.count("smtp.recipients_refused") == 1
    assert [c for e, _, c in entries if e == "smtp.too_many_errors"] == [
        {"peer": "127.0.0.1", "via": "submission", "refused": "20"}
    ]
    assert len(entries) < 12  # logins, the refusals above: not one row per RCPT
    assert stored == []


@pytest.mark.parametrize("bad", ["self_signed"])
async def test_a_failed_tls_handshake_is_audited_with_the_peer(
    space: Space, tmp_path: Path, b_database: dict[str, str], bad: str
) -> None:
    """Finding 9: smtp.tls_failed entries carried actor "?" and no peer address."""
    async with running_operator_b(space, tmp_path / "b", b_database) as rt:

        def attempt() -> None:
            ctx = client_context(space.bad[bad], ca=space.pki.paths().root)
            client = Client(rt.settings.smtp.inbound_port, ssl_context=ctx)
            try:
                client.cmd(f"MAIL FROM:<dr.durand@{DOMAIN_A}>")
            finally:
                client.close()

        with pytest.raises(OSError):
            await asyncio.to_thread(attempt)
        for _ in range(50):  # the server's side of the handshake ends after the client's
            failed = [(a, c) for e, a, c in _entries(rt) if e == "smtp.tls_failed"]
            if failed:
                break
            await asyncio.sleep(0.1)
    assert failed and failed[0][0] == "127.0.0.1" and failed[0][1]["peer"] == "127.0.0.1"
