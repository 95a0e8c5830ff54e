"""An asyncio client library, aioimaplib, over implicit TLS (993), in the test's event loop
beside the server: IDLE wakes on a delivery within a second, UID MOVE answers COPYUID and
APPEND APPENDUID (UIDPLUS, RFC 4315), and the UIDs they give are the ones the target
folder serves."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aioimaplib import IMAP4_SSL

from imap_fixtures import MARTIN, PASSWORD, Operator, message


@asynccontextmanager
async def _client(op: Operator) -> AsyncIterator[IMAP4_SSL]:
    client = IMAP4_SSL("127.0.0.1", op.imaps_port, ssl_context=op.tls(), timeout=10)
    await client.wait_hello_from_server()
    login = await client.login(MARTIN, PASSWORD)
    assert login.result == "OK", login
    try:
        yield client
    finally:
        await client.logout()


def _code(lines: list[bytes], name: bytes) -> list[int]:
    """The numbers of the response code ``[NAME n n …]`` found in ``lines``."""
    for line in lines:
        found = re.search(rb"\[" + name + rb" ([0-9 :,]+)\]", line)
        if found:
            return [int(n) for n in found.group(1).split()]
    raise AssertionError(f"no [{name.decode()} …] in {lines}")


async def _subject_of(client: IMAP4_SSL, folder: str, uid: int) -> bytes:
    selected = await client.select(folder)
    assert selected.result == "OK", selected
    fetched = await client.uid("fetch", str(uid), "(UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert fetched.result == "OK", fetched
    assert any(f"UID {uid}".encode() in line for line in fetched.lines), fetched
    return b"".join(line for line in fetched.lines if line.startswith(b"Subject:")).strip()


async def _uidvalidity(client: IMAP4_SSL, folder: str) -> int:
    status = await client.status(folder, "(UIDVALIDITY)")
    assert status.result == "OK", status
    for line in status.lines:  # Archive (UIDVALIDITY n)
        found = re.search(rb"\(UIDVALIDITY (\d+)\)", line)
        if found:
            return int(found.group(1))
    raise AssertionError(f"no UIDVALIDITY in {status.lines}")


async def test_idle_gets_exists_within_a_second(operator: Operator) -> None:
    await asyncio.to_thread(operator.deliver, message("Premier"))
    async with _client(operator) as client:
        selected = await client.select("INBOX")
        assert selected.result == "OK" and b"1 EXISTS" in selected.lines
        idle = await client.idle_start(timeout=10)  # the server answered "+": idling
        started = time.monotonic()
        await asyncio.to_thread(operator.deliver, message("Urgent : résultats"))
        pushed = await client.wait_server_push(timeout=5)
        latency = time.monotonic() - started
        client.idle_done()
        done = await asyncio.wait_for(idle, 5)
    print(f"\naioimaplib IDLE latency, delivery -> EXISTS: {latency * 1000:.1f} ms")
    assert b"2 EXISTS" in pushed, pushed
    assert latency < 1.0
    assert done.result == "OK", done


async def test_uid_move_answers_copyuid_and_the_message_is_there(operator: Operator) -> None:
    for subject in ("Compte rendu", "Ordonnance"):
        await asyncio.to_thread(operator.deliver, message(subject))
    async with _client(operator) as client:
        archive_validity = await _uidvalidity(client, "Archive")
        await client.select("INBOX")
        found = await client.uid_search("SUBJECT", "Ordonnance", charset=None)
        assert found.result == "OK", found
        (uid,) = (int(n) for n in found.lines[0].split())
        moved = await client.uid("move", str(uid), "Archive")
        assert moved.result == "OK", moved
        validity, source, target = _code(moved.lines, b"COPYUID")
        assert (validity, source) == (archive_validity, uid)
        assert any(re.fullmatch(rb"\d+ EXPUNGE", line) for line in moved.lines), moved.lines
        left = await client.uid_search("ALL", charset=None)
        assert await _subject_of(client, "Archive", target) == b"Subject: Ordonnance"
    assert len(left.lines[0].split()) == 1  # only "Compte rendu" stays in INBOX
    stored = {
        folder: [(m.uid, m.subject) for m in operator.rt.store.list_messages(MARTIN, folder=folder)]
        for folder in ("INBOX", "Archive")
    }
    assert stored == {"INBOX": [(1, "Compte rendu")], "Archive": [(target, "Ordonnance")]}


async def test_append_answers_appenduid(operator: Operator) -> None:
    async with _client(operator) as client:
        drafts_validity = await _uidvalidity(client, "Drafts")
        appended = await client.append(message("Brouillon"), mailbox="Drafts", flags="(\\Draft)")
        assert appended.result == "OK", appended
        validity, uid = _code(appended.lines, b"APPENDUID")
        assert validity == drafts_validity
        assert await _subject_of(client, "Drafts", uid) == b"Subject: Brouillon"
        flags = await client.uid("fetch", str(uid), "(FLAGS)")
    assert any(b"\\Draft" in line for line in flags.lines), flags.lines
