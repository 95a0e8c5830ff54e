"""One message cannot break a mailbox's IMAP (issue 12, finding 1): a message nested far past
``mime.max_depth`` — stored before the limit existed, or appended by the user — is answered by
FETCH (BODYSTRUCTURE, ENVELOPE, sections) and SEARCH like any other, its deep part opaque."""

from __future__ import annotations

import asyncio

import pytest

from imap_fixtures import MARTIN, PASSWORD, Operator, Raw, message


def nested(levels: int) -> bytes:
    opening = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
        for i in range(levels)
    )
    closing = b"".join(b"\r\n--b%d--\r\n" % i for i in reversed(range(levels)))
    head = b"From: dr.durand@b.mssante.test\r\nTo: " + MARTIN.encode() + b"\r\nSubject: Poupees\r\n"
    return head + opening + b"Content-Type: text/plain\r\n\r\naiguille\r\n" + closing


def _session(op: Operator) -> dict[str, list[bytes]]:
    raw = Raw(op.imaps_port, op.tls(), timeout=60)
    try:
        assert raw.command("l", f"LOGIN {MARTIN} {PASSWORD}")[-1].startswith(b"l OK")
        raw.command("s", "SELECT INBOX")
        return {
            "structure": raw.command("f1", "UID FETCH 1:* (BODYSTRUCTURE)"),
            "envelope": raw.command("f2", "UID FETCH 1:* (ENVELOPE)"),
            "section": raw.command("f3", "UID FETCH 1:* (BODY.PEEK[1.1])"),
            "search": raw.command("f4", "UID SEARCH TEXT Poupees"),
            "after": raw.command("n", "NOOP"),
        }
    finally:
        raw.close()


@pytest.mark.parametrize("levels", [140, 3000])
async def test_a_deep_message_does_not_break_the_mailbox(operator: Operator, levels: int) -> None:
    await asyncio.to_thread(operator.deliver, message("Avant"), MARTIN)
    await asyncio.to_thread(operator.deliver, nested(levels), MARTIN)  # past the acceptance check
    answers = await asyncio.to_thread(_session, operator)
    for name, lines in answers.items():
        assert lines and lines[-1].split(b" ")[1] == b"OK", (name, lines[-3:])
        assert not any(b"BYE" in line or b"SERVERBUG" in line for line in lines), name
    structure = b"".join(answers["structure"]).lower()
    assert structure.count(b'"mixed"') == 32  # the deepest readable levels
    assert b'("application" "octet-stream"' in structure  # the rest: one opaque part
    assert (
        answers["search"][0] == b"* SEARCH 2\r\n"
    )  # the header is read; text past the limits is not searched
