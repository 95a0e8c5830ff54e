"""Hostile IMAP clients (issue 12, findings 2 and 3): literals before login, a command that
grows literal after literal, and connections beyond the listener's caps.

Each test states what a stranger or a logged-in attacker tries, and checks both the refusal
(its code, its audit entry, nothing read or stored) and that an honest client is still served.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from imap_fixtures import DURAND, MARTIN, PASSWORD, Operator, Raw, Trust, running_operator


def _raw_from(op: Operator, source: str) -> Raw:
    """A Raw client whose connection comes from ``source`` (another loopback address)."""
    raw = Raw.__new__(Raw)
    sock = socket.create_connection(("127.0.0.1", op.imaps_port), 10, (source, 0))
    raw.sock = op.tls().wrap_socket(sock)
    raw.file = raw.sock.makefile("rb")
    raw.greeting = raw.line()
    return raw


def _inbox_count(op: Operator) -> int:
    client = op.client()
    try:
        return int(client.folder_status("INBOX", ["MESSAGES"])[b"MESSAGES"])
    finally:
        client.logout()


async def test_a_stranger_cannot_make_the_server_read_a_literal(
    trust: Trust, tmp_path: Path, b_database: dict[str, str]
) -> None:
    """Finding 2: ``APPEND INBOX {26214400}`` before login got "+" and 25 MB were read. Now a
    literal larger than imap.max_preauth_literal_bytes gets BAD [TOOBIG] without "+"; a
    LITERAL+ one is refused and the connection closed; a LOGIN with a small literal works."""
    async with running_operator(trust, tmp_path / "b", b_database) as op:

        def scenario() -> dict[str, list[bytes] | bytes]:
            raw = Raw(op.imaps_port, op.tls())
            try:
                raw.send(b"a APPEND INBOX {26214400}\r\n")
                answers: dict[str, list[bytes] | bytes] = {"append": raw.until("a")}
                answers["alive"] = raw.command("b", "CAPABILITY")
                raw.send(b"c LOGIN {%d}\r\n" % len(MARTIN))  # a literal of a few bytes: "+"
                answers["plus"] = raw.line()
                raw.send(MARTIN.encode() + b" " + PASSWORD.encode() + b"\r\n")
                answers["login"] = raw.until("c")
            finally:
                raw.close()
            stranger = Raw(op.imaps_port, op.tls())
            try:
                stranger.send(b"d APPEND INBOX {26214400+}\r\n" + b"x" * 4096)
                answers["plus_literal"] = [stranger.line(), stranger.line()]
                answers["closed"] = stranger.line()
            finally:
                stranger.close()
            return answers

        answers = await asyncio.to_thread(scenario)
        events = op.audit_events()
        count = await asyncio.to_thread(_inbox_count, op)
    append = answers["append"]
    assert isinstance(append, list) and len(append) == 1  # no "+" before the BAD
    assert append[0].startswith(b"a BAD [TOOBIG]")
    assert answers["alive"][-1].startswith(b"b OK")  # type: ignore[union-attr]
    assert bytes(answers["plus"]).startswith(b"+")  # type: ignore[arg-type]
    assert answers["login"][-1].startswith(b"c OK")  # type: ignore[union-attr]
    first, bye = answers["plus_literal"]
    assert first.startswith(b"d BAD [TOOBIG]") and bye.startswith(b"* BYE [TOOBIG]")
    assert answers["closed"] == b""
    refused = [c for e, _, c in events if e == "imap.refused_protocol"]
    assert refused == [{"peer": "127.0.0.1", "reason": "literal too large before login"}] * 2
    assert count == 0  # nothing was stored


async def test_one_command_cannot_grow_literal_after_literal(
    trust: Trust, tmp_path: Path, b_database: dict[str, str]
) -> None:
    """Finding 3: one logged-in APPEND got "+" for literal after literal (1.16 GB). The
    literals of one command count together against imap.max_command_bytes: the one past it
    gets BAD [TOOBIG] without "+", the command is forgotten, nothing is stored, and the
    session goes on."""
    limit = 64 * 1024
    async with running_operator(
        trust, tmp_path / "b", b_database, max_command_bytes=limit, max_literal_bytes=40_000
    ) as op:

        def scenario() -> dict[str, list[bytes] | bytes]:
            raw = Raw(op.imaps_port, op.tls())
            try:
                raw.command("l", f"LOGIN {MARTIN} {PASSWORD}")
                part = b"Subject: x\r\n\r\n" + b"y" * 30_000 + b"\r\n"
                raw.send(b"a APPEND INBOX {%d}\r\n" % len(part))
                answers: dict[str, list[bytes] | bytes] = {"first_plus": raw.line()}
                raw.send(part + b" {%d}\r\n" % len(part))
                answers["second_plus"] = raw.line()
                raw.send(part + b" {%d}\r\n" % len(part))  # 90,000 bytes: past the limit
                answers["third"] = raw.until("a")
                answers["alive"] = raw.command("b", "NOOP")
            finally:
                raw.close()
            return answers

        answers = await asyncio.to_thread(scenario)
        events = op.audit_events()
        count = await asyncio.to_thread(_inbox_count, op)
    assert bytes(answers["first_plus"]).startswith(b"+")  # type: ignore[arg-type]
    assert bytes(answers["second_plus"]).startswith(b"+")  # type: ignore[arg-type]
    third = answers["third"]
    assert isinstance(third, list) and len(third) == 1 and third[0].startswith(b"a BAD [TOOBIG]")
    assert answers["alive"][-1].startswith(b"b OK")  # type: ignore[union-attr]
    assert count == 0
    refused = [c for e, _, c in events if e == "imap.refused_protocol"]
    assert refused == [{"peer": "127.0.0.1", "reason": "command too large"}]


async def test_connections_beyond_the_caps_are_refused_and_others_still_served(
    trust: Trust, tmp_path: Path, b_database: dict[str, str]
) -> None:
    """Finding 2: no cap on connections per address or in all. An address holds at most
    imap.max_connections_per_address connections before login (the next gets BYE
    [UNAVAILABLE], audited once per run); a logged-in connection no longer counts against
    its address; another address is still served; the listener's total holds for all."""
    caps = {"max_connections_per_address": 3, "max_connections": 6}
    async with running_operator(trust, tmp_path / "b", b_database, **caps) as op:

        def scenario() -> dict[str, bytes | list[bytes]]:
            held = [Raw(op.imaps_port, op.tls()) for _ in range(3)]
            answers: dict[str, bytes | list[bytes]] = {}
            try:
                for i in range(12):  # a client insisting: twelve refusals, two audit entries
                    refused = Raw(op.imaps_port, op.tls())
                    answers[f"refused{i}"] = [refused.greeting, refused.line()]
                    refused.close()
                other = _raw_from(op, "127.0.0.2")
                answers["other"] = other.greeting
                held.append(other)
                answers["login"] = held[0].command("l", f"LOGIN {MARTIN} {PASSWORD}")
                room = Raw(op.imaps_port, op.tls())  # the logged-in one left the address' count
                answers["room"] = room.greeting
                held.append(room)
                held.append(_raw_from(op, "127.0.0.3"))  # six open: the listener is full
                full = _raw_from(op, "127.0.0.4")
                answers["full"] = full.greeting
                full.close()
            finally:
                for raw in held:
                    raw.close()
            return answers

        answers = await asyncio.to_thread(scenario)
        events = op.audit_events()
    bye = b"* BYE [UNAVAILABLE] Too many connections; try again later.\r\n"
    for i in range(12):
        assert answers[f"refused{i}"] == [bye, b""], i
    assert bytes(answers["other"]).startswith(b"* OK")  # type: ignore[arg-type]
    assert answers["login"][-1].startswith(b"l OK")  # type: ignore[union-attr]
    assert bytes(answers["room"]).startswith(b"* OK")  # type: ignore[arg-type]
    assert answers["full"] == bye
    refused = [(a, c) for e, a, c in events if e == "connection.refused"]
    assert refused == [
        (
            "127.0.0.1",
            {"peer": "127.0.0.1", "reason": "address_full", "via": "imap", "refused_so_far": n},
        )
        for n in ("1", "10")
    ] + [
        (
            "127.0.0.4",
            {"peer": "127.0.0.4", "reason": "listener_full", "via": "imap", "refused_so_far": "1"},
        )
    ]


async def test_an_account_holds_a_bounded_number_of_sessions_per_address(
    trust: Trust, tmp_path: Path, b_database: dict[str, str]
) -> None:
    """imap.max_sessions_per_user_address sessions of one account from one address; the next
    login gets NO [LIMIT] (the password was right, nothing is slowed); a colleague behind the
    same address logs in; once a session ends there is room again."""
    async with running_operator(
        trust, tmp_path / "b", b_database, max_sessions_per_user_address=2
    ) as op:

        def scenario() -> dict[str, list[bytes]]:
            sessions = [Raw(op.imaps_port, op.tls()) for _ in range(3)]
            try:
                login = f"LOGIN {MARTIN} {PASSWORD}"
                answers = {f"login{i}": raw.command("l", login) for i, raw in enumerate(sessions)}
                answers["after_limit"] = sessions[2].command("n", "NOOP")
                answers["colleague"] = sessions[2].command("c", f"LOGIN {DURAND} {PASSWORD}")
                sessions[0].command("o", "LOGOUT")
                while sessions[0].line():  # until the server has closed it
                    pass
                again = Raw(op.imaps_port, op.tls())
                sessions.append(again)
                answers["again"] = again.command("l", login)
            finally:
                for raw in sessions:
                    raw.close()
            return answers

        answers = await asyncio.to_thread(scenario)
        events = op.audit_events()
    assert answers["login0"][-1].startswith(b"l OK") and answers["login1"][-1].startswith(b"l OK")
    assert (
        answers["login2"][-1]
        == b"l NO [LIMIT] Too many sessions of this account from this address.\r\n"
    )
    assert answers["after_limit"][-1].startswith(b"n OK")  # still connected, not logged in
    assert answers["colleague"][-1].startswith(b"c OK")
    assert answers["again"][-1].startswith(b"l OK")
    refused = [c for e, _, c in events if e == "connection.refused"]
    assert refused == [
        {"peer": "127.0.0.1", "reason": "user_address_full", "via": "imap", "refused_so_far": "1"}
    ]
    failures = [e for e, _, _ in events if e == "auth.login_failed"]
    assert failures == []
