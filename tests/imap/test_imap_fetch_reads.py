"""What a FETCH reads from the store: the messages' bytes in one operation with the entries
when the attributes need content (and the set is small enough), nothing at all for
RFC822.SIZE, FLAGS or UID alone (the stored size answers), and one read per message, as pymap
asks, past imap's PRELOAD_BYTES. The answers are the same on every path."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from imap_fixtures import MARTIN, Operator, message
from mssante.imap import backend
from mssante.ops.folders import Folders

Calls = dict[str, int]


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[Calls]:
    calls = {"fetch": 0, "fetch_with_bodies": 0, "body": 0}

    def counting(name: str) -> Callable[..., Any]:
        original = getattr(Folders, name)

        def counted(self: Folders, *args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return original(self, *args, **kwargs)

        return counted

    for name in calls:
        monkeypatch.setattr(Folders, name, counting(name))
    yield calls


def _three(op: Operator) -> list[bytes]:
    raws = [message(f"Résultat {n}", body="ligne\r\n" * (50 * n)) for n in (1, 2, 3)]
    for raw in raws:
        op.deliver(raw, MARTIN)
    return raws


def _fetch(op: Operator, calls: Calls, query: str) -> tuple[dict[int, dict[bytes, Any]], Calls]:
    with op.client() as client:
        client.select_folder("INBOX")
        uids = client.search("ALL")
        for name in calls:
            calls[name] = 0
        answer = client.fetch(uids, query.split())
        return answer, dict(calls)


async def test_sizes_read_no_message(operator: Operator, reads: Calls) -> None:
    raws = await asyncio.to_thread(_three, operator)
    answer, calls = await asyncio.to_thread(_fetch, operator, reads, "RFC822.SIZE FLAGS UID")
    assert [answer[uid][b"RFC822.SIZE"] for uid in sorted(answer)] == [len(r) for r in raws]
    assert calls == {"fetch": 1, "fetch_with_bodies": 0, "body": 0}


async def test_bodies_come_with_the_entries_in_one_read(operator: Operator, reads: Calls) -> None:
    raws = await asyncio.to_thread(_three, operator)
    answer, calls = await asyncio.to_thread(
        _fetch, operator, reads, "BODY.PEEK[] RFC822.SIZE BODY.PEEK[HEADER.FIELDS (SUBJECT)]"
    )
    assert [answer[uid][b"BODY[]"] for uid in sorted(answer)] == raws
    assert [answer[uid][b"RFC822.SIZE"] for uid in sorted(answer)] == [len(r) for r in raws]
    assert answer[1][b"BODY[HEADER.FIELDS (SUBJECT)]"].startswith(b"Subject: =?utf-8?q?R")
    assert calls == {"fetch": 0, "fetch_with_bodies": 1, "body": 0}


async def test_past_the_preload_budget_each_message_is_read_alone(
    operator: Operator, reads: Calls, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backend, "PRELOAD_BYTES", 1000)
    raws = await asyncio.to_thread(_three, operator)
    answer, calls = await asyncio.to_thread(_fetch, operator, reads, "BODY.PEEK[]")
    assert [answer[uid][b"BODY[]"] for uid in sorted(answer)] == raws
    assert calls == {"fetch": 1, "fetch_with_bodies": 0, "body": 3}


async def test_whole_messages_are_sent_as_stored_without_parsing(
    operator: Operator, reads: Calls, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BODY.PEEK[] and RFC822.SIZE (what mbsync asks for each message), and a partial
    BODY.PEEK[]<0.20>: the bytes as stored, and no MIME parse; BODYSTRUCTURE still parses."""
    parsed = []
    original = backend.structure  # the one MIME parse of IMAP (mail/mime.py)

    def counting(data: bytes, *args: Any, **kwargs: Any) -> Any:
        parsed.append(len(data))
        return original(data, *args, **kwargs)

    monkeypatch.setattr(backend, "structure", counting)
    raws = await asyncio.to_thread(_three, operator)
    answer, calls = await asyncio.to_thread(
        _fetch, operator, reads, "BODY.PEEK[] RFC822.SIZE BODY.PEEK[]<0.20>"
    )
    assert [answer[uid][b"BODY[]"] for uid in sorted(answer)] == raws
    assert [answer[uid][b"BODY[]<0>"] for uid in sorted(answer)] == [r[:20] for r in raws]
    assert [answer[uid][b"RFC822.SIZE"] for uid in sorted(answer)] == [len(r) for r in raws]
    assert calls == {"fetch": 0, "fetch_with_bodies": 1, "body": 0}
    assert parsed == []
    answer, _ = await asyncio.to_thread(_fetch, operator, reads, "BODYSTRUCTURE")
    assert len(parsed) == 3 and all(b"BODYSTRUCTURE" in answer[uid] for uid in answer)
