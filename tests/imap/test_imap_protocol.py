"""The protocol's edges on a raw socket: bad syntax, commands in the wrong state, literals too
large (refused before they are read), clients that stall (timeouts), lines too long."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from imap_fixtures import MARTIN, PASSWORD, Operator, Raw, Trust, running_operator


def _logged_in(op: Operator) -> Raw:
    raw = Raw(op.imaps_port, op.tls())
    assert raw.command("l", f"LOGIN {MARTIN} {PASSWORD}")[-1].startswith(b"l OK")
    return raw


async def test_bad_syntax_and_wrong_state(operator: Operator) -> None:
    def scenario() -> dict[str, bytes]:
        raw = Raw(operator.imaps_port, operator.tls())
        try:
            answers = {
                "fetch_before_login": raw.command("a1", "FETCH 1 FLAGS")[-1],
                "unknown": raw.command("a2", "FROBNICATE")[-1],
            }
            raw.command("l", f"LOGIN {MARTIN} {PASSWORD}")
            answers |= {
                "login_again": raw.command("a3", f"LOGIN {MARTIN} {PASSWORD}")[-1],
                "fetch_unselected": raw.command("a4", "FETCH 1 FLAGS")[-1],
                "bad_arguments": raw.command("a5", "SELECT")[-1],
            }
            raw.command("s", "SELECT INBOX")
            answers |= {
                "bad_sequence": raw.command("a6", "FETCH x:y FLAGS")[-1],
                "bad_attribute": raw.command("a7", "FETCH 1 (NOTHING)")[-1],
                "still_alive": raw.command("a8", "NOOP")[-1],
            }
            for i in range(5):  # imap.max_bad_commands in a row: the server hangs up
                last = raw.command(f"b{i}", "GARBAGE")
            answers["too_many"] = b"".join(last)
            answers["closed"] = raw.line()
            return answers
        finally:
            raw.close()

    answers = await asyncio.to_thread(scenario)
    for name in ("fetch_before_login", "unknown", "login_again", "fetch_unselected"):
        assert b" BAD " in answers[name], name
    for name in ("bad_arguments", "bad_sequence", "bad_attribute"):
        assert b" BAD " in answers[name], name
    assert answers["still_alive"].startswith(b"a8 OK")
    assert answers["too_many"].startswith(b"b4 BAD") and answers["closed"] == b""  # hung up


async def test_huge_literals_are_refused_before_being_read(operator: Operator) -> None:
    def scenario() -> tuple[list[bytes], bytes, list[bytes], bytes]:
        raw = _logged_in(operator)
        try:  # a synchronizing literal: no "+", a BAD [TOOBIG], and the session goes on
            raw.send(b"a APPEND INBOX {100000000}\r\n")
            sync = raw.until("a")
            alive = raw.command("b", "NOOP")[-1]
            # a non-synchronizing one (LITERAL+): refused and the connection closed at once,
            # after the first 1,000 bytes, without waiting for the other 99,999,000
            raw.send(b"c APPEND INBOX {100000000+}\r\n" + b"x" * 1000)
            plus = [raw.line(), raw.line()]
            return sync, alive, plus, raw.line()
        finally:
            raw.close()

    sync, alive, plus, after = await asyncio.to_thread(scenario)
    assert len(sync) == 1 and sync[0].startswith(b"a BAD") and b"TOOBIG" in sync[0]
    assert alive.startswith(b"b OK")
    assert plus[0].startswith(b"c BAD [TOOBIG]") and plus[1].startswith(b"* BYE [TOOBIG]")
    assert after == b""
    refused = [c for e, _, c in operator.audit_events() if e == "imap.refused_protocol"]
    assert refused == [{"peer": "127.0.0.1", "reason": "literal too large"}] * 2


async def test_stalled_clients_time_out(
    trust: Trust, tmp_path: Path, b_database: dict[str, str]
) -> None:
    limits = {
        "login_timeout": 0.5,
        "literal_timeout": 0.5,
        "idle_timeout": 0.5,
        "max_line_bytes": 1024,
    }
    async with running_operator(trust, tmp_path / "b", b_database, **limits) as op:

        def scenario() -> dict[str, tuple[bytes, float]]:
            results = {}
            raw = Raw(op.imaps_port, op.tls())  # says nothing after the greeting
            start = time.monotonic()
            results["silent"] = (raw.line(), time.monotonic() - start)
            raw.close()
            raw = _logged_in(op)  # announces a literal and never sends it
            raw.send(b"a APPEND INBOX {20}\r\n")
            assert raw.line().startswith(b"+")
            raw.send(b"0123456789")
            start = time.monotonic()
            results["literal"] = (raw.line(), time.monotonic() - start)
            raw.close()
            raw = _logged_in(op)  # IDLE past imap.idle_timeout
            raw.command("s", "SELECT INBOX")
            raw.send(b"i IDLE\r\n")
            assert raw.line().startswith(b"+")
            start = time.monotonic()
            results["idle"] = (raw.line(), time.monotonic() - start)
            raw.close()
            raw = Raw(op.imaps_port, op.tls())  # a line longer than imap.max_line_bytes
            raw.send(b"a LOGIN " + b"x" * 5000 + b"\r\n")
            results["line"] = (raw.line(), 0.0)
            raw.close()
            return results

        results = await asyncio.to_thread(scenario)
        events = op.audit_events()
    for name in ("silent", "literal", "idle"):
        line, waited = results[name]
        assert line.startswith(b"* BYE") and b"Autologout" in line, name
        assert 0.4 < waited < 3, name
    assert results["line"][0].startswith(b"* BYE [TOOBIG]")
    timeouts = [c["waiting_for"] for e, _, c in events if e == "imap.timeout"]
    assert timeouts == ["command", "command", "idle"]
