"""Hostile content at the core's acceptance path (issue 12, findings 1, 6, 7, 8): each refused
with its code and audited, nothing stored; forged provenance and reused Message-IDs defused."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable

import pytest
from operator_fixtures import MARTIN, PASSWORD, Space
from smtp_helpers import DOMAIN_A, Client, client_context, message

from mssante.audit.events import Actor
from mssante.audit.log import iter_entries
from mssante.mail.trace import parse_trace
from mssante.operator.runtime import OperatorRuntime
from mssante.ops.accounts import Accounts, NewPerson

DUBOIS = "secretariat.dubois@b.mssante.test"
_WORKERS = ("pki.", "whitelist.")
Steps = Callable[[Client], list[tuple[int, str]]]


def nested(levels: int, sender: str = MARTIN, to: str = DUBOIS) -> bytes:
    """A message of ``levels`` nested multipart/mixed parts around one text part."""
    head = f"From: {sender}\r\nTo: {to}\r\nSubject: Poupees\r\nMessage-ID: <n{levels}@t>\r\n"
    opening = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
        for i in range(levels)
    )
    closing = b"".join(b"\r\n--b%d--\r\n" % i for i in reversed(range(levels)))
    return head.encode() + opening + b"Content-Type: text/plain\r\n\r\nbonjour\r\n" + closing


def _events(rt: OperatorRuntime) -> list[str]:
    return [e.event for e in iter_entries(rt.node.db) if not e.event.startswith(_WORKERS)]


def _last(rt: OperatorRuntime, event: str):  # type: ignore[no-untyped-def]
    return [e for e in iter_entries(rt.node.db) if e.event == event][-1]


@pytest.fixture
def dubois(operator_b: OperatorRuntime) -> str:
    Accounts(operator_b.node.db).create_person(
        NewPerson(DUBOIS, "autre-mot-de-passe-7", "810001234573", "Dubois", "Anne"), Actor("test")
    )
    return DUBOIS


async def _submit(rt: OperatorRuntime, space: Space, raw: bytes, to: str = DUBOIS):  # type: ignore[no-untyped-def]
    def run() -> list[tuple[int, str]]:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.load_verify_locations(cafile=str(space.pki.paths().root))
        client = Client(rt.settings.smtp.submission_port, ssl_context=ctx)
        try:
            client.smtp.login(MARTIN, PASSWORD)
            return [
                client.cmd(f"MAIL FROM:<{MARTIN}>"),
                client.cmd(f"RCPT TO:<{to}>"),
                client.data(raw),
            ]
        finally:
            client.close()

    return await asyncio.to_thread(run)


async def _inbound(rt: OperatorRuntime, space: Space, steps: Steps) -> list[tuple[int, str]]:
    def run() -> list[tuple[int, str]]:
        ctx = client_context(space.a, ca=space.pki.paths().root)
        client = Client(rt.settings.smtp.inbound_port, ssl_context=ctx)  # type: ignore[arg-type]
        try:
            return steps(client)
        finally:
            client.close()

    return await asyncio.to_thread(run)


def _from_a(*raws: bytes) -> Steps:
    def steps(c: Client) -> list[tuple[int, str]]:
        out = []
        for raw in raws:
            out += [c.cmd(f"MAIL FROM:<x@{DOMAIN_A}>"), c.cmd(f"RCPT TO:<{MARTIN}>"), c.data(raw)]
        return out

    return steps


# -- 1. a MIME tree no reader could take ---------------------------------------------------------


@pytest.mark.parametrize("levels", [33, 140, 1000])
async def test_too_deep_a_message_is_refused_at_submission(
    operator_b: OperatorRuntime, space: Space, dubois: str, levels: int
) -> None:
    replies = await _submit(operator_b, space, nested(levels))
    code, text = replies[-1]
    assert code == 554 and text.startswith("5.6.0 structure MIME trop profonde"), replies
    assert operator_b.store.list_messages(dubois) == []
    assert operator_b.store.list_messages(MARTIN, folder="Sent") == []
    entry = _last(operator_b, "message.refused_structure")
    assert entry.context["detail"] == "depth over 32" and entry.context["via"] == "submission"


async def test_the_deepest_allowed_message_is_delivered(
    operator_b: OperatorRuntime, space: Space, dubois: str
) -> None:
    replies = await _submit(operator_b, space, nested(32))
    assert [c for c, _ in replies] == [250, 250, 250], replies


async def test_too_deep_a_message_is_refused_from_a_peer_too(
    operator_b: OperatorRuntime, space: Space
) -> None:
    replies = await _inbound(operator_b, space, _from_a(nested(140, f"x@{DOMAIN_A}", MARTIN)))
    assert replies[-1][0] == 554 and "5.6.0" in replies[-1][1]
    assert operator_b.store.list_messages(MARTIN) == []
    assert _last(operator_b, "message.refused_structure").context["via"] == "inbound"


async def test_too_many_parts_are_refused(
    operator_b: OperatorRuntime, space: Space, dubois: str
) -> None:
    parts = b"".join(b"--p\r\nContent-Type: text/plain\r\n\r\n%d\r\n" % i for i in range(1001))
    raw = (
        f"From: {MARTIN}\r\nTo: {DUBOIS}\r\nSubject: Mille\r\n".encode()
        + b'Content-Type: multipart/mixed; boundary="p"\r\n\r\n'
        + parts
        + b"--p--\r\n"
    )
    replies = await _submit(operator_b, space, raw)
    assert replies[-1][0] == 554, replies
    assert _last(operator_b, "message.refused_structure").context["detail"] == "parts over 1000"


# -- 7. header tricks --------------------------------------------------------------------------


def _with_header(extra: str, *, before_from: bool = False) -> bytes:
    """``extra`` (lines joined by CRLF, no final one) first, or last of the header."""
    base = message(MARTIN, DUBOIS, "Astuce").decode()
    if before_from:
        return (extra + "\r\n" + base).encode()
    head, body = base.split("\r\n\r\n", 1)
    return (head + "\r\n" + extra + "\r\n\r\n" + body).encode()


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (_with_header("From : dr.x@b.mssante.test"), "line 6 is not a header field"),
        (_with_header("From: dr.x@b.mssante.test"), "more than one From field"),
        (
            _with_header("ceci n'est pas un champ\r\nFrom: dr.x@b.mssante.test"),
            "line 6 is not a header field",
        ),
        (_with_header(" replie", before_from=True), "line 1 is not a header field"),
    ],
    ids=["space-before-colon", "second-from", "line-without-colon", "fold-first"],
)
async def test_malformed_headers_are_refused(
    operator_b: OperatorRuntime, space: Space, dubois: str, raw: bytes, problem: str
) -> None:
    replies = await _submit(operator_b, space, raw)
    code, text = replies[-1]
    assert code == 554 and f"malformed message header: {problem}" in text, replies
    assert operator_b.store.list_messages(dubois) == []
    assert _events(operator_b)[-1] == "message.refused_header"


async def test_sender_naming_another_professional_is_refused(
    operator_b: OperatorRuntime, space: Space, dubois: str
) -> None:
    replies = await _submit(operator_b, space, _with_header(f"Sender: {DUBOIS}"))
    code, text = replies[-1]
    assert code == 553 and "Sender:" in text, replies
    assert operator_b.store.list_messages(dubois) == []
    assert _events(operator_b)[-1] == "submission.refused_sender"


async def test_sender_of_ones_own_address_is_fine(
    operator_b: OperatorRuntime, space: Space, dubois: str
) -> None:
    replies = await _submit(operator_b, space, _with_header(f"Sender: {MARTIN}"))
    assert [c for c, _ in replies] == [250, 250, 250], replies


# -- 6. forged provenance ------------------------------------------------------------------------


async def test_a_trace_brought_by_a_user_is_not_believed(
    operator_b: OperatorRuntime, space: Space, dubois: str
) -> None:
    forged = 'X-MSSante-Trace: peer=10.0.0.9; dn="CN=smtp.cabinet-sud.test"; mutual-tls=yes'
    replies = await _submit(operator_b, space, _with_header(forged, before_from=True))
    assert [c for c, _ in replies] == [250, 250, 250], replies
    raw = operator_b.store.read(operator_b.store.list_messages(dubois)[0].blob_sha256)
    assert parse_trace(raw) == {}
    assert b"X-MSSante-Untrusted-Trace: peer=10.0.0.9" in raw


async def test_a_peer_sees_only_its_own_hop_trusted(
    operator_b: OperatorRuntime, space: Space
) -> None:
    forged = b"x-mssante-trace : peer=10.6.6.6; mutual-tls=yes\r\n"
    raw = message(f"x@{DOMAIN_A}", MARTIN, "Trace")
    head, body = raw.split(b"\r\n\r\n", 1)
    forged_field = forged.replace(b"x-mssante-trace :", b"X-MSSante-Trace:")
    replies = await _inbound(
        operator_b, space, _from_a(head + b"\r\n" + forged_field + b"\r\n" + body)
    )
    assert replies[-1][0] == 250, replies
    stored = operator_b.store.read(operator_b.store.list_messages(MARTIN)[0].blob_sha256)
    trace = parse_trace(stored)
    assert trace["mutual-tls"] == "yes" and trace["peer"] == "127.0.0.1"  # ours, not the forged
    assert stored.count(b"X-MSSante-Trace:") == 1


# -- 8. Message-ID de-duplication ------------------------------------------------------------------


async def test_a_reused_message_id_does_not_make_mail_vanish(
    operator_b: OperatorRuntime, space: Space
) -> None:
    first = message(f"x@{DOMAIN_A}", MARTIN, "Premier", message_id="<predit@a.mssante.test>")
    other = message(f"x@{DOMAIN_A}", MARTIN, "Second", message_id="<predit@a.mssante.test>")
    replies = await _inbound(operator_b, space, _from_a(first, other, first))
    assert [c for c, _ in replies] == [250] * 9
    assert sorted(m.subject for m in operator_b.store.list_messages(MARTIN)) == [
        "Premier",
        "Second",
    ]
    dropped = _last(operator_b, "message.duplicate_dropped")
    assert dropped.target == MARTIN and dropped.context["message_id"] == "<predit@a.mssante.test>"
    assert _events(operator_b).count("message.duplicate_dropped") == 1
