"""Building DSNs (RFC 3464 in RFC 6522 multipart/report): pure functions, no queue."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.header import decode_header, make_header
from email.message import Message
from email.policy import compat32

import pytest

from mssante.mail.dsn import (
    Action,
    DeliveryReport,
    RecipientStatus,
    build_dsn,
    header_block,
    status_code,
    wants_report,
)

NOW = datetime(2026, 11, 25, 12, 30, tzinfo=UTC)
ORIGINAL = (
    b"From: Jeanne Dupont <jeanne.dupont@operateur.test>\r\n"
    b"To: docteur.martin@peer.test\r\n"
    b"Subject: =?utf-8?q?Compte_rendu_op=C3=A9ratoire?=\r\n"
    b"Message-ID: <abc@operateur.test>\r\n"
    b"Date: Wed, 25 Nov 2026 10:00:00 +0000\r\n"
    b"\r\n"
    b"Secret medical body that must never be copied into a report.\r\n"
)


def _report(*recipients: RecipientStatus, original: bytes = ORIGINAL) -> DeliveryReport:
    return DeliveryReport(
        reporting_mta="smtp.operateur.test",
        sender="jeanne.dupont@operateur.test",
        original=original,
        arrival_date=NOW - timedelta(hours=2),
        recipients=recipients,
        queue_id="42",
    )


FAILED = RecipientStatus(
    "docteur.martin@peer.test",
    Action.FAILED,
    "5.1.1",
    "550 5.1.1 No such mailbox",
    "smtp.peer.test",
    NOW,
)
DELAYED = RecipientStatus(
    "docteur.durand@peer.test",
    Action.DELAYED,
    "4.4.1",
    "451 4.4.1 no answer",
    "smtp.peer.test",
    NOW,
    NOW + timedelta(days=4),
)


def _parse(raw: bytes) -> Message:
    return message_from_bytes(raw, policy=compat32)


def _fields(dsn: Message) -> list[dict[str, str]]:
    blocks = dsn.get_payload()[1].get_payload()
    return [{k: " ".join(str(v).split()) for k, v in b.items()} for b in blocks]


def test_a_failure_report_has_the_three_parts_in_order() -> None:
    raw = build_dsn(_report(FAILED), now=NOW, message_id="<dsn-1@smtp.operateur.test>")
    dsn = _parse(raw)

    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    assert [p.get_content_type() for p in dsn.get_payload()] == [
        "text/plain",
        "message/delivery-status",
        "text/rfc822-headers",
    ]
    assert dsn["Message-ID"] == "<dsn-1@smtp.operateur.test>"
    assert dsn["In-Reply-To"] == "<abc@operateur.test>"
    assert dsn["Auto-Submitted"] == "auto-replied"
    subject = str(make_header(decode_header(dsn["Subject"])))
    assert subject == "Non remis / Undelivered: Compte rendu opératoire"


def test_the_human_part_is_french_first_then_english() -> None:
    dsn = _parse(build_dsn(_report(FAILED), now=NOW))
    human = dsn.get_payload()[0]
    assert human["Content-Language"] == "fr, en"
    text = human.get_payload(decode=True).decode("utf-8")
    assert text.index("Votre message n'a pas pu être remis") < text.index("could not be delivered")
    assert "Motif: 550 5.1.1 No such mailbox" in text
    assert "Objet: Compte rendu opératoire" in text
    assert "Secret medical body" not in text


def test_the_delivery_status_fields() -> None:
    dsn = _parse(build_dsn(_report(FAILED, DELAYED), now=NOW))
    per_message, failed, delayed = _fields(dsn)

    assert per_message == {
        "Reporting-MTA": "dns; smtp.operateur.test",
        "X-MSSante-Queue-ID": "42",
        "Arrival-Date": "Wed, 25 Nov 2026 10:30:00 +0000",
    }
    assert failed == {
        "Final-Recipient": "rfc822; docteur.martin@peer.test",
        "Action": "failed",
        "Status": "5.1.1",
        "Remote-MTA": "dns; smtp.peer.test",
        "Diagnostic-Code": "smtp; 550 5.1.1 No such mailbox",
        "Last-Attempt-Date": "Wed, 25 Nov 2026 12:30:00 +0000",
    }
    assert delayed["Action"] == "delayed"
    assert delayed["Status"] == "4.4.1"
    assert delayed["Will-Retry-Until"] == "Sun, 29 Nov 2026 12:30:00 +0000"


def test_a_decision_of_ours_is_not_dressed_as_a_remote_smtp_reply() -> None:
    ours = RecipientStatus(
        "x@hors-espace.test",
        Action.FAILED,
        "5.7.1",
        "550 5.7.1 domain x.test is not in the MSSanté trust space",
    )
    [_, fields] = _fields(_parse(build_dsn(_report(ours), now=NOW)))
    assert "Remote-MTA" not in fields
    # RFC 3464 §2.1.2: the delivery-status part is US-ASCII.
    assert (
        fields["Diagnostic-Code"]
        == "X-MSSante; 550 5.7.1 domain x.test is not in the MSSant? trust space"
    )


def test_only_the_original_header_is_attached() -> None:
    dsn = _parse(build_dsn(_report(FAILED), now=NOW))
    attached = dsn.get_payload()[2].get_payload(decode=True)
    assert attached.startswith(b"From: Jeanne Dupont")
    assert b"Message-ID: <abc@operateur.test>\r\n" in attached
    assert b"Secret medical body" not in attached


def test_every_line_ends_with_crlf() -> None:
    raw = build_dsn(_report(FAILED, DELAYED), now=NOW)
    assert re.search(rb"(?<!\r)\n", raw) is None
    assert raw.endswith(b"--\r\n")


def test_a_report_about_nothing_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one recipient"):
        build_dsn(_report(), now=NOW)


def test_no_dsn_about_a_message_with_an_empty_sender() -> None:
    assert wants_report("jeanne.dupont@operateur.test")
    assert not wants_report("")
    assert not wants_report("<>")


@pytest.mark.parametrize(
    ("code", "text", "gave_up", "expected"),
    [
        (550, "5.1.1 No such mailbox", False, "5.1.1"),
        (550, "No such mailbox", False, "5.0.0"),
        (451, "4.3.0 try later", False, "4.3.0"),
        (451, "4.3.0 try later", True, "5.4.7"),
        (550, "4.1.1 inconsistent class", False, "5.0.0"),
        (421, "", False, "4.0.0"),
    ],
)
def test_status_codes(code: int, text: str, gave_up: bool, expected: str) -> None:
    assert status_code(code, text, gave_up=gave_up) == expected


def test_header_block_accepts_bare_lf_input() -> None:
    assert header_block(b"A: 1\nB: 2\n\nbody\n") == b"A: 1\r\nB: 2\r\n"
    assert header_block(b"") == b""
