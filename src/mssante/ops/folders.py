"""Folder operations on a mailbox: the one layer that IMAP and (later) the webmail share.

A *mailbox* (BAL) is one account's namespace of folders: INBOX, Sent, Drafts, Trash, Archive
(RFC 6154 special-use) and the user's own. Every operation takes the caller and the mailbox's
address and checks, inside its own transaction, that the caller may do that operation to that
mailbox (:func:`mssante.ops.rights.require`, the one authorization rule): nobody lists, selects,
fetches, searches, changes, copies into or appends to a mailbox beyond what they hold on it. An
unknown mailbox and someone else's give the same error (:class:`AccessDenied`), so that the
answer does not reveal which addresses exist; a caller who holds other operations on the mailbox
gets :class:`NotPermitted`, audited as ``mailbox.refused_operation``.

UIDs follow RFC 9051 §2.3.1.1: strictly ascending per folder and never reused, taken from the
folder row's ``uid_next`` under its write lock (as :mod:`mssante.ops.mailstore` does). Every
write starts by locking the rows of the folders it touches (lowest id first), so concurrent
writers of a folder are serialised on SQLite and PostgreSQL alike. Flags live in
``MailboxEntry.flags`` (sorted, space-separated): the same data the webmail shows. Bodies stay in
the blob store; an expunged entry leaves its message row and blob to a later clean-up.

Changes are audited in the transaction that makes them (append, move, expunge, folder
creation, deletion, renaming). After a change commits, ``notify(address)`` is called so that
IMAP sessions waiting on that mailbox (IDLE) look again at once.
"""

from __future__ import annotations

import email
import email.message
import email.utils
import functools
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from email.errors import HeaderParseError
from email.header import Header, decode_header, make_header
from enum import StrEnum
from typing import Any, Concatenate, Literal, ParamSpec, Protocol, TypeVar

from sqlalchemy import (
    ColumnElement,
    Row,
    and_,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.orm import Session

from mssante.audit.events import AuditEvent, AuditRecord
from mssante.audit.log import append as audit_append
from mssante.config import MimeSettings
from mssante.errors import MssanteError
from mssante.mail.mime import email_message
from mssante.ops.mailstore import STANDARD_FOLDERS, Headers, MailStore
from mssante.ops.rights import (
    FLAG_CHANGES,
    AccessDenied,
    Caller,
    NotPermitted,
    Operation,
    flag_operation,
    held,
    may_change_flag,
    require,
)
from mssante.store import tables
from mssante.store.blobs import BlobStore
from mssante.store.db import Database
from mssante.store.models import Folder, Mailbox, MailboxAccess

INBOX = "INBOX"
DELIMITER = "/"
SEEN, DELETED = "\\Seen", "\\Deleted"
# RFC 9051 §2.3.2 system flags, in their canonical spelling; \Recent is a session flag only.
SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
_STANDARD = frozenset(name for name, _ in STANDARD_FOLDERS)
_FLAGS_COLUMN = 500  # MailboxEntry.flags is a String(500)
_NAME_COLUMN = 200  # Folder.name is a String(200)
_MAX_VALIDITY = 2**32 - 1  # UIDVALIDITY is a 32-bit nz-number (RFC 9051 §9)
_IN_CHUNK = 500  # UIDs per IN (...) list
_ATOM_SPECIALS = frozenset(' (){%*"]')  # a keyword is an atom (RFC 9051 §9 flag-keyword)


# --- Who may do what: ops/rights.py decides ------------------------------------------------------


def is_delegated(account: Caller, mailbox: Mailbox) -> bool:
    """The account reaches the mailbox through a grant, not as its owner (audited as such)."""
    return mailbox.owner_account_id != account.account_id


# --- Errors -------------------------------------------------------------------------------------


class FolderError(MssanteError):
    """A folder operation was refused (:class:`AccessDenied`, from ops/rights.py, when the
    caller may not do it)."""


class FolderNotFound(FolderError):
    pass


class FolderExists(FolderError):
    pass


class FolderRefused(FolderError):
    """The operation is not allowed on that folder or with those values."""


# --- What the operations return -----------------------------------------------------------------


class FlagMode(StrEnum):
    ADD = "add"
    REMOVE = "remove"
    REPLACE = "replace"


@dataclass(frozen=True)
class FolderInfo:
    name: str
    special_use: str  # RFC 6154 attribute (\Sent, \Trash…) or ""
    uid_validity: int
    uid_next: int


@dataclass(frozen=True)
class FolderStatus:
    folder: FolderInfo
    messages: int
    unseen: int
    first_unseen: int | None  # message sequence number of the first unseen message


@dataclass(frozen=True)
class Entry:
    """A message as one folder holds it."""

    uid: int
    flags: frozenset[str]
    internal_date: datetime
    size: int


@dataclass(frozen=True)
class Summary:
    """A line of the webmail's message list: from the database only, never the blob."""

    uid: int
    flags: frozenset[str]
    subject: str
    from_address: str
    date: datetime | None
    internal_date: datetime
    size: int
    message_id: str


@dataclass(frozen=True)
class Page:
    """Newest first; ``older`` is the UID to pass as ``before`` for the next page, if any."""

    folder: FolderInfo
    summaries: tuple[Summary, ...]
    older: int | None


@dataclass(frozen=True)
class FolderView:
    """A selected folder: its counters and its messages in ascending UID order."""

    folder: FolderInfo
    entries: tuple[Entry, ...]
    folder_id: int

    @property
    def probe(self) -> Probe:
        return Probe(
            self.folder_id, self.folder.uid_validity, self.folder.uid_next, len(self.entries)
        )


@dataclass(frozen=True)
class Probe:
    """What a cheap poll compares to notice another process's change (new or expunged mail)."""

    folder_id: int  # the folder's row: a folder deleted and made again is another folder
    uid_validity: int
    uid_next: int
    messages: int


@dataclass(frozen=True)
class CopyResult:
    """The destination's UIDVALIDITY and (source UID, new UID) pairs: COPYUID (RFC 4315 §3)."""

    uid_validity: int
    uids: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class AppendResult:
    """APPENDUID (RFC 4315 §3)."""

    uid_validity: int
    uid: int


@dataclass(frozen=True)
class UidRange:
    """UIDs from ``first`` to ``last`` included; ``last=None`` means up to the highest."""

    first: int = 1
    last: int | None = None


Uids = UidRange | Collection[int]


# --- Search criteria (RFC 9051 §6.4.4), independent of any protocol ------------------------------


class Candidate:
    """One message under test; its body is read from the blob store only if a criterion needs
    it, and parsed once."""

    def __init__(self, row: Row[Any], blobs: BlobStore, mime: MimeSettings) -> None:
        self.uid: int = row.uid
        self.flags = _flag_set(row.flags)
        self.internal_date: datetime = row.internal_date
        self.size: int = row.size
        self._digest: str = row.blob_sha256
        self._blobs = blobs
        self._mime = mime
        self._parsed: email.message.Message | None = None

    def message(self) -> email.message.Message:
        if self._parsed is None:
            self._parsed = email_message(self._blobs.get(self._digest), self._mime)
        return self._parsed


class Criterion(Protocol):
    @property
    def needs_content(self) -> bool: ...

    def matches(self, candidate: Candidate) -> bool: ...


@dataclass(frozen=True)
class All:
    needs_content = False

    def matches(self, candidate: Candidate) -> bool:
        return True


@dataclass(frozen=True)
class HasFlag:
    """SEEN, UNSEEN, FLAGGED, KEYWORD… (``present=False`` for the UN- forms)."""

    flag: str
    present: bool = True
    needs_content = False

    def matches(self, candidate: Candidate) -> bool:
        return (normal_flag(self.flag) in candidate.flags) == self.present


@dataclass(frozen=True)
class InUids:
    uids: frozenset[int]
    needs_content = False

    def matches(self, candidate: Candidate) -> bool:
        return candidate.uid in self.uids


@dataclass(frozen=True)
class DateIs:
    """BEFORE/ON/SINCE (internal date) or SENTBEFORE/SENTON/SENTSINCE (``sent``: the Date
    header); the day only, time and zone disregarded (RFC 9051 §6.4.4)."""

    op: Literal["before", "on", "since"]
    day: date
    sent: bool = False

    @property
    def needs_content(self) -> bool:
        return self.sent

    def matches(self, candidate: Candidate) -> bool:
        when = _sent_day(candidate) if self.sent else candidate.internal_date.date()
        if when is None:
            return False
        if self.op == "before":
            return when < self.day
        if self.op == "on":
            return when == self.day
        return when >= self.day


@dataclass(frozen=True)
class SizeIs:
    op: Literal["larger", "smaller"]
    octets: int
    needs_content = False

    def matches(self, candidate: Candidate) -> bool:
        if self.op == "larger":
            return candidate.size > self.octets
        return candidate.size < self.octets


@dataclass(frozen=True)
class HeaderHas:
    """FROM, TO, CC, BCC, SUBJECT and HEADER: a case-insensitive substring of the decoded
    field; an empty string matches every message that has the field."""

    name: str
    text: str
    needs_content = True

    def matches(self, candidate: Candidate) -> bool:
        values = [_decoded(v) for v in candidate.message().get_all(self.name, [])]
        needle = self.text.casefold()
        return any(needle in value.casefold() for value in values)


@dataclass(frozen=True)
class TextHas:
    """BODY (``body_only``) or TEXT (header and body): a case-insensitive substring of the
    decoded text parts."""

    text: str
    body_only: bool = False
    needs_content = True

    def matches(self, candidate: Candidate) -> bool:
        needle = self.text.casefold()
        return any(
            needle in chunk.casefold()
            for chunk in _texts(candidate.message(), headers=not self.body_only)
        )


@dataclass(frozen=True)
class Not:
    criterion: Criterion

    @property
    def needs_content(self) -> bool:
        return self.criterion.needs_content

    def matches(self, candidate: Candidate) -> bool:
        return not self.criterion.matches(candidate)


@dataclass(frozen=True)
class Or:
    left: Criterion
    right: Criterion

    @property
    def needs_content(self) -> bool:
        return self.left.needs_content or self.right.needs_content

    def matches(self, candidate: Candidate) -> bool:
        return self.left.matches(candidate) or self.right.matches(candidate)


@dataclass(frozen=True)
class And:
    criteria: tuple[Criterion, ...]

    @property
    def needs_content(self) -> bool:
        return any(c.needs_content for c in self.criteria)

    def matches(self, candidate: Candidate) -> bool:
        # The cheap criteria first: most messages are ruled out before their body is read.
        ordered = sorted(self.criteria, key=lambda c: c.needs_content)
        return all(c.matches(candidate) for c in ordered)


def _decoded(value: object) -> str:
    """A header's text: RFC 2047 words decoded, raw 8-bit bytes read as UTF-8 (RFC 6532)."""
    raw = value if isinstance(value, Header) else str(value)
    try:
        parts = [
            (chunk, "utf-8" if charset == "unknown-8bit" else charset)
            for chunk, charset in decode_header(raw)
        ]
        return str(make_header(parts))
    except (ValueError, LookupError, UnicodeError, HeaderParseError):  # junk: the raw text
        return str(value)


def _sent_day(candidate: Candidate) -> date | None:
    value = candidate.message().get("Date")
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(str(value)).date()
    except (TypeError, ValueError, IndexError):
        return None


def _texts(msg: email.message.Message, *, headers: bool) -> Iterator[str]:
    if headers:
        yield from (f"{name}: {_decoded(value)}" for name, value in msg.items())
    for part in msg.walk():
        if part.get_content_maintype() != "text":
            continue
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            yield _as_text(payload, part.get_content_charset() or "utf-8")


def _as_text(payload: bytes, charset: str) -> str:
    try:
        return payload.decode(charset, "replace")
    except LookupError:  # an unknown charset name
        return payload.decode("latin-1")


# --- Flags --------------------------------------------------------------------------------------


def normal_flag(flag: str) -> str:
    """System flags in their canonical spelling (flags are case-insensitive, RFC 9051 §2.3.2);
    keywords as given."""
    if flag.startswith("\\"):
        for known in SYSTEM_FLAGS:
            if known.lower() == flag.lower():
                return known
    return flag


def _check_flags(flags: Collection[str]) -> frozenset[str]:
    result = set()
    for flag in flags:
        canonical = normal_flag(flag)
        if canonical.lower() == "\\recent":
            continue  # a session flag: never stored
        if canonical.startswith("\\") and canonical not in SYSTEM_FLAGS:
            raise FolderRefused(f"unknown system flag {flag}")
        if (
            not canonical.isascii()
            or not canonical.isprintable()
            or _ATOM_SPECIALS & set(canonical)
        ):
            raise FolderRefused(f"invalid flag {flag!r}")
        result.add(canonical)
    return frozenset(result)


def _flag_set(text: str) -> frozenset[str]:
    return frozenset(text.split()) if text else frozenset()


def _flag_text(flags: Collection[str]) -> str:
    text = " ".join(sorted(flags))
    if len(text) > _FLAGS_COLUMN:
        raise FolderRefused("too many flags on one message")
    return text


def _apply(
    mode: FlagMode, current: frozenset[str], change: frozenset[str], may: Callable[[str], bool]
) -> frozenset[str]:
    """The flags after the change, where only the flags ``may`` allows move."""
    allowed = frozenset(f for f in change if may(f))
    if mode is FlagMode.ADD:
        return current | allowed
    if mode is FlagMode.REMOVE:
        return current - allowed
    return frozenset(f for f in current if not may(f)) | allowed


# --- Folder names -------------------------------------------------------------------------------


def normal_name(name: str) -> str:
    """INBOX is case-insensitive, and so is the INBOX in INBOX/… (RFC 9051 §5.1)."""
    if name.upper() == INBOX:
        return INBOX
    if name.upper().startswith(INBOX + DELIMITER):
        return INBOX + name[len(INBOX) :]
    return name


def _check_new_name(name: str) -> str:
    name = normal_name(name)
    levels = name.split(DELIMITER)
    if not name or len(name) > _NAME_COLUMN or not name.isprintable():
        raise FolderRefused("invalid folder name")
    if any(not level.strip() or level != level.strip() for level in levels):
        raise FolderRefused("invalid folder name: empty level or spaces around a level")
    if any(c in name for c in "*%"):
        raise FolderRefused("a folder name may not contain * or %")
    return name


# --- The operations -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    mailbox: Mailbox
    folder: Folder
    holds: frozenset[Operation]  # what the caller may do to the mailbox (ops/rights.py)


P = ParamSpec("P")
T = TypeVar("T")


def _refusals_audited(
    method: Callable[Concatenate[Folders, Caller, P], T],
) -> Callable[Concatenate[Folders, Caller, P], T]:
    """A caller refused an operation on a mailbox it holds other rights on (a read-only
    delegate trying to delete, say) is audited, in a transaction of its own since the
    operation's rolled back: ``mailbox.refused_operation``, actor: the person."""

    @functools.wraps(method)
    def audited(self: Folders, account: Caller, /, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return method(self, account, *args, **kwargs)
        except NotPermitted as exc:
            with self.db.session() as session:
                context = {"operation": exc.operation.value, "rights": exc.operation.letters}
                _audit(session, AuditEvent.MAILBOX_REFUSED_OPERATION, account, exc.address, context)
            raise

    return audited


class Folders:
    """Folder operations, each one transaction that checks the caller's right first.

    ``notify(address)`` is called after a change to that mailbox commits (in the caller's
    thread)."""

    def __init__(
        self,
        db: Database,
        blobs: BlobStore,
        *,
        notify: Callable[[str], None] | None = None,
        mime: MimeSettings | None = None,
    ) -> None:
        self.db = db
        self.blobs = blobs
        self.mime = mime or MimeSettings()  # SEARCH reads message contents within these limits
        self._notify = notify or (lambda _address: None)

    # -- mailboxes --------------------------------------------------------------------------
    def mailboxes(self, account: Caller) -> list[str]:
        """Addresses of the open mailboxes the account may list (own or granted)."""
        with self.db.session() as session:
            granted = select(MailboxAccess.mailbox_id).where(
                MailboxAccess.account_id == account.account_id
            )
            boxes = session.execute(
                select(Mailbox).where(
                    (Mailbox.owner_account_id == account.account_id) | Mailbox.id.in_(granted)
                )
            ).scalars()
            return sorted(b.address for b in boxes if Operation.LIST in held(account, b))

    def default_mailbox(self, account: Caller) -> str | None:
        """The mailbox a login opens: the one at the login's address, else the first."""
        boxes = self.mailboxes(account)
        return account.login if account.login in boxes else (boxes[0] if boxes else None)

    @_refusals_audited
    def check(self, account: Caller, address: str, operation: Operation) -> str:
        """The mailbox's address (lower case) if the account may do ``operation`` to it."""
        with self.db.session() as session:
            return _mailbox(session, account, address, operation)[0].address

    def rights(self, account: Caller, address: str) -> frozenset[Operation]:
        """Everything the account may do to the mailbox now (what a door shows: the webmail's
        buttons); :class:`AccessDenied` if nothing."""
        with self.db.session() as session:
            return _mailbox(session, account, address, Operation.LIST)[1]

    def open(self, account: Caller, address: str) -> str:
        """:meth:`check` for LIST at the start of a session (IMAP login, webmail); a mailbox
        reached through a grant is audited (``mailbox.delegated_access``, actor: the person)."""
        with self.db.session() as session:
            box, _ = _mailbox(session, account, address, Operation.LIST)
            if is_delegated(account, box):
                _audit(session, AuditEvent.DELEGATED_ACCESS, account, box.address, {})
            return box.address

    # -- folders ----------------------------------------------------------------------------
    def list_folders(self, account: Caller, address: str) -> list[FolderInfo]:
        """INBOX first, then by name. Standard folders missing (an old mailbox) are created."""
        with self.db.session() as session:
            box, _ = _mailbox(session, account, address, Operation.LIST)
            if not {f.name for f in box.folders} >= _STANDARD:
                MailStore.ensure_folders(session, box)
                session.flush()
            infos = [_info(f) for f in box.folders]
        return sorted(infos, key=lambda i: (i.name != INBOX, i.name))

    def status(self, account: Caller, address: str, folder: str) -> FolderStatus:
        with self.db.session() as session:
            target = _target(session, account, address, folder, Operation.READ)
            rows = session.execute(
                select(_E.c.uid, _E.c.flags)
                .where(_E.c.folder_id == target.folder.id)
                .order_by(_E.c.uid)
            ).all()
            info = _info(target.folder, max((r.uid for r in rows), default=0))
        unseen = [i for i, r in enumerate(rows, 1) if SEEN not in _flag_set(r.flags)]
        return FolderStatus(info, len(rows), len(unseen), unseen[0] if unseen else None)

    def select(self, account: Caller, address: str, folder: str) -> FolderView:
        """The folder's counters and every message's UID, flags, date and size."""
        with self.db.session() as session:
            target = _target(session, account, address, folder, Operation.READ)
            rows = session.execute(
                _entries_query().where(_E.c.folder_id == target.folder.id).order_by(_E.c.uid)
            ).all()
            entries = tuple(_entry(r) for r in rows)
            last = entries[-1].uid if entries else 0
            return FolderView(_info(target.folder, last), entries, target.folder.id)

    def probe(self, account: Caller, address: str, folder: str) -> Probe:
        """UIDVALIDITY, UIDNEXT and the number of messages: enough to notice another
        process's delivery or expunge without listing the folder."""
        return self.probe_with_rights(account, address, folder)[0]

    def probe_with_rights(
        self, account: Caller, address: str, folder: str
    ) -> tuple[Probe, frozenset[Operation]]:
        """:meth:`probe`, and what the caller may do to the mailbox (IMAP's PERMANENTFLAGS
        and READ-ONLY, RFC 4314 §4): no query more than the probe's."""
        with self.db.session() as session:
            target = _target(session, account, address, folder, Operation.READ)
            return _probes(session, [target.folder.id])[target.folder.id], target.holds

    def probe_many(self, folder_ids: Collection[int]) -> dict[int, Probe]:
        """The probes of many folders in one query, by folder id (a folder gone is absent).

        No caller: this serves the IMAP watch (``imap/watch.py``), which only polls folders
        that sessions selected with their own rights, and only compares counters; a session
        it wakes relists the folder through :meth:`select`, which checks the rights again."""
        if not folder_ids:
            return {}
        with self.db.session() as session:
            return _probes(session, folder_ids)

    # -- messages ---------------------------------------------------------------------------
    def page(
        self,
        account: Caller,
        address: str,
        folder: str,
        *,
        before: int | None = None,
        limit: int = 50,
        text: str = "",
    ) -> Page:
        """One page of the folder, newest first, below UID ``before``: a range scan of the
        ``(folder_id, uid)`` index, never a count or an OFFSET, so the page costs the same in a
        folder of 100 or 100,000 messages (docs/webmail.md "Mail"). ``text``: only messages
        whose subject or sender contains it (case-insensitive)."""
        with self.db.session() as session:
            target = _target(session, account, address, folder, Operation.READ)
            query = (
                select(
                    _E.c.uid,
                    _E.c.flags,
                    _E.c.internal_date,
                    _M.c.size,
                    _M.c.subject,
                    _M.c.from_address,
                    _M.c.date,
                    _M.c.message_id,
                )
                .join(_M, _M.c.id == _E.c.message_pk)
                .where(_E.c.folder_id == target.folder.id)
                .order_by(_E.c.uid.desc())
                .limit(limit + 1)
            )
            if before is not None:
                query = query.where(_E.c.uid < before)
            if text:
                pattern = f"%{_like_escaped(text.lower())}%"
                query = query.where(
                    func.lower(_M.c.subject).like(pattern, escape="\\")
                    | _M.c.from_address.like(pattern, escape="\\")
                )
            rows = session.execute(query).all()
            info = _info(target.folder)
        summaries = tuple(_summary(r) for r in rows[:limit])
        older = summaries[-1].uid if len(rows) > limit else None
        return Page(info, summaries, older)

    def fetch(
        self, account: Caller, address: str, folder: str, uids: Uids, *, mark_seen: bool = False
    ) -> list[Entry]:
        """The entries among ``uids`` that the folder still holds, ascending. ``mark_seen``
        (a FETCH of a body without .PEEK, RFC 9051 §6.4.5; opening a message in the webmail)
        sets \\Seen in the same transaction if the caller may; if not, the fetch goes on and
        \\Seen stays as it was (RFC 4314 §4: without ``s``)."""
        with self.db.session() as session:
            target = _target(session, account, address, folder, Operation.READ)
            if mark_seen and Operation.MARK_SEEN in target.holds:
                entries, changed = _store(
                    session, target, uids, mode=FlagMode.ADD, change=frozenset({SEEN}), may=_any
                )
            else:
                query = _entries_query().where(_E.c.folder_id == target.folder.id)
                entries, changed = [_entry(r) for r in _rows_in(session, query, uids)], False
        if changed:
            self._notify(target.mailbox.address)
        return entries

    def fetch_with_bodies(
        self, account: Caller, address: str, folder: str, uids: Uids
    ) -> list[tuple[Entry, bytes]]:
        """The entries among ``uids`` that the folder still holds, ascending, each with its
        bytes: one transaction and one trip for a FETCH of bodies, instead of one per
        message. The caller bounds the total size."""
        with self.db.session() as session:
            target = _target(session, account, address, folder, Operation.READ)
            query = (
                _entries_query()
                .add_columns(_M.c.blob_sha256)
                .where(_E.c.folder_id == target.folder.id)
            )
            rows = _rows_in(session, query, uids)
        return [(_entry(r), self.blobs.get(r.blob_sha256)) for r in rows]

    def body(self, account: Caller, address: str, folder: str, uid: int) -> bytes | None:
        """The message's bytes from the blob store; None if the folder no longer holds it."""
        with self.db.session() as session:
            target = _target(session, account, address, folder, Operation.READ)
            digest = session.execute(
                select(_M.c.blob_sha256)
                .join(_E, _E.c.message_pk == _M.c.id)
                .where(_E.c.folder_id == target.folder.id, _E.c.uid == uid)
            ).scalar_one_or_none()
        return None if digest is None else self.blobs.get(digest)

    def search(
        self,
        account: Caller,
        address: str,
        folder: str,
        criterion: Criterion,
        *,
        uids: Uids | None = None,
    ) -> list[int]:
        """UIDs of the messages (among ``uids``, default all) that match, ascending. Flags,
        dates and sizes come from the database; headers and text from the blob store, read
        only for the messages still in the running."""
        with self.db.session() as session:
            target = _target(session, account, address, folder, Operation.READ)
            query = (
                _entries_query()
                .add_columns(_M.c.blob_sha256)
                .where(_E.c.folder_id == target.folder.id)
            )
            rows = _rows_in(session, query, uids if uids is not None else UidRange())
        return [r.uid for r in rows if criterion.matches(Candidate(r, self.blobs, self.mime))]

    @_refusals_audited
    def store_flags(
        self,
        account: Caller,
        address: str,
        folder: str,
        uids: Uids,
        *,
        flags: Collection[str],
        mode: FlagMode,
    ) -> list[Entry]:
        """Add, remove or replace flags (RFC 9051 §6.4.6); the entries after the change.

        Each flag is its own operation (RFC 4314 §4 STORE: ``s`` for \\Seen, ``t`` for
        \\Deleted, ``w`` for the others): flags the caller may not change stay as they are,
        and a STORE that may change none of the flags it names (or, replacing, none at all)
        is refused with :class:`NotPermitted`."""
        change = _check_flags(flags)
        with self.db.session() as session:
            target = _target(session, account, address, folder, Operation.READ)
            may = _flag_permission(target, change)
            result, changed = _store(session, target, uids, mode=mode, change=change, may=may)
        if changed:
            self._notify(target.mailbox.address)
        return result

    @_refusals_audited
    def copy(
        self,
        account: Caller,
        address: str,
        folder: str,
        uids: Uids,
        destination: str,
        *,
        destination_address: str | None = None,
    ) -> CopyResult:
        """Copy messages, with their flags and dates, to ``destination`` (RFC 9051 §6.4.7)."""
        with self.db.session() as session:
            result, _ = self._transfer(
                session, account, (address, folder), uids, (destination_address, destination)
            )
        self._notify(destination_address or address)
        return result

    @_refusals_audited
    def move(
        self,
        account: Caller,
        address: str,
        folder: str,
        uids: Uids,
        destination: str,
        *,
        destination_address: str | None = None,
    ) -> CopyResult:
        """Copy then expunge from the source, in one transaction (RFC 6851 §3.3)."""
        with self.db.session() as session:
            result, source = self._transfer(
                session,
                account,
                (address, folder),
                uids,
                (destination_address, destination),
                remove=True,
            )
            if result.uids:
                _audit(
                    session,
                    AuditEvent.FOLDER_MOVED,
                    account,
                    _where(source),
                    {"to": destination, "count": len(result.uids)},
                )
        self._notify(address)
        if destination_address:
            self._notify(destination_address)
        return result

    def _transfer(
        self,
        session: Session,
        account: Caller,
        source: tuple[str, str],
        uids: Uids,
        destination: tuple[str | None, str],
        *,
        remove: bool = False,
    ) -> tuple[CopyResult, _Target]:
        # RFC 4314 §4: r on the source, i on the destination; MOVE also t and e on the source
        # (RFC 6851 §3.3: COPY, STORE \\Deleted and EXPUNGE in one).
        needed = (Operation.READ, Operation.DELETE) if remove else (Operation.READ,)
        src = _target(session, account, *source, *needed)
        dst = _target(
            session, account, destination[0] or source[0], destination[1], Operation.APPEND
        )
        _lock(session, src.folder.id, dst.folder.id)
        query = select(_E.c.id, _E.c.uid, _E.c.message_pk, _E.c.flags, _E.c.internal_date).where(
            _E.c.folder_id == src.folder.id
        )
        rows = _rows_in(session, query, uids)
        if not rows:
            return CopyResult(dst.folder.uid_validity, ()), src
        first = _take_uids(session, dst.folder.id, len(rows))
        session.execute(
            insert(_E),
            [
                {
                    "folder_id": dst.folder.id,
                    "uid": first + i,
                    "message_pk": r.message_pk,
                    "flags": _flag_text(_settable(dst.holds, _flag_set(r.flags))),
                    "internal_date": r.internal_date,
                }
                for i, r in enumerate(rows)
            ],
        )
        if remove:
            _delete_entries(session, [r.id for r in rows])
        pairs = tuple((r.uid, first + i) for i, r in enumerate(rows))
        return CopyResult(dst.folder.uid_validity, pairs), src

    @_refusals_audited
    def expunge(
        self, account: Caller, address: str, folder: str, uids: Uids | None = None
    ) -> list[int]:
        """Remove the messages flagged \\Deleted (among ``uids``: UID EXPUNGE, RFC 4315 §2.1);
        their UIDs, ascending. Needs DELETE (RFC 4314 §4 EXPUNGE: ``e``)."""
        with self.db.session() as session:
            target = _target(session, account, address, folder, Operation.READ, Operation.DELETE)
            _lock(session, target.folder.id)
            query = select(_E.c.id, _E.c.uid, _E.c.flags).where(
                _E.c.folder_id == target.folder.id, _E.c.flags.contains(DELETED, autoescape=True)
            )
            rows = [
                r
                for r in _rows_in(session, query, uids if uids is not None else UidRange())
                if DELETED in _flag_set(r.flags)
            ]
            if rows:
                _delete_entries(session, [r.id for r in rows])
                _audit(
                    session,
                    AuditEvent.FOLDER_EXPUNGED,
                    account,
                    _where(target),
                    {"count": len(rows), "uids": _uid_text([r.uid for r in rows])},
                )
        if rows:
            self._notify(target.mailbox.address)
        return [r.uid for r in rows]

    @_refusals_audited
    def append(
        self,
        account: Caller,
        address: str,
        folder: str,
        raw: bytes,
        *,
        flags: Collection[str] = (),
        internal_date: datetime | None = None,
    ) -> AppendResult:
        """Store a message the user gives (APPEND: drafts, sent copies, RFC 9051 §6.3.12).

        The right (APPEND, RFC 4314 §4: ``i``) is checked before the body is written, and again
        in the transaction; flags the caller may not set there are not stored."""
        stored = _check_flags(flags)
        with self.db.session() as session:
            _target(session, account, address, folder, Operation.APPEND)
        digest = self.blobs.put(raw)
        headers = Headers.parse(raw)
        when = (internal_date or datetime.now(UTC)).astimezone(UTC)
        with self.db.session() as session:
            target = _target(session, account, address, folder, Operation.APPEND)
            _lock(session, target.folder.id)
            message_pk = _insert_message(session, digest, len(raw), headers)
            uid = _take_uids(session, target.folder.id, 1)
            session.execute(
                insert(_E).values(
                    folder_id=target.folder.id,
                    uid=uid,
                    message_pk=message_pk,
                    flags=_flag_text(_settable(target.holds, stored)),
                    internal_date=when,
                )
            )
            _audit(
                session,
                AuditEvent.FOLDER_APPENDED,
                account,
                _where(target),
                {"uid": uid, "size": len(raw), "message_id": headers.message_id},
            )
            validity = target.folder.uid_validity
        self._notify(target.mailbox.address)
        return AppendResult(validity, uid)

    # -- folder management ------------------------------------------------------------------
    @_refusals_audited
    def create_folder(self, account: Caller, address: str, name: str) -> FolderInfo:
        name = _check_new_name(name)
        with self.db.session() as session:
            box, _ = _mailbox(session, account, address, Operation.MANAGE)
            if _find_folder(session, box, name) is not None:
                raise FolderExists(f"the folder {name} already exists")
            folder = Folder(
                mailbox_id=box.id, name=name, uid_validity=_new_validity(session, box.id)
            )
            session.add(folder)
            session.flush()
            _audit(session, AuditEvent.FOLDER_CREATED, account, f"{box.address}/{name}", {})
            info = _info(folder)
        self._notify(box.address)
        return info

    @_refusals_audited
    def delete_folder(self, account: Caller, address: str, name: str) -> None:
        """Delete a user folder and its messages. INBOX and the standard folders stay."""
        with self.db.session() as session:
            target = _target(session, account, address, name, Operation.MANAGE)
            if target.folder.name in _STANDARD:
                raise FolderRefused(f"the folder {target.folder.name} cannot be deleted")
            _lock(session, target.folder.id)
            count = session.execute(
                select(func.count()).where(_E.c.folder_id == target.folder.id)
            ).scalar_one()
            session.execute(delete(_E).where(_E.c.folder_id == target.folder.id))
            session.delete(target.folder)
            _audit(session, AuditEvent.FOLDER_DELETED, account, _where(target), {"messages": count})
        self._notify(target.mailbox.address)

    @_refusals_audited
    def rename_folder(self, account: Caller, address: str, old: str, new: str) -> None:
        """Rename a user folder and the folders under it (RFC 9051 §6.3.6); each gets a new
        UIDVALIDITY, since a client may have known another folder by the new name."""
        new = _check_new_name(new)
        with self.db.session() as session:
            target = _target(session, account, address, old, Operation.MANAGE)
            old = target.folder.name
            if old in _STANDARD or new in _STANDARD:
                raise FolderRefused("the standard folders cannot be renamed")
            if new == old or new.startswith(old + DELIMITER):
                raise FolderRefused("a folder cannot be renamed into itself")
            moving = [f for f in target.mailbox.folders if _under(f.name, old)]
            renames = {f.id: new + f.name[len(old) :] for f in moving}
            taken = {f.name for f in target.mailbox.folders} - {f.name for f in moving}
            if taken & set(renames.values()):
                raise FolderExists(f"the folder {new} already exists")
            validity = _new_validity(session, target.mailbox.id)
            for i, folder in enumerate(sorted(moving, key=lambda f: f.id)):
                folder.name = renames[folder.id]
                folder.uid_validity = min(validity + i, _MAX_VALIDITY)
            _audit(session, AuditEvent.FOLDER_RENAMED, account, _where(target), {"to": new})
        self._notify(target.mailbox.address)


# --- Helpers (all inside the caller's transaction) ----------------------------------------------

_E = tables.mailbox_entries
_M = tables.messages
_F = tables.folders


def _mailbox(
    session: Session, account: Caller, address: str, operation: Operation
) -> tuple[Mailbox, frozenset[Operation]]:
    """The mailbox, if the caller may do ``operation`` to it, and all it may do there."""
    box = session.execute(
        select(Mailbox).where(Mailbox.address == address.strip().lower())
    ).scalar_one_or_none()
    if box is None:
        raise AccessDenied(f"no mailbox {address} for this account")
    return box, require(account, box, operation)


def _find_folder(session: Session, box: Mailbox, name: str) -> Folder | None:
    folder: Folder | None = session.execute(
        select(Folder).where(Folder.mailbox_id == box.id, Folder.name == normal_name(name))
    ).scalar_one_or_none()
    return folder


def _target(
    session: Session, account: Caller, address: str, name: str, *operations: Operation
) -> _Target:
    """The mailbox (if the caller may do every one of ``operations`` to it) and its folder, in
    one query: every IMAP command makes one or two of these."""
    row = session.execute(
        select(Mailbox, Folder)
        .outerjoin(Folder, and_(Folder.mailbox_id == Mailbox.id, Folder.name == normal_name(name)))
        .where(Mailbox.address == address.strip().lower())
    ).one_or_none()
    if row is None:
        raise AccessDenied(f"no mailbox {address} for this account")
    box, folder = row
    holds = frozenset[Operation]()
    for operation in operations:
        holds = require(account, box, operation)
    if folder is None:
        raise FolderNotFound(f"no folder {name}")
    return _Target(box, folder, holds)


def _flag_permission(target: _Target, change: frozenset[str]) -> Callable[[str], bool]:
    """Which flags the caller may change (RFC 4314 §4 STORE); :class:`NotPermitted` if none of
    those named (or, with none named, if it may change no flag at all)."""

    def may(flag: str) -> bool:
        return may_change_flag(target.holds, flag)

    if not target.holds & FLAG_CHANGES or (change and not any(may(f) for f in change)):
        missing = [flag_operation(f) for f in sorted(change)] or [Operation.FLAG]
        raise NotPermitted(target.mailbox.address, missing[0])
    return may


def _any(_flag: str) -> bool:
    return True


def _settable(holds: frozenset[Operation], flags: frozenset[str]) -> frozenset[str]:
    """The flags a message may get from this caller when it enters a folder (APPEND, COPY)."""
    return frozenset(f for f in flags if may_change_flag(holds, f))


def _store(
    session: Session,
    target: _Target,
    uids: Uids,
    *,
    mode: FlagMode,
    change: frozenset[str],
    may: Callable[[str], bool],
) -> tuple[list[Entry], bool]:
    """Change the flags ``may`` allows on the messages among ``uids``; the entries after."""
    _lock(session, target.folder.id)
    query = _entries_query().add_columns(_E.c.id).where(_E.c.folder_id == target.folder.id)
    rows = _rows_in(session, query, uids)
    updates = _flag_updates(rows, mode, change, may)
    if updates:
        session.execute(
            update(_E).where(_E.c.id == bindparam("b_id")).values(flags=bindparam("b_f")),
            [{"b_id": pk, "b_f": _flag_text(new)} for pk, new in updates.items()],
        )
    return [_entry(r, updates.get(r.id)) for r in rows], bool(updates)


def _where(target: _Target) -> str:
    return f"{target.mailbox.address}/{target.folder.name}"


def _under(name: str, parent: str) -> bool:
    return name == parent or name.startswith(parent + DELIMITER)


def _info(folder: Folder, last_uid: int = 0) -> FolderInfo:
    # UIDNEXT is always above every UID shown, even if a delivery committed between reads.
    return FolderInfo(
        folder.name, folder.special_use, folder.uid_validity, max(folder.uid_next, last_uid + 1)
    )


def _probes(session: Session, folder_ids: Collection[int]) -> dict[int, Probe]:
    """Each folder's UIDVALIDITY, UIDNEXT (above every UID shown, as :func:`_info` says) and
    message count, in one query."""
    ids = list(folder_ids)
    counts = (
        select(_E.c.folder_id, func.count().label("n"), func.max(_E.c.uid).label("last"))
        .where(_E.c.folder_id.in_(ids))
        .group_by(_E.c.folder_id)
        .subquery()
    )
    rows = session.execute(
        select(_F.c.id, _F.c.uid_validity, _F.c.uid_next, counts.c.n, counts.c.last)
        .outerjoin(counts, counts.c.folder_id == _F.c.id)
        .where(_F.c.id.in_(ids))
    ).all()
    return {
        r.id: Probe(r.id, r.uid_validity, max(r.uid_next, int(r.last or 0) + 1), int(r.n or 0))
        for r in rows
    }


def _summary(row: Any) -> Summary:
    return Summary(
        row.uid,
        _flag_set(row.flags),
        row.subject,
        row.from_address,
        row.date,
        row.internal_date,
        row.size,
        row.message_id,
    )


def _like_escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _entries_query() -> Any:
    return select(_E.c.uid, _E.c.flags, _E.c.internal_date, _M.c.size).join(
        _M, _M.c.id == _E.c.message_pk
    )


def _entry(row: Row[Any], flags: frozenset[str] | None = None) -> Entry:
    return Entry(
        row.uid, flags if flags is not None else _flag_set(row.flags), row.internal_date, row.size
    )


def _rows_in(session: Session, query: Any, uids: Uids) -> list[Row[Any]]:
    """Rows of ``query`` whose UID is in ``uids``, ascending by UID."""
    if isinstance(uids, UidRange):
        condition: ColumnElement[bool] = _E.c.uid >= uids.first
        if uids.last is not None:
            condition = and_(condition, _E.c.uid <= uids.last)
        return list(session.execute(query.where(condition).order_by(_E.c.uid)).all())
    wanted = sorted(set(uids))
    rows: list[Row[Any]] = []
    for start in range(0, len(wanted), _IN_CHUNK):
        chunk = wanted[start : start + _IN_CHUNK]
        rows += session.execute(query.where(_E.c.uid.in_(chunk)).order_by(_E.c.uid)).all()
    return rows


def _flag_updates(
    rows: Sequence[Row[Any]], mode: FlagMode, change: frozenset[str], may: Callable[[str], bool]
) -> dict[int, frozenset[str]]:
    updates = {}
    for row in rows:
        current = _flag_set(row.flags)
        new = _apply(mode, current, change, may)
        if new != current:
            updates[row.id] = new
    return updates


def _lock(session: Session, *folder_ids: int) -> None:
    """Take the folders' row locks, lowest id first (no deadlock between two writers); on
    SQLite the first write takes the database's write lock."""
    for folder_id in sorted(set(folder_ids)):
        session.execute(update(_F).where(_F.c.id == folder_id).values(uid_next=_F.c.uid_next))


def _take_uids(session: Session, folder_id: int, count: int) -> int:
    """Reserve ``count`` UIDs (RFC 9051 §2.3.1.1: ascending, never reused); the first one."""
    uid_next = session.execute(
        update(_F)
        .where(_F.c.id == folder_id)
        .values(uid_next=_F.c.uid_next + count)
        .returning(_F.c.uid_next)
    ).scalar_one()
    return int(uid_next) - count


def _new_validity(session: Session, box_id: int) -> int:
    """A UIDVALIDITY above every value the mailbox uses (a re-created folder never shares
    one with its predecessor, RFC 9051 §2.3.1.1)."""
    highest = session.execute(
        select(func.max(_F.c.uid_validity)).where(_F.c.mailbox_id == box_id)
    ).scalar_one_or_none()
    now = int(datetime.now(UTC).timestamp())
    return min(max(now, int(highest or 0) + 1), _MAX_VALIDITY)


def _delete_entries(session: Session, ids: list[int]) -> None:
    for start in range(0, len(ids), _IN_CHUNK):
        session.execute(delete(_E).where(_E.c.id.in_(ids[start : start + _IN_CHUNK])))


def _insert_message(session: Session, digest: str, size: int, headers: Headers) -> int:
    pk: int = session.execute(
        insert(_M)
        .values(
            blob_sha256=digest,
            size=size,
            message_id=headers.message_id,
            subject=headers.subject,
            from_address=headers.from_address,
            date=headers.date,
            received_at=datetime.now(UTC),
        )
        .returning(_M.c.id)
    ).scalar_one()
    return pk


def _uid_text(uids: Sequence[int]) -> str:
    """A short UID list for the audit log (the first ones, then how many more)."""
    shown = ",".join(str(u) for u in uids[:50])
    return shown if len(uids) <= 50 else f"{shown},… ({len(uids)} in all)"


def _audit(
    session: Session,
    event: AuditEvent,
    account: Caller,
    target: str,
    extra: Mapping[str, Any],
) -> None:
    audit_append(
        session,
        AuditRecord(
            event, actor=account.login, target=target, context={**account.context, **extra}
        ),
    )


__all__ = [
    "DELIMITER",
    "INBOX",
    "AccessDenied",
    "All",
    "And",
    "AppendResult",
    "Caller",
    "CopyResult",
    "Criterion",
    "DateIs",
    "Entry",
    "FlagMode",
    "FolderError",
    "FolderExists",
    "FolderInfo",
    "FolderNotFound",
    "FolderRefused",
    "FolderStatus",
    "FolderView",
    "Folders",
    "HasFlag",
    "HeaderHas",
    "InUids",
    "Not",
    "NotPermitted",
    "Or",
    "Probe",
    "SizeIs",
    "TextHas",
    "UidRange",
    "Uids",
    "is_delegated",
    "normal_flag",
    "normal_name",
]
