"""Delivery status notifications: RFC 3464 reports inside an RFC 6522 ``multipart/report``.

A DSN tells the sender of a message that some of its recipients could not be reached
(``Action: failed``) or not yet (``Action: delayed``). It has three parts (RFC 6522 §3):

1. a human-readable explanation, in French then in English (``text/plain``, UTF-8);
2. the machine-readable ``message/delivery-status`` part (RFC 3464 §2): per-message fields
   (``Reporting-MTA``, ``Arrival-Date``), then one block of per-recipient fields each;
3. the original message's header (``text/rfc822-headers``, RFC 6522 §4), never its body.

:func:`build_dsn` is a pure function: the queue gives it what happened, it returns the bytes.
The DSN goes out with an empty envelope sender (``MAIL FROM:<>``, RFC 5321 §4.5.5) and a
message whose envelope sender is empty never gets one (:func:`wants_report`, RFC 3461 §6.2):
no DSN about a DSN, so two servers can never bounce reports at each other forever.
"""

from __future__ import annotations

import quopri
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.header import Header, decode_header, make_header
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import format_datetime, make_msgid
from enum import StrEnum

CRLF = b"\r\n"
_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)")
_HEADER_LIMIT = 200_000  # the original's header beyond this is not copied into the report


class Action(StrEnum):
    """RFC 3464 §2.3.3 action values this MTA reports."""

    FAILED = "failed"
    DELAYED = "delayed"


@dataclass(frozen=True)
class RecipientStatus:
    """What happened to one recipient (RFC 3464 §2.3)."""

    address: str
    action: Action
    status: str  # RFC 3463 status code, e.g. "5.1.1"
    diagnostic: str = ""  # the last reply, e.g. "550 5.1.1 No such mailbox"; "" if none
    remote_mta: str = ""  # the peer that answered; "" when this MTA decided alone
    last_attempt: datetime | None = None
    will_retry_until: datetime | None = None  # delayed only (RFC 3464 §2.3.8)


@dataclass(frozen=True)
class DeliveryReport:
    """Everything a DSN says about one original message."""

    reporting_mta: str  # this MTA's host name
    sender: str  # the original envelope sender: the DSN's recipient
    original: bytes  # the original message (its header is copied; the body is not)
    arrival_date: datetime  # when the original was queued
    recipients: tuple[RecipientStatus, ...]
    queue_id: str = ""


def wants_report(envelope_sender: str) -> bool:
    """Whether a DSN may be sent about a message from ``envelope_sender``.

    RFC 3461 §6.2 and RFC 5321 §4.5.5: a message with an empty reverse-path (a DSN, an MDN,
    any automatic report) never gets a notification.
    """
    return bool(envelope_sender.strip().strip("<>").strip())


def status_code(reply_code: int, reply_text: str, *, gave_up: bool = False) -> str:
    """The RFC 3463 status of a recipient from its last reply.

    The enhanced code at the start of the reply text is used when there is one (RFC 2034);
    otherwise the reply's class (RFC 3463 §3.1: X.0.0). A recipient given up after temporary
    failures is reported ``5.4.7`` ("delivery time expired", RFC 3463 §3.5).
    """
    if gave_up and reply_code < 500:
        return "5.4.7"
    found = _ENHANCED.match(reply_text.strip())
    if found and found.group(1) == str(reply_code)[:1]:
        return found.group(0)
    return f"{reply_code // 100 if reply_code >= 200 else 4}.0.0"


def header_block(raw: bytes) -> bytes:
    """The header of ``raw`` (up to the first empty line), with CRLF line endings."""
    head = raw[:_HEADER_LIMIT]
    for separator in (b"\r\n\r\n", b"\n\n"):
        if separator in head:
            head = head.split(separator, 1)[0]
            break
    lines = head.replace(b"\r\n", b"\n").split(b"\n")
    return b"".join(line + CRLF for line in lines if line)


def build_dsn(report: DeliveryReport, *, now: datetime, message_id: str | None = None) -> bytes:
    """The DSN for ``report`` as RFC 5322 bytes (CRLF line endings), ready to be delivered."""
    if not report.recipients:
        raise ValueError("a delivery report needs at least one recipient")
    boundary = f"=_mssante-dsn-{secrets.token_hex(12)}"
    original = _Original.parse(report.original)
    headers = _top_headers(report, original, now, message_id, boundary)
    parts = (_human_part(report, original), _status_part(report), _headers_part(report.original))
    body = b"".join(b"--" + boundary.encode() + CRLF + part + CRLF for part in parts)
    preamble = b"This is a MIME-encapsulated delivery status notification (RFC 3464)." + CRLF
    return headers + CRLF + preamble + CRLF + body + b"--" + boundary.encode() + b"--" + CRLF


# -- the original message ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Original:
    subject: str
    date: str
    message_id: str

    @classmethod
    def parse(cls, raw: bytes) -> _Original:
        msg = BytesHeaderParser(policy=compat32).parsebytes(header_block(raw) + CRLF)
        return cls(
            subject=_decoded(msg.get("Subject", "")),
            date=_one_line(msg.get("Date", "")),
            message_id=_one_line(msg.get("Message-ID", "")),
        )


def _decoded(value: object) -> str:
    try:
        return _one_line(str(make_header(decode_header(str(value)))))
    except (ValueError, LookupError):  # RFC 2047 junk: keep the raw text
        return _one_line(value)


def _one_line(value: object) -> str:
    return " ".join(str(value).split())[:500]


# -- top-level header --------------------------------------------------------------------------


def _top_headers(
    report: DeliveryReport,
    original: _Original,
    now: datetime,
    message_id: str | None,
    boundary: str,
) -> bytes:
    failed = any(r.action is Action.FAILED for r in report.recipients)
    prefix = "Non remis / Undelivered" if failed else "Remise retardée / Delivery delayed"
    subject = f"{prefix}: {original.subject}" if original.subject else prefix
    fields = [
        ("From", f"MAILER-DAEMON@{report.reporting_mta}"),
        ("To", f"<{report.sender}>"),
        ("Subject", Header(subject, "utf-8").encode(linesep="\r\n")),
        ("Date", format_datetime(_utc(now))),
        ("Message-ID", message_id or make_msgid("dsn", domain=report.reporting_mta)),
        # RFC 3834 §5: an automatic message; mail robots must not answer it.
        ("Auto-Submitted", "auto-replied"),
        ("MIME-Version", "1.0"),
        (
            "Content-Type",
            f'multipart/report; report-type=delivery-status;\r\n\tboundary="{boundary}"',
        ),
    ]
    if original.message_id:
        fields += [("In-Reply-To", original.message_id), ("References", original.message_id)]
    return b"".join(f"{name}: {value}".encode("ascii", "replace") + CRLF for name, value in fields)


# -- part 1: for people --------------------------------------------------------------------------


def _human_part(report: DeliveryReport, original: _Original) -> bytes:
    text = _human_text(report, original)
    encoded = quopri.encodestring(text.encode("utf-8")).replace(b"\n", CRLF)
    head = (
        b"Content-Type: text/plain; charset=utf-8" + CRLF
        + b"Content-Transfer-Encoding: quoted-printable" + CRLF
        + b"Content-Language: fr, en" + CRLF  # RFC 3282
        + b"Content-Description: Notification" + CRLF
    )  # fmt: skip
    return head + CRLF + encoded


def _human_text(report: DeliveryReport, original: _Original) -> str:
    failed = [r for r in report.recipients if r.action is Action.FAILED]
    delayed = [r for r in report.recipients if r.action is Action.DELAYED]
    french = [f"Ceci est un message automatique du serveur de messagerie {report.reporting_mta}."]
    english = [f"This is an automatic message from the mail server {report.reporting_mta}."]
    if failed:
        french += ["", _FR_FAILED, "", *_listed(failed, "Motif")]
        english += ["", _EN_FAILED, "", *_listed(failed, "Reason")]
    if delayed:
        until = _human_date(max(r.will_retry_until or report.arrival_date for r in delayed))
        french += ["", _FR_DELAYED.format(until=until), "", *_listed(delayed, "Motif")]
        english += ["", _EN_DELAYED.format(until=until), "", *_listed(delayed, "Reason")]
    french += ["", *_about(original, "Message concerné", ("Objet", "Date", "Identifiant"))]
    english += ["", *_about(original, "Your message", ("Subject", "Date", "Message-ID"))]
    french += ["", "Le rapport technique (RFC 3464) et l'en-tête du message d'origine sont joints."]
    english += [
        "",
        "The technical report (RFC 3464) and the original message's header are attached.",
    ]
    return "\n".join([*french, "", "-" * 60, "", *english, ""])


_FR_FAILED = (
    "Votre message n'a pas pu être remis aux destinataires suivants. L'échec est définitif :\n"
    "le serveur n'essaiera plus de le remettre."
)
_EN_FAILED = (
    "Your message could not be delivered to the following recipients. This is a permanent\n"
    "failure: the server will not try again."
)
_FR_DELAYED = (
    "Votre message n'a pas encore pu être remis aux destinataires suivants. Le serveur\n"
    "continue d'essayer jusqu'au {until} ; vous n'avez rien à faire pour l'instant.\n"
    "Vous serez prévenu si la remise échoue définitivement."
)
_EN_DELAYED = (
    "Your message has not been delivered yet to the following recipients. The server keeps\n"
    "trying until {until}; you need not do anything for now. You will be told if delivery\n"
    "finally fails."
)


def _listed(recipients: Sequence[RecipientStatus], label: str) -> list[str]:
    lines: list[str] = []
    for r in recipients:
        lines.append(f"  <{r.address}>")
        if r.diagnostic:
            lines.append(f"    {label}: {r.diagnostic}")
    return lines


def _about(original: _Original, title: str, labels: tuple[str, str, str]) -> list[str]:
    values = (original.subject or "-", original.date or "-", original.message_id or "-")
    return [
        f"{title}:",
        *(f"  {label}: {value}" for label, value in zip(labels, values, strict=True)),
    ]


def _human_date(moment: datetime) -> str:
    return f"{_utc(moment):%Y-%m-%d %H:%M} UTC"


# -- part 2: for programs (RFC 3464 §2) ---------------------------------------------------------


def _status_part(report: DeliveryReport) -> bytes:
    blocks = [_per_message(report), *(_per_recipient(r) for r in report.recipients)]
    text = "\r\n".join("".join(f"{name}: {value}\r\n" for name, value in block) for block in blocks)
    head = b"Content-Type: message/delivery-status" + CRLF + b"Content-Transfer-Encoding: 7bit"
    return head + CRLF + CRLF + _ascii(text)


def _per_message(report: DeliveryReport) -> list[tuple[str, str]]:
    """RFC 3464 §2.2: the per-message fields."""
    fields = [("Reporting-MTA", f"dns; {report.reporting_mta}")]
    if report.queue_id:
        fields.append(("X-MSSante-Queue-ID", report.queue_id))
    fields.append(("Arrival-Date", format_datetime(_utc(report.arrival_date))))
    return fields


def _per_recipient(r: RecipientStatus) -> list[tuple[str, str]]:
    """RFC 3464 §2.3: the per-recipient fields, in the RFC's order."""
    fields = [
        ("Final-Recipient", f"rfc822; {r.address}"),  # §2.3.2
        ("Action", r.action.value),  # §2.3.3
        ("Status", r.status),  # §2.3.4
    ]
    if r.remote_mta:
        fields.append(("Remote-MTA", f"dns; {r.remote_mta}"))  # §2.3.5
    if r.diagnostic:
        # §2.3.6: "smtp" for a reply from the remote MTA; a decision of this MTA (no route,
        # domain outside the trust space, untrusted peer…) is named with an X- type.
        kind = "smtp" if r.remote_mta else "X-MSSante"
        fields.append(("Diagnostic-Code", f"{kind}; {_one_line(r.diagnostic)}"))
    if r.last_attempt is not None:
        fields.append(("Last-Attempt-Date", format_datetime(_utc(r.last_attempt))))  # §2.3.7
    if r.action is Action.DELAYED and r.will_retry_until is not None:
        fields.append(("Will-Retry-Until", format_datetime(_utc(r.will_retry_until))))  # §2.3.8
    return fields


def _ascii(text: str) -> bytes:
    """The delivery-status part is US-ASCII (RFC 3464 §2.1.2); other characters become '?'."""
    return text.encode("ascii", "replace")


# -- part 3: the original header (RFC 6522 §4) -----------------------------------------------------


def _headers_part(original: bytes) -> bytes:
    block = header_block(original)
    encoding = b"7bit" if block.isascii() else b"8bit"
    head = b"Content-Type: text/rfc822-headers" + CRLF + b"Content-Transfer-Encoding: " + encoding
    return head + CRLF + CRLF + block


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
