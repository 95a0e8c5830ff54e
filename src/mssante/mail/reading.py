"""Reading a stored message: what a read view shows (header fields, body, attachments).

:func:`parse_message` walks the MIME tree of an RFC 5322 message (RFC 2045, RFC 2046) and keeps:

* the header fields a reader sees, decoded (RFC 2047 encoded words, and raw UTF-8 as RFC 6532
  allows; raw 8-bit bytes that are not UTF-8 are read as Windows-1252);
* one plain-text body and one HTML body. Inside a ``multipart/alternative`` (RFC 2046 §5.1.4) the
  first ``text/plain`` and the first ``text/html`` are the bodies, searched through nested
  multiparts (``multipart/related`` of RFC 2387, Apple's ``multipart/mixed``); the other versions of
  the same text are dropped, not listed as attachments;
* every other leaf as an :class:`Attachment`: files, ``message/rfc822`` parts (named after their
  subject, ``.eml``), the machine-readable parts of a ``multipart/report`` (RFC 6522), images
  that the HTML shows through ``cid:`` URLs (RFC 2392).

Parts are numbered like IMAP body sections (RFC 3501 §6.4.5): the children of the top-level
multipart are ``1``, ``2``…, their children ``1.1``, ``1.2``…; a message that is not multipart
has one part, ``1``. :func:`attachment_bytes` serves a part by that number.

Received mail is hostile or broken often enough: nothing here raises on a malformed message. The
modern parser (``email.policy.default``) is tried first, then ``compat32``, then the raw bytes are
shown as text. Unknown charsets decode as UTF-8, then Windows-1252, with replacement characters.
"""

from __future__ import annotations

import codecs
import contextlib
import email
import email.policy
import html as html_lib
import mimetypes
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.header import decode_header, make_header
from email.headerregistry import AddressHeader, BaseHeader
from email.message import Message
from email.utils import getaddresses, parsedate_to_datetime

import nh3

from mssante.config import MimeSettings
from mssante.mail.mime import email_message

_PART_ID = re.compile(r"[1-9][0-9]{0,4}(?:\.[1-9][0-9]{0,4}){0,31}")
_MAX_FILENAME = 180
_FALLBACK_NAME = "piece-jointe"
_FILENAME_FORBIDDEN = frozenset('/\\:*?"<>|')  # path separators, and what Windows refuses
_EXTENSIONS = (  # types mimetypes does not know, or knows differently from one host to another
    ("message/rfc822", ".eml"),
    ("message/global", ".eml"),
    ("message/delivery-status", ".txt"),
    ("message/disposition-notification", ".txt"),
    ("text/rfc822-headers", ".txt"),
    ("text/plain", ".txt"),
    ("text/html", ".html"),
    ("application/octet-stream", ".bin"),
)
_EMBEDDED_MESSAGES = frozenset({"message/rfc822", "message/global"})
_MONTHS = (
    "janvier",
    "février",
    "mars",
    "avril",
    "mai",
    "juin",
    "juillet",
    "août",
    "septembre",
    "octobre",
    "novembre",
    "décembre",
)
# html → text for quoting: these canonical tags (as nh3 writes them back) end a line
_LINE_BREAKS = (
    ("<br>", "\n"),
    ("<hr>", "\n"),
    ("</p>", "\n\n"),
    ("</div>", "\n"),
    ("</li>", "\n"),
    ("</tr>", "\n"),
    ("</td>", " "),
    ("</th>", " "),
    ("</blockquote>", "\n"),
    ("</pre>", "\n"),
    ("</table>", "\n"),
    ("</ul>", "\n"),
    ("</ol>", "\n"),
    *((f"</h{level}>", "\n\n") for level in range(1, 7)),
)
_BREAK_TAGS = frozenset(
    {"br", "hr", "p", "div", "li", "tr", "td", "th", "blockquote", "pre", "table", "ul", "ol"}
    | {f"h{level}" for level in range(1, 7)}
)
_DROPPED_CONTENT_TAGS = frozenset({"script", "style", "title", "template"})


@dataclass(frozen=True)
class Attachment:
    """One part a reader downloads (or an HTML body shows through ``cid:``)."""

    part_id: str  # IMAP-style section number (RFC 3501 §6.4.5): "2", "1.2"
    filename: str  # decoded (RFC 2231, RFC 2047), no path separator, no control char, never ""
    content_type: str  # lower case "type/subtype" (RFC 2045 §5)
    size: int  # decoded size in bytes (after base64 / quoted-printable, RFC 2045 §6)
    content_id: str  # RFC 2392 Content-ID without its angle brackets, "" if none
    inline: bool  # shown in the HTML body through a cid: URL (RFC 2183 inline, RFC 2392)


@dataclass(frozen=True)
class MessageView:
    """What a read view shows of one message."""

    subject: str
    from_: str
    to: tuple[str, ...]
    cc: tuple[str, ...]
    reply_to: tuple[str, ...]
    date: datetime | None
    message_id: str
    in_reply_to: str
    references: str
    text: str | None  # the text/plain body, decoded with its charset
    html: str | None  # the text/html body, NOT sanitised: the caller sanitises it
    attachments: tuple[Attachment, ...]
    disposition_notification_to: str  # RFC 8098 §2.1 read-receipt request, "" if none
    return_path: str
    mss_headers: dict[str, str] = field(hash=False)  # X-MSS-* fields, names upper-cased
    is_report: bool  # multipart/report (RFC 6522): a DSN (RFC 3464) or an MDN (RFC 8098)


@dataclass(frozen=True)
class _Leaf:
    """A leaf of the MIME tree and where it sits."""

    part_id: str
    part: Message
    group: str  # the nearest multipart/alternative above it, or its own id if none
    alternative: bool  # a direct child of a multipart/alternative


@dataclass
class _Bodies:
    """What one walk of the tree found (lives as long as one call)."""

    text: str | None = None
    html: str | None = None
    group: str | None = None  # where the first body was found: its alternatives are not files
    found: list[tuple[Attachment, bytes]] = field(default_factory=list)


def parse_message(raw: bytes, limits: MimeSettings | None = None) -> MessageView:
    """The read view of ``raw`` (RFC 5322); never raises, however broken the message is.
    Parts past the MIME limits are one opaque part (mail/mime.py)."""
    limits = limits or MimeSettings()
    for policy in (email.policy.default, email.policy.compat32):
        with contextlib.suppress(Exception):
            return _view(email_message(raw, limits, policy))
    return _raw_view(raw)


def attachment_bytes(
    raw: bytes, part_id: str, limits: MimeSettings | None = None
) -> tuple[Attachment, bytes] | None:
    """The attachment numbered ``part_id`` and its decoded bytes; ``None`` if there is none."""
    if not _PART_ID.fullmatch(part_id):
        return None
    limits = limits or MimeSettings()
    for policy in (email.policy.default, email.policy.compat32):
        with contextlib.suppress(Exception):
            bodies = _collect(email_message(raw, limits, policy))
            return next((item for item in bodies.found if item[0].part_id == part_id), None)
    return None


def quote_for_reply(view: MessageView) -> str:
    """The quoted original for a reply: an attribution line, then each line behind ``> ``.

    Lines already quoted get one more ``>`` without a space (``>> ``), and empty lines a bare
    ``>``, as RFC 3676 §4.5 quotes. An HTML-only message is turned into text first.
    """
    body = view.text if view.text is not None else _html_to_text(view.html or "")
    lines = body.replace("\r\n", "\n").rstrip().split("\n")
    quoted = [_quote_line(line.rstrip()) for line in lines]
    return _attribution(view) + "\n" + "\n".join(quoted) + "\n"


# -- the view ---------------------------------------------------------------------------------


def _view(msg: Message) -> MessageView:
    bodies = _collect(msg)
    return MessageView(
        subject=_text_header(msg, "subject"),
        from_=", ".join(_addresses(msg, "from")),
        to=_addresses(msg, "to"),
        cc=_addresses(msg, "cc"),
        reply_to=_addresses(msg, "reply-to"),
        date=_date(msg),
        message_id=_text_header(msg, "message-id"),
        in_reply_to=_text_header(msg, "in-reply-to"),
        references=_text_header(msg, "references"),
        text=bodies.text,
        html=bodies.html,
        attachments=tuple(attachment for attachment, _ in bodies.found),
        disposition_notification_to=_text_header(msg, "disposition-notification-to"),
        return_path=_text_header(msg, "return-path"),
        mss_headers=_mss_headers(msg),
        is_report=_safe_content_type(msg) == "multipart/report",
    )


def _raw_view(raw: bytes) -> MessageView:
    """The last resort: no header understood, the whole message shown as text."""
    return MessageView(
        subject="",
        from_="",
        to=(),
        cc=(),
        reply_to=(),
        date=None,
        message_id="",
        in_reply_to="",
        references="",
        text=_decode_bytes(raw, None),
        html=None,
        attachments=(),
        disposition_notification_to="",
        return_path="",
        mss_headers={},
        is_report=False,
    )


# -- header fields ----------------------------------------------------------------------------


def _text_header(msg: Message, name: str) -> str:
    """A header field's decoded value (RFC 2047), whitespace collapsed; "" if absent or unreadable."""
    try:
        value = msg.get(name)
    except Exception:  # the modern parser refuses it: decode the raw value ourselves
        value = _raw_header(msg, name)
    if value is None:
        return ""
    if isinstance(value, BaseHeader):
        return _clean_text(str(value))
    return _decode_words(value)


def _raw_header(msg: Message, name: str) -> str | None:
    wanted = name.lower()
    return next((str(v) for k, v in msg.raw_items() if k.lower() == wanted), None)


def _decode_words(value: object) -> str:
    """RFC 2047 encoded words of a raw (compat32) value, decoded."""
    try:
        text = str(make_header(decode_header(value)))  # type: ignore[arg-type]
    except Exception:
        text = str(value)
    return _clean_text(text)


def _clean_text(text: str) -> str:
    """Raw 8-bit bytes (kept as surrogates by the parser) decoded, runs of whitespace collapsed."""
    if any("\udc80" <= ch <= "\udcff" for ch in text):
        text = _decode_bytes(text.encode("utf-8", "surrogateescape"), None)
    return " ".join(text.split())


def _addresses(msg: Message, name: str) -> tuple[str, ...]:
    """The addresses of every ``name`` field, as ``Display Name <local@domain>`` strings."""
    try:
        headers = msg.get_all(name) or []
        if all(isinstance(header, AddressHeader) for header in headers):
            return tuple(
                _format_address(address.display_name, address.addr_spec)
                for header in headers
                if isinstance(header, AddressHeader)
                for address in header.addresses
            )
    except Exception:  # malformed beyond what the modern parser recovers: the old way below
        headers = [v for k, v in msg.raw_items() if k.lower() == name]
    pairs = getaddresses([_decode_words(header) for header in headers])
    return tuple(_format_address(n, a) for n, a in pairs if n or a)


def _format_address(display_name: str, addr_spec: str) -> str:
    """``Name <addr>``, the name quoted only when it would split an address list (RFC 5322 §3.4)."""
    name, addr = _clean_text(display_name), _clean_text(addr_spec)
    if not name or not addr:
        return name or addr
    if any(ch in name for ch in ',;<>@:"\\()'):
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name} <{addr}>"


def _date(msg: Message) -> datetime | None:
    """The Date field (RFC 5322 §3.3), or ``None`` if absent or not a date."""
    with contextlib.suppress(Exception):
        value = msg.get("date")
        parsed = getattr(value, "datetime", None)
        if isinstance(parsed, datetime):
            return parsed
        if isinstance(value, str) and value.strip():
            return parsedate_to_datetime(value)
    return None


def _mss_headers(msg: Message) -> dict[str, str]:
    """Every ``X-MSS-*`` field of the MSSanté client référentiel, first occurrence of each."""
    result: dict[str, str] = {}
    for name in msg.keys():  # noqa: SIM118 - a Message is not a dict: keys() keeps duplicates
        key = str(name).upper()
        if key.startswith("X-MSS-") and key not in result:
            result[key] = _text_header(msg, name)
    return result


# -- the MIME tree ----------------------------------------------------------------------------


def _collect(msg: Message) -> _Bodies:
    bodies = _Bodies()
    for leaf in _leaves(msg, "", None, alternative=False):
        _classify(leaf, bodies)
    return bodies


def _leaves(
    part: Message, part_id: str, group: str | None, *, alternative: bool
) -> Iterator[_Leaf]:
    """The leaves of the tree, depth first, with their RFC 3501 section numbers."""
    children = _children(part)  # the tree is cut at the MIME limits (mail/mime.py)
    if children is None:
        own_id = part_id or "1"
        yield _Leaf(own_id, part, group or own_id, alternative)
        return
    is_alternative = _safe_content_type(part) == "multipart/alternative"
    child_group = (part_id or "root") if is_alternative else group
    for index, child in enumerate(children, start=1):
        child_id = f"{part_id}.{index}" if part_id else str(index)
        yield from _leaves(child, child_id, child_group, alternative=is_alternative)


def _children(part: Message) -> Sequence[Message] | None:
    """The parts of a multipart (RFC 2046 §5.1); ``None`` for a leaf or a multipart without any."""
    if not _safe_content_type(part).startswith("multipart/"):
        return None
    payload = part.get_payload()
    if isinstance(payload, list) and payload:
        return [child for child in payload if isinstance(child, Message)]
    return None


def _classify(leaf: _Leaf, bodies: _Bodies) -> None:
    """A body if it is the first of its kind in the body's group, else an attachment."""
    content_type = _leaf_type(leaf.part)
    if content_type in ("text/plain", "text/html") and _may_be_body(leaf.part):
        same_group = bodies.group is None or bodies.group == leaf.group
        slot = "text" if content_type == "text/plain" else "html"
        if same_group and getattr(bodies, slot) is None:
            setattr(bodies, slot, _body_text(leaf.part))
            bodies.group = leaf.group
            return
        if same_group and leaf.alternative:
            return  # one more version of the body (RFC 2046 §5.1.4), not a file
    data = _part_bytes(leaf.part)
    bodies.found.append((_attachment(leaf, content_type, data), data))


def _may_be_body(part: Message) -> bool:
    """Not a file: no ``attachment`` disposition (RFC 2183 §2.2), no file name."""
    with contextlib.suppress(Exception):
        return part.get_content_disposition() != "attachment" and not part.get_filename()
    return True


def _leaf_type(part: Message) -> str:
    """The leaf's type; a multipart without parts (no boundary found) is shown as text."""
    content_type = _safe_content_type(part)
    return "text/plain" if content_type.startswith("multipart/") else content_type


def _safe_content_type(part: Message) -> str:
    """RFC 2045 §5.2: a missing or invalid Content-Type is ``text/plain``."""
    try:
        return part.get_content_type().lower()
    except Exception:
        return "text/plain"


# -- the parts' contents ----------------------------------------------------------------------


def _body_text(part: Message) -> str:
    """A text body decoded with its charset (RFC 2046 §4.1.2), line ends made ``\\n``."""
    data = _part_bytes(part)
    try:
        charset = part.get_content_charset()
    except Exception:
        charset = None
    return _decode_bytes(data, charset).replace("\r\n", "\n")


def _part_bytes(part: Message) -> bytes:
    """A leaf's decoded content (RFC 2045 §6); an embedded message as it would be saved."""
    payload = part.get_payload()
    if isinstance(payload, list):  # message/rfc822 and other message/* (RFC 2046 §5.2)
        return b"".join(_message_bytes(m) for m in payload if isinstance(m, Message))
    try:
        data = part.get_payload(decode=True)
    except Exception:
        data = None
    if isinstance(data, bytes):
        return data
    return str(payload).encode("utf-8", "surrogateescape")


def _message_bytes(msg: Message) -> bytes:
    for policy in (None, email.policy.compat32):
        with contextlib.suppress(Exception):
            return msg.as_bytes() if policy is None else msg.as_bytes(policy=policy)
    return str(msg).encode("utf-8", "replace")


def _decode_bytes(data: bytes, charset: str | None) -> str:
    """``data`` in ``charset``; unknown, absent or ASCII: UTF-8 if it is, else Windows-1252."""
    codec = _codec_name(charset)
    if codec is not None:
        with contextlib.suppress(LookupError):  # a codec that is not a text encoding (base64…)
            return data.decode(codec, errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def _codec_name(charset: str | None) -> str | None:
    """Python's codec for a MIME charset (RFC 2046 §4.1.2); ``None`` to guess."""
    if not charset:
        return None
    try:
        name = codecs.lookup(charset.strip().strip('"')).name
    except (LookupError, ValueError):
        return None
    if name == "ascii":
        return None  # mail labelled us-ascii often is not: guess
    return "cp1252" if name == "iso8859-1" else name  # as browsers read Latin-1 (WHATWG Encoding)


def _attachment(leaf: _Leaf, content_type: str, data: bytes) -> Attachment:
    part = leaf.part
    content_id = _text_header(part, "content-id").strip().strip("<>").strip()
    try:
        disposition = part.get_content_disposition()
    except Exception:
        disposition = None
    return Attachment(
        part_id=leaf.part_id,
        filename=_filename(part, content_type),
        content_type=content_type,
        size=len(data),
        content_id=content_id,
        inline=bool(content_id) and disposition != "attachment",
    )


def _filename(part: Message, content_type: str) -> str:
    """The part's file name (RFC 2183 §2.3, RFC 2231 §4, or RFC 2047 words), made safe."""
    name = ""
    if content_type in _EMBEDDED_MESSAGES:
        name = _embedded_subject(part)
    if not name:
        with contextlib.suppress(Exception):
            name = part.get_filename() or ""
    if "=?" in name:
        name = _decode_words(name)  # RFC 2047 words inside a parameter: forbidden, yet common
    return _safe_filename(_clean_text(name), content_type)


def _embedded_subject(part: Message) -> str:
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        subject = _text_header(payload[0], "subject").replace("/", "_").replace("\\", "_")
        return subject + ".eml" if subject else ""
    return ""


def _safe_filename(name: str, content_type: str) -> str:
    """No directory, no control or format character (RLO spoofing), no leading dot, not empty."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = unicodedata.normalize("NFC", name)
    name = "".join(
        "_" if ch in _FILENAME_FORBIDDEN else ch
        for ch in name
        if unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co", "Zl", "Zp")
    )
    name = " ".join(name.split()).strip(" .")
    if len(name) > _MAX_FILENAME:
        stem, dot, extension = name.rpartition(".")
        keep = extension[:16] if dot and stem else ""
        name = name[: _MAX_FILENAME - len(keep) - 1].rstrip(" .") + ("." + keep if keep else "")
    return name or _FALLBACK_NAME + _extension(content_type)


def _extension(content_type: str) -> str:
    known = dict(_EXTENSIONS).get(content_type)
    if known is not None:
        return known
    return mimetypes.guess_extension(content_type, strict=False) or ""


# -- quoting ----------------------------------------------------------------------------------


def _quote_line(line: str) -> str:
    if not line:
        return ">"
    return ">" + line if line.startswith(">") else "> " + line


def _attribution(view: MessageView) -> str:
    """``Le 3 mars 2025 à 14:05, Hélène Martin <…> a écrit :``"""
    author = view.from_ or "l'expéditeur"
    if view.date is None:
        return f"{author} a écrit :"
    when = view.date
    day = f"{when.day} {_MONTHS[when.month - 1]} {when.year} à {when:%H:%M}"
    return f"Le {day}, {author} a écrit :"


def _html_to_text(html: str) -> str:
    """HTML made text for quoting: nh3 strips the tags, block ends become line ends."""
    kept = nh3.clean(
        html,
        tags=set(_BREAK_TAGS),
        clean_content_tags=set(_DROPPED_CONTENT_TAGS),
        attributes={},
        link_rel=None,
    )
    flat = " ".join(kept.split())  # HTML whitespace collapses: only the tags break lines
    for tag, replacement in _LINE_BREAKS:
        flat = flat.replace(tag, replacement)
    text = html_lib.unescape(nh3.clean(flat, tags=set())).replace("\xa0", " ")
    lines = [line.strip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
