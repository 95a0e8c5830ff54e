"""Receipts: answering read-receipt requests, and reading the reports that come back.

Two kinds of report travel in an RFC 6522 ``multipart/report``:

- **MDNs** (message disposition notifications, RFC 8098), ``report-type=disposition-notification``:
  the reader's software says what happened to a message once delivered (displayed, processed,
  deleted…). One is asked for with ``Disposition-Notification-To`` (RFC 8098 §2.1). The
  référentiel socle MSSanté #2 (clients, §3.8) also uses them for integration errors in the
  patient's record: ``processed/Error: <code>^<label>`` (902 unknown patient, 903 INS missing,
  904 INS mismatch, 905 incomplete INS), the subject then starting ``[KO Intégration système !]``.
- **DSNs** (delivery status notifications, RFC 3464), ``report-type=delivery-status``: an MTA
  says a message was delivered, relayed, delayed or could not be delivered (see
  :mod:`mssante.mail.dsn`, which writes this operator's own).

:func:`mdn_decision` says whether a message's request may be answered at once, must be put to
the reader first, or must be ignored; :func:`build_mdn` writes the MDN; :func:`parse_report`
turns a DSN or MDN into per-recipient statuses matched to the original by its Message-ID.
An MDN goes out with an empty envelope sender (``MAIL FROM:<>``, RFC 8098 §2.1, RFC 5321
§4.5.5), to the address of ``Disposition-Notification-To``.
"""

from __future__ import annotations

import quopri
import re
import secrets
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.header import Header, decode_header, make_header
from email.message import Message
from email.parser import BytesHeaderParser, HeaderParser
from email.policy import compat32
from email.utils import format_datetime, getaddresses, make_msgid, parseaddr, parsedate_to_datetime
from enum import IntEnum, StrEnum
from types import MappingProxyType

from mssante.config import MimeSettings
from mssante.errors import MssanteError
from mssante.mail.dsn import CRLF, header_block
from mssante.mail.mime import email_message

DEFAULT_DISPOSITION = "manual-action/MDN-sent-manually; displayed"
ERROR_DISPOSITION = "automatic-action/MDN-sent-automatically; processed/Error"
KO_PREFIX = "[KO Intégration système !]"
READ_PREFIX = "Accusé de lecture : "

_REPORT_TYPES = ("message/disposition-notification", "message/delivery-status")
_DISPOSITION = re.compile(
    r"(manual-action|automatic-action)\s*/\s*(MDN-sent-manually|MDN-sent-automatically)\s*;"
    r"\s*(displayed|deleted|dispatched|processed)(\s*/\s*[\x21-\x7e][\x20-\x7e]*)?",
    re.IGNORECASE,
)
_MSGID = re.compile(r"<[^<>\s]+>")
_ADDRESS = re.compile(r"[!#-'*+\-/-9=?A-Z^-~]+(?:\.[!#-'*+\-/-9=?A-Z^-~]+)*@[A-Za-z0-9.-]+")
_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
_DSN_STATUS = ("message/delivery-status", "message/global-delivery-status")
_MDN_STATUS = ("message/disposition-notification", "message/global-disposition-notification")
_RETURNED_HEADERS = ("text/rfc822-headers", "message/global-headers")
_RETURNED_MESSAGES = ("message/rfc822", "message/global")


class ReceiptError(MssanteError):
    """A read receipt could not be written; the message says why, in French."""


class MdnDecision(StrEnum):
    """What to do about a message's read-receipt request (RFC 8098 §2.1)."""

    NONE = "none"  # no request, or the message is itself a report: never answered
    ASK = "ask"  # a request the reader must confirm: "SHOULD NOT be sent automatically"
    SEND = "send"  # a request to the message's own sender (Return-Path): may go at once


class IntegrationError(IntEnum):
    """Integration error codes of the référentiel (§3.8), sent as ``processed/Error`` MDNs."""

    UNKNOWN_PATIENT = 902
    INS_MISSING = 903
    INS_MISMATCH = 904
    INS_INCOMPLETE = 905

    @property
    def label(self) -> str:
        return _INTEGRATION_LABELS[self.value]


_INTEGRATION_LABELS = MappingProxyType(
    {902: "Patient inconnu", 903: "INS absent", 904: "INS non concordant", 905: "INS incomplet"}
)


class ReceiptKind(StrEnum):
    """What a report says about one recipient.

    DSN actions ``delivered``, ``relayed`` and ``expanded`` (RFC 3464 §2.3.3) all count as
    DELIVERED: the message left this path successfully. An MDN ``displayed`` or ``processed``
    without error is READ; ``deleted`` or ``dispatched`` (RFC 8098 §3.2.6.2) proves delivery but
    not reading, so it is DELIVERED; one with the ``error`` modifier is FAILED.
    """

    DELIVERED = "delivered"
    READ = "read"
    FAILED = "failed"
    DELAYED = "delayed"


@dataclass(frozen=True)
class ReceiptStatus:
    """One recipient's status from one report, keyed by the original's Message-ID."""

    original_message_id: str  # with its angle brackets, as in the original's header
    recipient: str  # lower-cased address
    kind: ReceiptKind
    detail: str  # the reason ("550 5.1.1 No such user", "904 INS non concordant") or the type
    at: datetime | None  # when the report says it happened, else the report's Date


_DSN_KINDS = MappingProxyType(
    {
        "failed": ReceiptKind.FAILED,
        "delayed": ReceiptKind.DELAYED,
        "delivered": ReceiptKind.DELIVERED,
        "relayed": ReceiptKind.DELIVERED,
        "expanded": ReceiptKind.DELIVERED,
    }
)


# -- the decision ----------------------------------------------------------------------------------


def mdn_decision(raw_headers: bytes | Message) -> MdnDecision:
    """Whether to answer the read-receipt request of a message (RFC 8098 §2.1, RFC 3834 §2).

    ``raw_headers`` is the message (only its header is read) or an already parsed header.
    NONE when there is no usable ``Disposition-Notification-To`` or when the message is a report
    (an MDN is never answered by an MDN, RFC 8098 §2.1). ASK when the request's address differs
    from ``Return-Path`` (or there is no single one, or several addresses are asked), and for
    automatic messages (``Auto-Submitted`` other than ``no``, RFC 3834 §2): the reader decides.
    SEND otherwise.
    """
    msg = _header_of(raw_headers)
    targets = _requested(msg)
    if _is_report(msg) or not targets:
        return MdnDecision.NONE
    return_path = _return_path(msg)
    if len(targets) != 1 or not return_path or not _same_address(targets[0], return_path):
        return MdnDecision.ASK
    if _clean(msg.get("Auto-Submitted", "no")).lower() != "no":
        return MdnDecision.ASK
    return MdnDecision.SEND


def _header_of(raw: bytes | Message) -> Message:
    if isinstance(raw, Message):
        return raw
    return BytesHeaderParser(policy=compat32).parsebytes(header_block(bytes(raw)) + CRLF)


def _is_report(msg: Message) -> bool:
    ctype = msg.get_content_type()
    return ctype == "multipart/report" or ctype in _REPORT_TYPES


def _requested(msg: Message) -> list[str]:
    """The addresses of ``Disposition-Notification-To``, well-formed ones only."""
    values = [str(v) for v in msg.get_all("Disposition-Notification-To") or []]
    return [address for _, address in getaddresses(values) if _ADDRESS.fullmatch(address)]


def _return_path(msg: Message) -> str:
    values = msg.get_all("Return-Path") or []
    if len(values) != 1:
        return ""
    address = parseaddr(str(values[0]))[1]
    return address if _ADDRESS.fullmatch(address) else ""


def _same_address(left: str, right: str) -> bool:
    """Equal mailboxes: the local part exactly, the domain in any case (RFC 5321 §2.4)."""
    left_local, _, left_domain = left.rpartition("@")
    right_local, _, right_domain = right.rpartition("@")
    return left_local == right_local and left_domain.casefold() == right_domain.casefold()


# -- writing an MDN (RFC 8098 §3) -------------------------------------------------------------------


@dataclass(frozen=True)
class _Original:
    subject: str
    date: str
    message_id: str
    original_recipient: str  # "rfc822;addr" from the original's Original-Recipient, or ""


@dataclass(frozen=True)
class _Mdn:
    target: str
    reader: str
    reporting_ua: str
    hostname: str
    disposition: str
    error: tuple[int, str] | None
    original: _Original


def build_mdn(
    original: bytes,
    *,
    reader: str,
    reporting_ua: str,
    hostname: str,
    disposition: str = DEFAULT_DISPOSITION,
    error: tuple[int, str] | None = None,
    now: datetime | None = None,
) -> tuple[str, bytes]:
    """The MDN answering ``original``: ``(address to send it to, bytes with CRLF line ends)``.

    ``reader`` is the address that read the message (``From`` and ``Final-Recipient``),
    ``reporting_ua`` the software's product name and ``hostname`` the host it runs on
    (``Reporting-UA: <hostname>; <product>``, RFC 8098 §3.2.1). With ``error`` (a référentiel
    code and its label, :class:`IntegrationError`) the disposition is
    ``automatic-action/MDN-sent-automatically; processed/Error: <code>^<label>`` and the subject
    ``[KO Intégration système !][<code>] <subject>``; ``disposition`` is then not used.
    Raises :class:`ReceiptError` when the original asks for no receipt or is itself a report.
    The caller has checked :func:`mdn_decision` (and asked the reader when it says ASK).
    """
    msg = _header_of(original)
    if _is_report(msg):
        raise ReceiptError("Un accusé ou un rapport ne reçoit jamais d'accusé de lecture.")
    targets = _requested(msg)
    if not targets:
        raise ReceiptError("Ce message ne demande pas d'accusé de lecture.")
    mdn = _Mdn(
        target=targets[0],
        reader=_checked_address(reader),
        reporting_ua=_checked_line(reporting_ua, "Le nom du logiciel"),
        hostname=_checked_hostname(hostname),
        disposition=_checked_disposition(disposition, error),
        error=error,
        original=_read_original(msg),
    )
    return mdn.target, _mdn_bytes(mdn, now or datetime.now(UTC), original)


def _checked_address(address: str) -> str:
    if not _ADDRESS.fullmatch(address.strip()):
        raise ReceiptError("L'adresse du lecteur est mal formée.")
    return address.strip()


def _checked_hostname(hostname: str) -> str:
    if not _HOSTNAME.fullmatch(hostname.strip()):
        raise ReceiptError("Le nom d'hôte est mal formé.")
    return hostname.strip()


def _checked_line(value: str, label: str) -> str:
    text = value.strip()
    if not text or not text.isascii() or not text.isprintable():
        raise ReceiptError(f"{label} doit être une ligne de texte ASCII non vide.")
    return text


def _checked_disposition(disposition: str, error: tuple[int, str] | None) -> str:
    if error is not None:
        code, label = error
        text = _ascii(" ".join(label.split()).replace("^", " "))
        if not 100 <= code <= 999 or not text:
            raise ReceiptError("Une erreur d'intégration a un code à 3 chiffres et un libellé.")
        return f"{ERROR_DISPOSITION}: {code}^{text}"
    text = " ".join(disposition.split())
    if not _DISPOSITION.fullmatch(text):
        raise ReceiptError(f"Disposition invalide (RFC 8098 §3.2.6) : {text[:80]!r}.")
    return text


def _read_original(msg: Message) -> _Original:
    recipient = _typed_address(msg.get("Original-Recipient"))
    return _Original(
        subject=_decoded(msg.get("Subject", "")),
        date=_clean(msg.get("Date", "")),
        message_id=_message_id(msg.get("Message-ID")),
        original_recipient=f"rfc822;{recipient}" if recipient else "",
    )


def _mdn_bytes(mdn: _Mdn, now: datetime, original: bytes) -> bytes:
    boundary = f"=_mssante-mdn-{secrets.token_hex(12)}"
    parts = (_human_part(mdn), _notification_part(mdn), _headers_part(original))
    body = b"".join(b"--" + boundary.encode() + CRLF + part + CRLF for part in parts)
    preamble = b"This is a MIME-encapsulated message disposition notification (RFC 8098)." + CRLF
    head = _mdn_headers(mdn, now, boundary)
    return head + CRLF + preamble + CRLF + body + b"--" + boundary.encode() + b"--" + CRLF


def _mdn_headers(mdn: _Mdn, now: datetime, boundary: str) -> bytes:
    original = mdn.original
    if mdn.error is not None:
        subject = f"{KO_PREFIX}[{mdn.error[0]}] {original.subject}".rstrip()
    else:
        subject = f"{READ_PREFIX}{original.subject}" if original.subject else READ_PREFIX[:-3]
    fields = [
        ("From", mdn.reader),
        ("To", f"<{mdn.target}>"),
        ("Subject", Header(subject, "utf-8").encode(linesep="\r\n")),
        ("Date", format_datetime(_utc(now))),
        ("Message-ID", make_msgid("mdn", domain=mdn.hostname)),
        ("Auto-Submitted", "auto-replied"),  # RFC 3834 §5: robots must not answer it
        ("MIME-Version", "1.0"),
        (
            "Content-Type",
            f'multipart/report; report-type=disposition-notification;\r\n\tboundary="{boundary}"',
        ),
    ]
    if original.message_id:
        fields += [("In-Reply-To", original.message_id), ("References", original.message_id)]
    return b"".join(f"{name}: {value}".encode("ascii", "replace") + CRLF for name, value in fields)


def _human_part(mdn: _Mdn) -> bytes:
    """RFC 6522 §3 first part, for people: French, then English."""
    french, english = _what_happened(mdn)
    original = mdn.original
    about = (original.subject or "-", original.date or "-", original.message_id or "-")
    french += ["", "Message concerné :", *_listed(("Objet", "Date", "Identifiant"), about, " :")]
    english += ["", "Your message:", *_listed(("Subject", "Date", "Message-ID"), about, ":")]
    text = "\n".join([*french, "", "-" * 60, "", *english, ""])
    encoded = quopri.encodestring(text.encode("utf-8")).replace(b"\n", CRLF)
    head = (
        b"Content-Type: text/plain; charset=utf-8" + CRLF
        + b"Content-Transfer-Encoding: quoted-printable" + CRLF
        + b"Content-Language: fr, en" + CRLF  # RFC 3282
    )  # fmt: skip
    return head + CRLF + encoded


def _listed(labels: Sequence[str], values: Sequence[str], colon: str) -> list[str]:
    return [f"  {label}{colon} {value}" for label, value in zip(labels, values, strict=True)]


def _what_happened(mdn: _Mdn) -> tuple[list[str], list[str]]:
    who = mdn.reader
    if mdn.error is not None:
        code, label = mdn.error
        return (
            [f"Le message envoyé à {who} n'a pas pu être intégré par le logiciel du destinataire.",
             f"Erreur {code} : {label}"],
            [f"The message sent to {who} could not be integrated by the recipient's software.",
             f"Error {code}: {label}"],
        )  # fmt: skip
    dtype = _disposition_type(mdn.disposition)
    if dtype == "displayed":
        return (
            [f"Le message envoyé à {who} a été affiché. Cela ne garantit pas qu'il a été lu "
             "ou compris."],
            [f"The message sent to {who} was displayed. This does not guarantee that it was read "
             "or understood."],
        )  # fmt: skip
    return (
        [f"Le message envoyé à {who} a été traité ({dtype}) par le logiciel du destinataire."],
        [f"The message sent to {who} was handled ({dtype}) by the recipient's software."],
    )


def _notification_part(mdn: _Mdn) -> bytes:
    """The ``message/disposition-notification`` part, fields in RFC 8098 §3.1's order."""
    original = mdn.original
    fields = [("Reporting-UA", f"{mdn.hostname}; {mdn.reporting_ua}")]
    if original.original_recipient:
        fields.append(("Original-Recipient", original.original_recipient))
    fields.append(("Final-Recipient", f"rfc822;{mdn.reader}"))
    if original.message_id:
        fields.append(("Original-Message-ID", original.message_id))
    fields.append(("Disposition", mdn.disposition))
    if mdn.error is not None:  # RFC 8098 §3.2.7, for readers that look for the Error field
        fields.append(("Error", mdn.disposition.rpartition("Error: ")[2]))
    text = "".join(f"{name}: {value}\r\n" for name, value in fields)
    head = b"Content-Type: message/disposition-notification" + CRLF
    head += b"Content-Transfer-Encoding: 7bit" + CRLF
    return head + CRLF + text.encode("ascii", "replace")


def _headers_part(original: bytes) -> bytes:
    """The original's header as ``text/rfc822-headers`` (RFC 6522 §4), never its body."""
    block = header_block(original)
    encoding = b"7bit" if block.isascii() else b"8bit"
    head = b"Content-Type: text/rfc822-headers" + CRLF + b"Content-Transfer-Encoding: " + encoding
    return head + CRLF + CRLF + block


def _disposition_type(disposition: str) -> str:
    return disposition.partition(";")[2].partition("/")[0].strip().lower()


# -- reading reports ---------------------------------------------------------------------------------


def parse_report(raw: bytes) -> list[ReceiptStatus]:
    """The per-recipient statuses in a DSN (RFC 3464) or MDN (RFC 8098) in ``raw``.

    The original is named by the MDN's ``Original-Message-ID``, else by the ``Message-ID`` of the
    returned header part (``text/rfc822-headers`` or ``message/rfc822``, RFC 6522 §4; that is
    where DSNs, this operator's and Postfix's, carry it), else by the report's ``In-Reply-To``;
    statuses without one are left out. The recipient is ``Final-Recipient`` without its type,
    lower-cased. Anything that is not a readable report gives ``[]``: this never raises.
    """
    try:
        return _parse_report(bytes(raw))
    except Exception:  # junk from the network must never break the mailbox view
        return []


def _parse_report(raw: bytes) -> list[ReceiptStatus]:
    msg = email_message(raw, MimeSettings())  # a report is shallow; deeper parts are opaque
    if msg.get_content_type() != "multipart/report" or not msg.is_multipart():
        return []
    parts = [part for part in msg.get_payload() if isinstance(part, Message)]
    returned = _returned_message_id(parts) or _message_id(msg.get("In-Reply-To"))
    at = _date(msg.get("Date"))
    statuses: list[ReceiptStatus] = []
    for part in parts:
        ctype = part.get_content_type()
        if ctype in _DSN_STATUS:
            statuses += _from_dsn(list(_blocks(part)), returned, at)
        elif ctype in _MDN_STATUS:
            statuses += _from_mdn(list(_blocks(part)), returned, at)
    return statuses


def _blocks(part: Message) -> Iterator[Message]:
    """The groups of fields of a status part, however the parser split it."""
    payload = part.get_payload()
    if isinstance(payload, str):
        yield from _text_blocks(payload)
        return
    for block in payload if isinstance(payload, list) else []:
        if isinstance(block, Message):
            yield block
            rest = block.get_payload()
            if isinstance(rest, str) and rest.strip():
                yield from _text_blocks(rest)


def _text_blocks(text: str) -> Iterator[Message]:
    for chunk in re.split(r"\r?\n[ \t]*\r?\n", text):
        if chunk.strip():
            yield HeaderParser(policy=compat32).parsestr(chunk.strip() + "\n\n")


def _from_dsn(
    blocks: Sequence[Message], message_id: str, at: datetime | None
) -> list[ReceiptStatus]:
    """RFC 3464 §2.3: one status per per-recipient block with a known action."""
    arrival = next((_date(b.get("Arrival-Date")) for b in blocks if b.get("Arrival-Date")), None)
    statuses = []
    for block in blocks:
        recipient = _address_field(block.get("Final-Recipient") or block.get("Original-Recipient"))
        kind = _DSN_KINDS.get(_clean(block.get("Action", "")).lower())
        if recipient and kind is not None and message_id:
            when = _date(block.get("Last-Attempt-Date")) or at or arrival
            statuses.append(ReceiptStatus(message_id, recipient, kind, _dsn_detail(block), when))
    return statuses


def _dsn_detail(block: Message) -> str:
    status = _clean(block.get("Status", ""))
    diagnostic = _clean(block.get("Diagnostic-Code", ""))
    if ";" in diagnostic:
        diagnostic = diagnostic.split(";", 1)[1].strip()  # drop the type: "smtp; 550 …"
    if not diagnostic:
        return status or _clean(block.get("Action", ""))
    return diagnostic if not status or status in diagnostic else f"{status} {diagnostic}"


def _from_mdn(blocks: Sequence[Message], returned: str, at: datetime | None) -> list[ReceiptStatus]:
    """RFC 8098 §3.2: the fields of the notification, one recipient."""
    fields = next((b for b in blocks if b.get("Disposition")), None)
    if fields is None:
        return []
    recipient = _address_field(fields.get("Final-Recipient") or fields.get("Original-Recipient"))
    message_id = _message_id(fields.get("Original-Message-ID")) or returned
    outcome = _mdn_outcome(_clean(fields.get("Disposition")), _clean(fields.get("Error", "")))
    if not recipient or not message_id or outcome is None:
        return []
    kind, detail = outcome
    return [ReceiptStatus(message_id, recipient, kind, detail, at)]


def _mdn_outcome(disposition: str, error_field: str) -> tuple[ReceiptKind, str] | None:
    """RFC 8098 §3.2.6: ``action/sending; type[/modifier…]`` to a kind and a detail."""
    dtype, _, modifiers = disposition.partition(";")[2].partition("/")
    dtype = dtype.strip().lower()
    if modifiers.strip().lower().startswith("error") or (dtype == "processed" and error_field):
        reason = modifiers.strip()[len("error") :].lstrip(" :") or error_field or "error"
        return ReceiptKind.FAILED, " ".join(reason.replace("^", " ").split())
    if dtype in ("displayed", "processed"):
        return ReceiptKind.READ, dtype
    if dtype in ("deleted", "dispatched"):
        return ReceiptKind.DELIVERED, dtype
    return None


def _returned_message_id(parts: Sequence[Message]) -> str:
    for part in parts:
        header = _returned_header(part)
        found = _message_id(header.get("Message-ID")) if header is not None else ""
        if found:
            return found
    return ""


def _returned_header(part: Message) -> Message | None:
    """The original's header in a report part (RFC 6522 §4, RFC 3464 §2), if it is one."""
    ctype = part.get_content_type()
    if ctype in _RETURNED_HEADERS:
        data = part.get_payload(decode=True)
        if isinstance(data, bytes):
            return BytesHeaderParser(policy=compat32).parsebytes(header_block(data) + CRLF)
    elif ctype in _RETURNED_MESSAGES:
        inner = part.get_payload()
        first = inner[0] if isinstance(inner, list) and inner else None
        return first if isinstance(first, Message) else None
    return None


# -- small helpers ---------------------------------------------------------------------------------


def _clean(value: object) -> str:
    return " ".join(str(value or "").split())


def _decoded(value: object) -> str:
    try:
        return _clean(str(make_header(decode_header(str(value)))))[:500]
    except (ValueError, LookupError):  # RFC 2047 junk: keep the raw text
        return _clean(value)[:500]


def _message_id(value: object) -> str:
    """The first ``<id>`` of a field, with its brackets; a bare token gets them; else ""."""
    text = _clean(value)
    found = _MSGID.search(text)
    if found:
        return found.group(0)
    return f"<{text}>" if text and " " not in text and "@" in text else ""


def _address_field(value: object) -> str:
    """``rfc822; Addr@Example`` (RFC 3464 §2.3.2, RFC 8098 §3.2.4) → ``addr@example``."""
    return _typed_address(value).lower()


def _typed_address(value: object) -> str:
    """The address of an ``<address-type>;<address>`` field, its case kept."""
    text = _clean(value)
    if ";" in text:
        text = text.split(";", 1)[1]
    return text.strip().strip("<>").strip()


def _date(value: object) -> datetime | None:
    try:
        moment = parsedate_to_datetime(_clean(value))
    except (TypeError, ValueError, IndexError):
        return None
    return _utc(moment)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _ascii(text: str) -> str:
    """Report fields are US-ASCII (RFC 8098 §3.1.1): accents dropped, the rest replaced."""
    plain = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in plain if not unicodedata.combining(c))
    return plain.encode("ascii", "replace").decode("ascii")
