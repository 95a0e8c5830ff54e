"""The Postfix peer harness: two real Postfix instances relaying over mutual TLS on loopback."""

from __future__ import annotations

import smtplib
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from pathlib import Path

import pytest

from mssante.pki.ca import IssuedPaths, TestPki
from peers.postfix import (
    PostfixError,
    PostfixInstance,
    Route,
    peer_workdir,
    postfix_skip_reason,
)
from support import free_port_block

pytestmark = pytest.mark.skipif(
    postfix_skip_reason() is not None, reason=postfix_skip_reason() or ""
)

DOMAIN_A, HOST_A = "a.mssante.test", "mta.a.mssante.test"
DOMAIN_B, HOST_B = "b.mssante.test", "mta.b.mssante.test"
ISSUER = "TEST AC IGC-SANTE ELEMENTAIRE ORGANISATIONS"


@dataclass(frozen=True)
class Pki:
    pki: TestPki
    a: IssuedPaths
    b: IssuedPaths

    @property
    def bundle(self) -> Path:
        return self.pki.paths().bundle


@pytest.fixture(scope="module")
def pki() -> Iterator[Pki]:
    with peer_workdir("mssante-peers-pki-") as folder:
        pki = TestPki.init(folder / "pki")
        a = pki.issue_server(HOST_A, "341459958900028", "OPERATEUR A", "33")
        b = pki.issue_server(HOST_B, "2123456782", "OPERATEUR B", "75")
        yield Pki(pki, a, b)


@dataclass(frozen=True)
class Ports:
    a: int
    a_inject: int
    b: int


@pytest.fixture
def ports() -> Ports:
    base = free_port_block(3)
    return Ports(base, base + 1, base + 2)


def _instance_a(root: Path, pki: Pki, ports: Ports, **options: object) -> PostfixInstance:
    route = Route("127.0.0.1", ports.b, str(options.pop("peer_name", HOST_B)))
    return PostfixInstance(
        root / "a",
        hostname=HOST_A,
        domain=DOMAIN_A,
        listen_port=ports.a,
        inject_port=ports.a_inject,
        cert=pki.a.fullchain,
        key=pki.a.key,
        ca_bundle=pki.bundle,
        routes={DOMAIN_B: route},
        **options,  # type: ignore[arg-type]
    )


def _instance_b(root: Path, pki: Pki, ports: Ports) -> PostfixInstance:
    return PostfixInstance(
        root / "b",
        hostname=HOST_B,
        domain=DOMAIN_B,
        listen_port=ports.b,
        cert=pki.b.fullchain,
        key=pki.b.key,
        ca_bundle=pki.bundle,
        routes={DOMAIN_A: Route("127.0.0.1", ports.a, HOST_A)},
        users=("user", "other"),
    )


@pytest.fixture
def workdir() -> Iterator[Path]:
    """Where the instances live (pytest's tmp_path is not reachable by Postfix's daemons)."""
    with peer_workdir() as path:
        yield path


@pytest.fixture
def b(workdir: Path, pki: Pki, ports: Ports) -> Iterator[PostfixInstance]:
    with _instance_b(workdir, pki, ports) as instance:
        yield instance


def _inject(port: int, subject: str, to: str = f"user@{DOMAIN_B}") -> None:
    message = EmailMessage()
    message["From"] = f"sender@{DOMAIN_A}"
    message["To"] = to
    message["Subject"] = subject
    message.set_content("Bonjour.\n")
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.send_message(message)


def _received_by_b(raw: bytes) -> str:
    parsed = BytesParser(policy=default_policy).parsebytes(raw)
    return " ".join(str(parsed.get_all("Received", [])[0]).split())


def _tls_client(pki: Pki, cert: IssuedPaths | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.bundle))
    context.check_hostname = False
    if cert is not None:
        context.load_cert_chain(cert.fullchain, cert.key)
    return context


def _first_reply_after_starttls(port: int, context: ssl.SSLContext) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.starttls(context=context)
        return client.ehlo(HOST_A)


# -- relaying ----------------------------------------------------------------------------------


def test_a_relays_to_b_over_mutual_tls(
    workdir: Path, pki: Pki, ports: Ports, b: PostfixInstance
) -> None:
    with _instance_a(workdir, pki, ports) as a:
        _inject(ports.a_inject, "over mutual TLS")
        [raw] = b.wait_for_messages("user", 1, timeout=30)
        a.wait_queue_empty(10)
        assert "Verified TLS connection established to 127.0.0.1" in a.log_text()
    received = _received_by_b(raw)
    assert f"from {HOST_A} (localhost [127.0.0.1])" in received
    assert "(using TLSv1.3 with cipher" in received or "(using TLSv1.2 with cipher" in received
    assert f'(Client CN "{HOST_A}", Issuer "{ISSUER}" (verified OK))' in received
    assert f"by {HOST_B} (Postfix) with ESMTPS" in received
    assert b"Subject: over mutual TLS" in raw
    assert b.maildir_messages("other") == []


def test_connection_reuse_delivers_every_message(
    workdir: Path, pki: Pki, ports: Ports, b: PostfixInstance
) -> None:
    with _instance_a(workdir, pki, ports, connection_reuse=True) as a:
        assert a.postconf("smtp_tls_connection_reuse") == "yes"
        for n in range(5):
            _inject(ports.a_inject, f"reuse {n}")
        messages = b.wait_for_messages("user", 5, timeout=30)
        a.wait_queue_empty(10)
        assert "tlsproxy" in a.log_text()
    subjects = sorted(m.split(b"Subject: ", 1)[1].split(b"\n", 1)[0] for m in messages)
    assert subjects == [f"reuse {n}".encode() for n in range(5)]


def test_an_unknown_mailbox_is_refused_at_rcpt(
    workdir: Path, pki: Pki, ports: Ports, b: PostfixInstance
) -> None:
    context = _tls_client(pki, pki.a)
    with smtplib.SMTP("127.0.0.1", ports.b, timeout=30) as client:
        client.starttls(context=context)
        client.ehlo(HOST_A)
        client.mail(f"sender@{DOMAIN_A}")
        code, text = client.rcpt(f"nobody-here@{DOMAIN_B}")
    assert code == 550
    assert b"5.1.1" in text


# -- refusals ----------------------------------------------------------------------------------


def test_b_refuses_a_client_without_certificate(pki: Pki, ports: Ports, b: PostfixInstance) -> None:
    code, text = _first_reply_after_starttls(ports.b, _tls_client(pki, None))
    assert (code, text) == (421, f"4.7.1 {HOST_B} Error: No client certificate presented".encode())
    b.wait_for_log("abort: TLS from localhost[127.0.0.1]: No client certificate presented", 10)


def test_b_refuses_a_certificate_from_another_ca(
    tmp_path: Path, pki: Pki, ports: Ports, b: PostfixInstance
) -> None:
    stranger = TestPki.init(tmp_path / "other-pki").issue_server(
        HOST_A, "341459958900028", "OPERATEUR A", "33"
    )
    code, text = _first_reply_after_starttls(ports.b, _tls_client(pki, stranger))
    assert code == 421
    assert b"Client certificate not trusted" in text


def test_a_defers_when_b_certificate_names_another_host(
    workdir: Path, pki: Pki, ports: Ports, b: PostfixInstance
) -> None:
    with _instance_a(workdir, pki, ports, peer_name="mta.elsewhere.test") as a:
        _inject(ports.a_inject, "wrong peer name")
        a.wait_for_log("Server certificate not verified", timeout=30)
        assert not a.queue_is_empty()
    assert b.maildir_messages("user") == []


# -- lifecycle ---------------------------------------------------------------------------------


def test_stop_leaves_no_process(workdir: Path, pki: Pki, ports: Ports) -> None:
    instance = _instance_b(workdir, pki, ports)
    with instance:
        assert instance.running()
        assert len(instance.processes()) >= 3  # master, qmgr, pickup at least
    assert not instance.running()
    assert instance.processes() == []
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", ports.b), timeout=2):
        pass


def test_a_busy_port_fails_the_start_cleanly(workdir: Path, pki: Pki, ports: Ports) -> None:
    instance = _instance_b(workdir, pki, ports)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", ports.b))
        busy.listen()
        with pytest.raises(PostfixError, match="did not start"):
            instance.start()
    assert instance.processes() == []
