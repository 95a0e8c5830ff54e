"""Read receipts (MDN, RFC 8098) and reports (DSN, RFC 3464) in RFC 6522 multipart/report."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.header import decode_header, make_header
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32

import pytest

from mssante.mail.dsn import Action, DeliveryReport, RecipientStatus, build_dsn
from mssante.mail.receipts import (
    IntegrationError,
    MdnDecision,
    ReceiptError,
    ReceiptKind,
    ReceiptStatus,
    build_mdn,
    mdn_decision,
    parse_report,
)

NOW = datetime(2026, 11, 25, 12, 30, tzinfo=UTC)
ORIGINAL_HEAD = (
    b"Return-Path: <jeanne.dupont@operateur.test>\r\n"
    b"From: Jeanne Dupont <jeanne.dupont@operateur.test>\r\n"
    b"To: docteur.martin@peer.test\r\n"
    b"Subject: =?utf-8?q?Compte_rendu_op=C3=A9ratoire?=\r\n"
    b"Message-ID: <abc@operateur.test>\r\n"
    b"Date: Wed, 25 Nov 2026 10:00:00 +0000\r\n"
    b"Original-Recipient: rfc822;Docteur.Martin@peer.test\r\n"
)
BODY = b"\r\nSecret medical body that must never be copied into a receipt.\r\n"
DNT = b"Disposition-Notification-To: Jeanne Dupont <jeanne.dupont@operateur.test>\r\n"
ORIGINAL = ORIGINAL_HEAD + DNT + BODY


def _mdn(original: bytes = ORIGINAL, **options: object) -> tuple[str, bytes]:
    arguments: dict[str, object] = {
        "reader": "docteur.martin@peer.test",
        "reporting_ua": "mssante-webmail 0.1.0",
        "hostname": "webmail.peer.test",
        "now": NOW,
    }
    arguments.update(options)
    return build_mdn(original, **arguments)  # type: ignore[arg-type]


def _subject(msg: Message) -> str:
    return str(make_header(decode_header(str(msg["Subject"]))))


def _notification(msg: Message) -> Message:
    part = msg.get_payload()[1]
    assert part.get_content_type() == "message/disposition-notification"
    fields = part.get_payload()[0]
    assert isinstance(fields, Message)
    return fields


# -- the decision -------------------------------------------------------------------------------


def test_no_request_no_receipt() -> None:
    assert mdn_decision(ORIGINAL_HEAD + BODY) is MdnDecision.NONE


def test_request_to_the_sender_may_be_sent() -> None:
    assert mdn_decision(ORIGINAL) is MdnDecision.SEND


@pytest.mark.parametrize(
    "dnt",
    [
        b"Disposition-Notification-To: someone.else@elsewhere.test\r\n",
        b"Disposition-Notification-To: JEANNE.DUPONT@operateur.test\r\n",  # local part differs
        b"Disposition-Notification-To: jeanne.dupont@operateur.test, x@operateur.test\r\n",
    ],
)
def test_request_elsewhere_is_asked(dnt: bytes) -> None:
    assert mdn_decision(ORIGINAL_HEAD + dnt + BODY) is MdnDecision.ASK


def test_no_return_path_or_automatic_message_is_asked() -> None:
    without = ORIGINAL.replace(b"Return-Path: <jeanne.dupont@operateur.test>\r\n", b"")
    assert mdn_decision(without) is MdnDecision.ASK
    automatic = b"Auto-Submitted: auto-generated\r\n" + ORIGINAL
    assert mdn_decision(automatic) is MdnDecision.ASK


def test_domain_case_does_not_matter() -> None:
    upper = ORIGINAL.replace(
        b"Disposition-Notification-To: Jeanne Dupont <jeanne.dupont@operateur.test>",
        b"Disposition-Notification-To: <jeanne.dupont@OPERATEUR.TEST>",
    )
    assert mdn_decision(upper) is MdnDecision.SEND


def test_an_mdn_is_never_answered_with_an_mdn() -> None:
    _, mdn = _mdn()
    asking = DNT + b"Return-Path: <jeanne.dupont@operateur.test>\r\n" + mdn
    assert mdn_decision(asking) is MdnDecision.NONE
    with pytest.raises(ReceiptError):
        _mdn(asking)


def test_a_dsn_is_never_answered() -> None:
    report = DNT + b"Content-Type: multipart/report; report-type=delivery-status; boundary=x\r\n"
    assert mdn_decision(report + b"\r\n--x--\r\n") is MdnDecision.NONE


def test_decision_on_a_parsed_header() -> None:
    msg = BytesHeaderParser(policy=compat32).parsebytes(ORIGINAL)
    assert mdn_decision(msg) is MdnDecision.SEND


def test_malformed_request_is_ignored() -> None:
    junk = ORIGINAL_HEAD + b"Disposition-Notification-To: not an address\r\n" + BODY
    assert mdn_decision(junk) is MdnDecision.NONE
    with pytest.raises(ReceiptError, match="ne demande pas"):
        _mdn(junk)


# -- writing an MDN ---------------------------------------------------------------------------------


def test_mdn_structure_and_headers() -> None:
    target, raw = _mdn()
    assert target == "jeanne.dupont@operateur.test"
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF only
    assert b"Secret medical body" not in raw
    msg = message_from_bytes(raw, policy=compat32)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "disposition-notification"
    assert msg["From"] == "docteur.martin@peer.test"
    assert msg["To"] == "<jeanne.dupont@operateur.test>"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["In-Reply-To"] == "<abc@operateur.test>"
    assert msg["Date"] == "Wed, 25 Nov 2026 12:30:00 +0000"
    assert str(msg["Message-ID"]).endswith("@webmail.peer.test>")
    assert _subject(msg) == "Accusé de lecture : Compte rendu opératoire"
    parts = msg.get_payload()
    assert [p.get_content_type() for p in parts] == [
        "text/plain",
        "message/disposition-notification",
        "text/rfc822-headers",
    ]
    fields = _notification(msg)
    assert fields["Reporting-UA"] == "webmail.peer.test; mssante-webmail 0.1.0"
    assert fields["Final-Recipient"] == "rfc822;docteur.martin@peer.test"
    assert fields["Original-Recipient"] == "rfc822;Docteur.Martin@peer.test"
    assert fields["Original-Message-ID"] == "<abc@operateur.test>"
    assert fields["Disposition"] == "manual-action/MDN-sent-manually; displayed"
    assert fields["Error"] is None
    human = parts[0].get_payload(decode=True).decode("utf-8")
    assert human.index("a été affiché") < human.index("was displayed")
    assert b"Message-ID: <abc@operateur.test>" in parts[2].get_payload(decode=True)


def test_mdn_fresh_message_ids() -> None:
    first = message_from_bytes(_mdn()[1], policy=compat32)
    second = message_from_bytes(_mdn()[1], policy=compat32)
    assert first["Message-ID"] != second["Message-ID"]


def test_automatic_processed_mdn() -> None:
    _, raw = _mdn(disposition="automatic-action/MDN-sent-automatically; processed")
    fields = _notification(message_from_bytes(raw, policy=compat32))
    assert fields["Disposition"] == "automatic-action/MDN-sent-automatically; processed"


def test_error_mdn() -> None:
    error = (IntegrationError.INS_MISMATCH, IntegrationError.INS_MISMATCH.label)
    _, raw = _mdn(error=error)
    msg = message_from_bytes(raw, policy=compat32)
    assert _subject(msg) == "[KO Intégration système !][904] Compte rendu opératoire"
    fields = _notification(msg)
    assert fields["Disposition"] == (
        "automatic-action/MDN-sent-automatically; processed/Error: 904^INS non concordant"
    )
    assert fields["Error"] == "904^INS non concordant"
    human = msg.get_payload()[0].get_payload(decode=True).decode("utf-8")
    assert "Erreur 904 : INS non concordant" in human


@pytest.mark.parametrize(
    "options",
    [
        {"disposition": "displayed"},
        {"disposition": "manual-action/MDN-sent-manually; read"},
        {"reader": "not an address"},
        {"hostname": "host\r\nBcc: x@y.test"},
        {"hostname": "web mail>"},
        {"reader": "médecin@peer.test"},
        {"error": (42, "nope")},
        {"error": (904, "  ")},
    ],
)
def test_bad_mdn_arguments_are_refused(options: dict[str, object]) -> None:
    with pytest.raises(ReceiptError):
        _mdn(**options)


# -- reading reports ---------------------------------------------------------------------------------


def test_parse_our_dsn() -> None:
    report = DeliveryReport(
        reporting_mta="smtp.operateur.test",
        sender="jeanne.dupont@operateur.test",
        original=ORIGINAL,
        arrival_date=NOW - timedelta(hours=2),
        recipients=(
            RecipientStatus(
                "Docteur.Martin@peer.test",
                Action.FAILED,
                "5.1.1",
                "550 5.1.1 No such mailbox",
                "smtp.peer.test",
                NOW,
            ),
            RecipientStatus(
                "docteur.durand@peer.test",
                Action.DELAYED,
                "4.4.1",
                "451 4.4.1 no answer",
                "smtp.peer.test",
                NOW - timedelta(minutes=5),
                NOW + timedelta(days=5),
            ),
            RecipientStatus("x@outside.test", Action.FAILED, "5.7.1", "domaine hors espace"),
        ),
        queue_id="42",
    )
    statuses = parse_report(build_dsn(report, now=NOW))
    assert statuses == [
        ReceiptStatus(
            "<abc@operateur.test>",
            "docteur.martin@peer.test",
            ReceiptKind.FAILED,
            "550 5.1.1 No such mailbox",
            NOW,
        ),
        ReceiptStatus(
            "<abc@operateur.test>",
            "docteur.durand@peer.test",
            ReceiptKind.DELAYED,
            "451 4.4.1 no answer",
            NOW - timedelta(minutes=5),
        ),
        ReceiptStatus(
            "<abc@operateur.test>",
            "x@outside.test",
            ReceiptKind.FAILED,
            "5.7.1 domaine hors espace",
            NOW,  # no Last-Attempt-Date: the report's Date
        ),
    ]


POSTFIX_DSN = b"""\
Return-Path: <>
Date: Wed, 25 Nov 2026 11:02:03 +0100 (CET)
From: MAILER-DAEMON@mx.peer.test (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: jeanne.dupont@operateur.test
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="9A1B2C3D4E.1764064923/mx.peer.test"
Message-Id: <20261125100203.ABCDEF@mx.peer.test>

This is a MIME-encapsulated message.

--9A1B2C3D4E.1764064923/mx.peer.test
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.peer.test.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

--9A1B2C3D4E.1764064923/mx.peer.test
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.peer.test
X-Postfix-Queue-ID: 9A1B2C3D4E
X-Postfix-Sender: rfc822; jeanne.dupont@operateur.test
Arrival-Date: Wed, 25 Nov 2026 11:02:01 +0100 (CET)

Final-Recipient: rfc822; Nobody@peer.test
Original-Recipient: rfc822;Nobody@peer.test
Action: failed
Status: 5.1.1
Remote-MTA: dns; mailstore.peer.test
Diagnostic-Code: smtp; 550 5.1.1 <Nobody@peer.test>: Recipient address
    rejected: User unknown in local recipient table

Final-Recipient: rfc822; relay@peer.test
Action: relayed
Status: 2.0.0
Diagnostic-Code: smtp; 250 2.0.0 Ok: queued as 77AA

--9A1B2C3D4E.1764064923/mx.peer.test
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

Return-Path: <jeanne.dupont@operateur.test>
Received: from smtp.operateur.test (smtp.operateur.test [192.0.2.1])
\tby mx.peer.test (Postfix) with ESMTPS id 9A1B2C3D4E
\tfor <Nobody@peer.test>; Wed, 25 Nov 2026 11:02:01 +0100 (CET)
From: Jeanne Dupont <jeanne.dupont@operateur.test>
To: Nobody@peer.test
Subject: Compte rendu
Message-ID: <postfix-case@operateur.test>
Date: Wed, 25 Nov 2026 10:01:00 +0000

--9A1B2C3D4E.1764064923/mx.peer.test--
"""


def test_parse_postfix_dsn() -> None:
    raw = POSTFIX_DSN.replace(b"\n", b"\r\n")
    at = datetime(2026, 11, 25, 10, 2, 3, tzinfo=UTC)
    assert parse_report(raw) == [
        ReceiptStatus(
            "<postfix-case@operateur.test>",
            "nobody@peer.test",
            ReceiptKind.FAILED,
            "550 5.1.1 <Nobody@peer.test>: Recipient address rejected: "
            "User unknown in local recipient table",
            at,
        ),
        ReceiptStatus(
            "<postfix-case@operateur.test>",
            "relay@peer.test",
            ReceiptKind.DELIVERED,
            "250 2.0.0 Ok: queued as 77AA",
            at,
        ),
    ]
    assert parse_report(POSTFIX_DSN) == parse_report(raw)  # bare LF too


def test_parse_dsn_returning_the_whole_message() -> None:
    full = POSTFIX_DSN.replace(
        b"Content-Type: text/rfc822-headers", b"Content-Type: message/rfc822"
    )
    statuses = parse_report(full)
    assert [s.original_message_id for s in statuses] == ["<postfix-case@operateur.test>"] * 2


def test_parse_our_mdn() -> None:
    _, raw = _mdn()
    assert parse_report(raw) == [
        ReceiptStatus(
            "<abc@operateur.test>", "docteur.martin@peer.test", ReceiptKind.READ, "displayed", NOW
        )
    ]


def test_parse_error_mdn() -> None:
    _, raw = _mdn(error=(904, "INS non concordant"))
    [status] = parse_report(raw)
    assert status.kind is ReceiptKind.FAILED
    assert status.detail == "904 INS non concordant"
    assert status.original_message_id == "<abc@operateur.test>"


def test_parse_deleted_mdn_is_not_read() -> None:
    _, raw = _mdn(disposition="manual-action/MDN-sent-manually; deleted")
    [status] = parse_report(raw)
    assert status.kind is ReceiptKind.DELIVERED
    assert status.detail == "deleted"


def test_parse_mdn_with_error_field_only() -> None:
    _, raw = _mdn(disposition="automatic-action/MDN-sent-automatically; processed")
    raw = raw.replace(b"; processed\r\n", b"; processed/error\r\nError: 902^Patient inconnu\r\n")
    [status] = parse_report(raw)
    assert (status.kind, status.detail) == (ReceiptKind.FAILED, "902 Patient inconnu")


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\xff\xfe garbage \r\n\r\n\x80",
        ORIGINAL,
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=x\r\n\r\n",
        b"Content-Type: multipart/report; boundary=x\r\n\r\n--x\r\nContent-Type: "
        b"message/delivery-status\r\n\r\nFinal-Recipient: rfc822; a@b.test\r\nAction: ???\r\n",
        POSTFIX_DSN[: len(POSTFIX_DSN) // 2],
        b"Content-Type: multipart/report; boundary=x\r\n\r\n--x\r\nContent-Type: "
        b"message/disposition-notification\r\n\r\nDisposition: nonsense\r\n--x--\r\n",
    ],
)
def test_junk_gives_nothing(raw: bytes) -> None:
    assert parse_report(raw) == []


def test_not_bytes_gives_nothing() -> None:
    assert parse_report(None) == []  # type: ignore[arg-type]
