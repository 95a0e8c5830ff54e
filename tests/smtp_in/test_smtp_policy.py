"""The accept/refuse decisions as plain functions: facts in, refusal out, no socket: the inbound
listener's transport checks (``smtp/policy.py``) and the acceptance path's (``ops/acceptance.py``)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mssante.audit.events import AuditEvent
from mssante.ops import acceptance
from mssante.pki.verify import Failure, VerificationResult
from mssante.smtp import policy
from mssante.trust.model import Whitelist, WhitelistDomain

DN_A = "CN=smtp.a.mssante.test,OU=341459958900028,O=OPERATEUR A,ST=Gironde (33),C=FR"
DN_B = "CN=smtp.b.mssante.test,OU=318310021300028,O=OPERATEUR B,ST=Haute-Garonne (31),C=FR"
NOW = datetime(2026, 11, 1, tzinfo=UTC)


def whitelist() -> Whitelist:
    def entry(name: str, dn: str) -> WhitelistDomain:
        return WhitelistDomain(name, name, (dn,), "", "", NOW)

    return Whitelist(NOW, (entry("a.mssante.test", DN_A), entry("b.mssante.test", DN_B)))


def ok(dn: str) -> VerificationResult:
    return VerificationResult(ok=True, failure=None, reason="", subject_dn=dn, chain=())


def test_no_certificate_is_530() -> None:
    refusal = policy.check_peer_certificate(None)
    assert refusal is not None
    assert (refusal.reply.code, refusal.event) == (530, AuditEvent.SMTP_REFUSED_NO_CERTIFICATE)


def test_a_failed_certificate_names_the_reason() -> None:
    bad = VerificationResult(
        ok=False,
        failure=Failure.EXPIRED,
        reason="certificate expired on 2025-01-01",
        subject_dn=DN_A,
        chain=(),
    )
    refusal = policy.check_peer_certificate(bad)
    assert refusal is not None
    assert (
        str(refusal.reply)
        == "550 5.7.1 Client certificate refused: certificate expired on 2025-01-01"
    )


@pytest.mark.parametrize(
    ("sender", "dn", "expected"),
    [
        ("dr.martin@a.mssante.test", DN_A, None),
        ("dr.martin@A.MSSANTE.TEST", DN_A, None),
        ("dr.martin@a.mssante.test", DN_B, AuditEvent.SMTP_REFUSED_DN_NOT_LISTED),
        ("someone@gmail.com", DN_A, AuditEvent.SMTP_REFUSED_DOMAIN_NOT_LISTED),
        ("", DN_A, None),  # a delivery report from a known operator
        (
            "",
            "CN=x.test,OU=341459958900028,O=X,ST=Gironde (33),C=FR",
            AuditEvent.SMTP_REFUSED_DN_NOT_LISTED,
        ),
    ],
)
def test_sender_domain_and_dn(sender: str, dn: str, expected: AuditEvent | None) -> None:
    refusal = policy.check_sender_domain(whitelist(), sender, dn)
    assert (refusal.event if refusal else None) == expected


def test_no_whitelist_yet_is_temporary() -> None:
    refusal = policy.check_sender_domain(None, "a@a.mssante.test", DN_A)
    assert refusal is not None and refusal.reply.code == 451


@pytest.mark.parametrize(
    "data",
    [
        b"Subject: x\r\n\r\nline\nsmuggled\r\n",
        b"Subject: x\r\n\r\nline\rmore\r\n",
        b"a\n.\nMAIL FROM:<x@y>\r\n",
    ],
)
def test_bare_line_endings_are_refused(data: bytes) -> None:
    refusal = acceptance.check_line_endings(data)
    assert refusal is not None and refusal.reply.enhanced == "5.6.0"


def test_crlf_only_is_fine() -> None:
    assert acceptance.check_line_endings(b"Subject: x\r\n\r\nbody\r\n.. dot\r\n") is None


def test_submission_recipient_outside_trust_space_speaks_french() -> None:
    refusal = acceptance.check_trust_space(whitelist(), {"b.mssante.test"}, "jean@gmail.com")
    assert refusal is not None
    assert refusal.reply.code == 550
    assert "jean@gmail.com n'appartient pas à l'espace de confiance MSSanté" in refusal.reply.text
    assert "n'appartient pas a l'espace de confiance MSSante" in refusal.reply.render(utf8=False)
    assert refusal.reply.render(utf8=False).isascii()


@pytest.mark.parametrize("address", ["x@b.mssante.test", "x@a.mssante.test"])
def test_submission_recipient_in_trust_space(address: str) -> None:
    assert acceptance.check_trust_space(whitelist(), {"b.mssante.test"}, address) is None


@pytest.mark.parametrize(
    ("header", "allowed"),
    [
        (b"From: Dr Martin <martin@b.mssante.test>\r\n", True),
        (b"From: =?utf-8?q?Dr_H=C3=A9l=C3=A8ne?= <MARTIN@b.mssante.test>\r\n", True),
        (b"From: boss@b.mssante.test\r\n", False),
        (b"From: martin@b.mssante.test, boss@b.mssante.test\r\n", False),
        (b"From: martin@b.mssante.test\r\nFrom: boss@b.mssante.test\r\n", False),
        (b"Subject: no from\r\n", False),
    ],
)
def test_from_header(header: bytes, allowed: bool) -> None:
    refusal = acceptance.check_from_header(header + b"\r\nbody\r\n", {"martin@b.mssante.test"})
    assert (refusal is None) == allowed
    if refusal:
        assert refusal.code == "from_not_allowed"
        assert refusal.reply.code == 553 and refusal.reply.enhanced == "5.7.1"


@pytest.mark.parametrize(
    ("sender", "header", "aligned"),
    [
        ("x@a.mssante.test", b"From: Dr X <x@a.mssante.test>\r\n", True),
        ("x@a.mssante.test", b"From: y@a.mssante.test\r\n", True),  # same domain
        # the case: a listed peer writing as a domain it does not serve
        ("x@a.mssante.test", b"From: directeur@ars.sante.fr\r\n", False),
        ("x@a.mssante.test", b"From: boss@b.mssante.test\r\n", False),  # another operator's
        ("x@a.mssante.test", b"From: x@a.mssante.test, d@ars.sante.fr\r\n", False),
        ("x@a.mssante.test", b"Subject: no From\r\n", False),
        ("", b"From: MAILER-DAEMON@smtp.a.mssante.test\r\n", True),  # a report from its host
        ("", b"From: postmaster@a.mssante.test\r\n", True),
        ("", b"From: postmaster@b.mssante.test\r\n", False),
    ],
)
def test_from_is_aligned_with_the_peer(sender: str, header: bytes, aligned: bool) -> None:
    """RFC 5322 From: of a peer's mail: the envelope sender's domain, or a domain the whitelist
    lists for the peer's certificate (issue 11)."""
    refusal = acceptance.check_from_aligned(header + b"\r\nbody\r\n", sender, DN_A, whitelist())
    assert (refusal is None) == aligned
    if refusal is not None:
        assert refusal.code == "from_not_aligned"
        assert refusal.event is AuditEvent.MESSAGE_REFUSED_FROM
