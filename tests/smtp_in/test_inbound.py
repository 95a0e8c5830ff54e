"""Inbound SMTP from operators, over real sockets and real TLS: the accepted path and each
refusal of the matrix, with its own reply and its own audit event, and nothing stored."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable

import pytest
from operator_fixtures import MARTIN, Space
from smtp_helpers import DOMAIN_A, Cert, Client, client_context, message

from mssante.audit.log import iter_entries
from mssante.operator.runtime import OperatorRuntime


def _port(rt: OperatorRuntime) -> int:
    return rt.settings.smtp.inbound_port


_WORKERS = ("pki.", "whitelist.")  # the trust workers audit their refreshes at any moment


def _events(rt: OperatorRuntime) -> list[str]:
    """The audit log's events, but the trust workers' (a CRL refresh may land between)."""
    return [e.event for e in iter_entries(rt.node.db) if not e.event.startswith(_WORKERS)]


def _inbox(rt: OperatorRuntime) -> list[str]:
    return [m.subject for m in rt.store.list_messages(MARTIN)]


async def _session(
    rt: OperatorRuntime,
    space: Space,
    cert: Cert | None,
    steps: Callable[[Client], list[tuple[int, str]]],
    **ctx: object,
) -> list[tuple[int, str]]:
    def run() -> list[tuple[int, str]]:
        client = Client(
            _port(rt), ssl_context=client_context(cert, ca=space.pki.paths().root, **ctx)
        )  # type: ignore[arg-type]
        try:
            return steps(client)
        finally:
            client.close()

    return await asyncio.to_thread(run)


def _send(
    sender: str = f"dr.durand@{DOMAIN_A}", subject: str = "Compte rendu"
) -> Callable[[Client], list[tuple[int, str]]]:
    def steps(c: Client) -> list[tuple[int, str]]:
        replies = [c.cmd(f"MAIL FROM:<{sender}>")]
        if replies[-1][0] != 250:
            return replies
        replies.append(c.cmd(f"RCPT TO:<{MARTIN}>"))
        replies.append(c.data(message(sender, MARTIN, subject)))
        return replies

    return steps


async def test_a_listed_operator_delivers_over_mutual_tls(
    operator_b: OperatorRuntime, space: Space
) -> None:
    replies = await _session(operator_b, space, space.a, _send())
    assert [code for code, _ in replies] == [250, 250, 250], replies
    assert "stored" in replies[-1][1]
    assert _inbox(operator_b) == ["Compte rendu"]
    raw = operator_b.store.read(operator_b.store.list_messages(MARTIN)[0].blob_sha256)
    head = raw.split(b"\r\n\r\n")[0].decode()
    assert "X-MSSante-Trace: peer=127.0.0.1" in head
    assert (
        'dn="CN=smtp.a.mssante.test,OU=341459958900028,O=OPERATEUR A,ST=Gironde (33),C=FR"' in head
    )
    assert "mutual-tls=yes" in head and "tls=TLSv1.3" in head
    # RFC 5321 §4.4: the final delivery records the envelope sender, then the trace.
    assert head.startswith(
        "Return-Path: <dr.durand@a.mssante.test>\r\n"
        "Received: from smtp.a.mssante.test ([127.0.0.1]) (using TLSv1.3"
    )
    assert "smtp.message_accepted" in _events(operator_b)


async def test_a_report_with_the_null_sender_is_accepted_from_a_listed_operator(
    operator_b: OperatorRuntime, space: Space
) -> None:
    """Delivery and read reports travel with ``MAIL FROM:<>`` (RFC 5321 §4.5.5, RFC 8098
    §2.1): no domain to check, only the peer's DN, which must be listed for some domain."""

    def steps(c: Client) -> list[tuple[int, str]]:
        replies = [c.cmd("MAIL FROM:<>"), c.cmd(f"RCPT TO:<{MARTIN}>")]
        replies.append(c.data(message("mailer-daemon@a.mssante.test", MARTIN, "Accuse de lecture")))
        return replies

    replies = await _session(operator_b, space, space.a, steps)
    assert [code for code, _ in replies] == [250, 250, 250], replies
    raw = operator_b.store.read(operator_b.store.list_messages(MARTIN)[0].blob_sha256)
    assert raw.startswith(b"Return-Path: <>\r\n")


@pytest.mark.parametrize(
    ("bad", "reply", "event"),
    [
        (
            "expired",
            "550 5.7.1 Client certificate refused: certificate expired",
            "smtp.refused_certificate",
        ),
        (
            "not_yet_valid",
            "550 5.7.1 Client certificate refused: certificate is not valid before",
            "smtp.refused_certificate",
        ),
        (
            "revoked",
            "550 5.7.1 Client certificate refused: certificate revoked",
            "smtp.refused_certificate",
        ),
        (
            "unlisted_dn",
            "550 5.7.1 Client certificate is not listed for the sender domain",
            "smtp.refused_dn_not_listed",
        ),
    ],
)
async def test_certificate_refusals(
    operator_b: OperatorRuntime, space: Space, bad: str, reply: str, event: str
) -> None:
    replies = await _session(operator_b, space, space.bad[bad], _send())
    code, text = replies[0]
    assert f"{code} {text}".startswith(reply), (code, text)
    assert _events(operator_b)[-1] == event
    assert _inbox(operator_b) == []


async def test_no_client_certificate(operator_b: OperatorRuntime, space: Space) -> None:
    replies = await _session(operator_b, space, None, _send())
    assert replies[0][0] == 530 and "client certificate is required" in replies[0][1]
    assert _events(operator_b)[-1] == "smtp.refused_no_certificate"


async def test_sender_domain_not_on_the_whitelist(
    operator_b: OperatorRuntime, space: Space
) -> None:
    replies = await _session(operator_b, space, space.a, _send(sender="x@gmail.com"))
    assert replies[0] == (550, "5.7.1 Sender domain is not in the MSSante trust space (whitelist)")
    assert _events(operator_b)[-1] == "smtp.refused_domain_not_listed"


@pytest.mark.parametrize("bad", ["self_signed", "other_ca", "wrong_usage"])
async def test_certificates_that_do_not_chain_fail_the_handshake(
    operator_b: OperatorRuntime, space: Space, bad: str
) -> None:
    """OpenSSL refuses these in the handshake (unknown CA; a certificate without the clientAuth
    purpose): see docs/decisions/0003-inbound-tls-refusals.md."""
    with pytest.raises(OSError):  # ssl.SSLError, or the server closing the connection (TLS 1.3)
        await _session(operator_b, space, space.bad[bad], _send())
    await asyncio.sleep(0.2)
    assert _events(operator_b)[-1] == "smtp.tls_failed"
    assert _inbox(operator_b) == []


async def test_tls_1_1_is_refused(operator_b: OperatorRuntime, space: Space) -> None:
    with pytest.raises((OSError, ValueError)):
        await _session(operator_b, space, space.a, _send(), version=ssl.TLSVersion.TLSv1_1)
    assert _inbox(operator_b) == []


async def test_mail_before_starttls_is_refused(operator_b: OperatorRuntime) -> None:
    def run() -> tuple[int, str]:
        client = Client(_port(operator_b))
        try:
            return client.cmd(f"MAIL FROM:<x@{DOMAIN_A}>")
        finally:
            client.close()

    code, text = await asyncio.to_thread(run)
    assert code == 530 and "STARTTLS" in text
    for _ in range(100):  # audited by the listener's hook as it answers: poll, up to 5 s
        if _events(operator_b)[-1:] == ["smtp.refused_no_starttls"]:
            break
        await asyncio.sleep(0.05)
    assert _events(operator_b)[-1] == "smtp.refused_no_starttls"


async def test_unknown_recipient(operator_b: OperatorRuntime, space: Space) -> None:
    def steps(c: Client) -> list[tuple[int, str]]:
        return [c.cmd(f"MAIL FROM:<x@{DOMAIN_A}>"), c.cmd("RCPT TO:<nobody@b.mssante.test>")]

    replies = await _session(operator_b, space, space.a, steps)
    assert replies[1] == (
        550,
        "5.1.1 nobody@b.mssante.test : adresse inconnue / nobody@b.mssante.test: no such mailbox here",
    )
    assert _events(operator_b)[-1] == "smtp.refused_unknown_recipient"


async def test_too_many_recipients(operator_b: OperatorRuntime, space: Space) -> None:
    def steps(c: Client) -> list[tuple[int, str]]:
        return [c.cmd(f"MAIL FROM:<x@{DOMAIN_A}>")] + [
            c.cmd(f"RCPT TO:<{MARTIN}>") for _ in range(6)
        ]

    replies = await _session(operator_b, space, space.a, steps)
    assert [code for code, _ in replies[1:]] == [250] * 5 + [452]
    assert _events(operator_b)[-1] == "smtp.refused_too_many_recipients"


@pytest.mark.parametrize(
    "payload", [b"Subject: x\r\n\r\nline one\nline two\r\n", b"Subject: x\r\n\r\nline one\rtwo\r\n"]
)
async def test_bare_line_endings_are_refused(
    operator_b: OperatorRuntime, space: Space, payload: bytes
) -> None:
    def steps(c: Client) -> list[tuple[int, str]]:
        return [c.cmd(f"MAIL FROM:<x@{DOMAIN_A}>"), c.cmd(f"RCPT TO:<{MARTIN}>"), c.data(payload)]

    replies = await _session(operator_b, space, space.a, steps)
    assert replies[2][0] == 550 and replies[2][1].startswith("5.6.0 fin de ligne isolee (LF ou CR)")
    assert _events(operator_b)[-1] == "smtp.refused_bare_line_ending"
    assert _inbox(operator_b) == []


async def test_oversize_data_is_refused(operator_b: OperatorRuntime, space: Space) -> None:
    big = message(f"x@{DOMAIN_A}", MARTIN, body="x" * 998 + "\r\n") * 1  # header
    big += (b"y" * 900 + b"\r\n") * 300  # ~270 KB > 200 KB limit

    def steps(c: Client) -> list[tuple[int, str]]:
        return [c.cmd(f"MAIL FROM:<x@{DOMAIN_A}>"), c.cmd(f"RCPT TO:<{MARTIN}>"), c.data(big)]

    replies = await _session(operator_b, space, space.a, steps)
    assert replies[2][0] == 552
    assert _inbox(operator_b) == []
    assert "smtp.refused_too_large" in _events(operator_b)


async def test_declared_size_over_the_limit_is_refused_at_mail(
    operator_b: OperatorRuntime, space: Space
) -> None:
    replies = await _session(
        operator_b, space, space.a, lambda c: [c.cmd(f"MAIL FROM:<x@{DOMAIN_A}> SIZE=900000")]
    )
    assert replies[0][0] == 552


async def test_unknown_command_and_bad_sequence(operator_b: OperatorRuntime, space: Space) -> None:
    def steps(c: Client) -> list[tuple[int, str]]:
        return [c.cmd("FOO bar"), c.cmd(f"RCPT TO:<{MARTIN}>"), c.cmd("DATA")]

    replies = await _session(operator_b, space, space.a, steps)
    assert [code for code, _ in replies] == [500, 503, 503]
    assert _events(operator_b)[-3:] == ["smtp.refused_protocol"] * 3


async def test_duplicate_message_id_is_stored_once(
    operator_b: OperatorRuntime, space: Space
) -> None:
    raw = message(f"x@{DOMAIN_A}", MARTIN, "Deux fois", message_id="<same-id@a.mssante.test>")

    def steps(c: Client) -> list[tuple[int, str]]:
        out = []
        for _ in range(2):
            out += [c.cmd(f"MAIL FROM:<x@{DOMAIN_A}>"), c.cmd(f"RCPT TO:<{MARTIN}>"), c.data(raw)]
        return out

    replies = await _session(operator_b, space, space.a, steps)
    assert [code for code, _ in replies] == [250] * 6
    assert _inbox(operator_b) == ["Deux fois"]


async def test_data_edge_cases_over_one_pipelined_connection(
    operator_b: OperatorRuntime, space: Space
) -> None:
    """Dot-stuffing undone (RFC 5321 §4.5.2), an empty body, a body ending without CRLF before
    the dot is impossible, commands pipelined right after the end of data (RFC 2920)."""
    import socket as socket_mod

    def run() -> bytes:
        ctx = client_context(space.a, ca=space.pki.paths().root)
        with socket_mod.create_connection(("127.0.0.1", _port(operator_b)), timeout=10) as raw:
            f = raw.makefile("rb")
            f.readline()
            raw.sendall(b"EHLO smtp.a.mssante.test\r\n")
            while not f.readline().startswith(b"250 "):
                pass
            raw.sendall(b"STARTTLS\r\n")
            f.readline()
            with ctx.wrap_socket(raw, server_hostname="x") as tls:
                tls.sendall(b"EHLO smtp.a.mssante.test\r\n")
                t = tls.makefile("rb")
                while not t.readline().startswith(b"250 "):
                    pass
                for line in (f"MAIL FROM:<x@{DOMAIN_A}>", f"RCPT TO:<{MARTIN}>", "DATA"):
                    tls.sendall(line.encode() + b"\r\n")
                    t.readline()
                body = b"From: x@a.mssante.test\r\nSubject: points\r\nMessage-ID: <dots@a>\r\n\r\n..leading dot\r\n...two\r\n.\r\nQUIT\r\n"
                tls.sendall(body)  # QUIT pipelined right after the end of data
                return t.readline() + t.readline()

    replies = await asyncio.to_thread(run)
    assert replies.startswith(b"250 2.0.0 Message accepted") and b"221" in replies
    raw = operator_b.store.read(operator_b.store.list_messages(MARTIN)[0].blob_sha256)
    assert raw.endswith(b"\r\n\r\n.leading dot\r\n..two\r\n")


async def test_a_line_over_1000_octets_is_refused(
    operator_b: OperatorRuntime, space: Space
) -> None:
    long_line = b"Subject: x\r\n\r\n" + b"a" * 1200 + b"\r\n"

    def steps(c: Client) -> list[tuple[int, str]]:
        return [c.cmd(f"MAIL FROM:<x@{DOMAIN_A}>"), c.cmd(f"RCPT TO:<{MARTIN}>"), c.data(long_line)]

    replies = await _session(operator_b, space, space.a, steps)
    assert replies[2][0] == 500 and "Line too long" in replies[2][1]
    assert _inbox(operator_b) == []


async def test_a_listed_peer_cannot_write_as_a_domain_it_does_not_serve(
    operator_b: OperatorRuntime, space: Space
) -> None:
    """Issue 11: operator A (listed for a.mssante.test only) sends with a valid envelope sender
    but ``From: directeur@ars.sante.fr``: refused at DATA, nothing stored, audited."""
    spoofed = message(f"dr.durand@{DOMAIN_A}", MARTIN, "Circulaire").replace(
        f"From: dr.durand@{DOMAIN_A}".encode(), b"From: Le directeur <directeur@ars.sante.fr>"
    )

    def steps(c: Client) -> list[tuple[int, str]]:
        return [
            c.cmd(f"MAIL FROM:<dr.durand@{DOMAIN_A}>"),
            c.cmd(f"RCPT TO:<{MARTIN}>"),
            c.data(spoofed),
        ]

    replies = await _session(operator_b, space, space.a, steps)
    assert replies[2][0] == 550 and replies[2][1].startswith("5.7.1"), replies
    assert "does not serve" in replies[2][1]
    assert _inbox(operator_b) == []
    entry = [e for e in iter_entries(operator_b.node.db) if e.event == "message.refused_from"][-1]
    assert entry.context["via"] == "inbound" and "ars.sante.fr" in entry.context["detail"]
