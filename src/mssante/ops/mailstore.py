"""Storing and listing messages: the one place mail enters a mailbox.

Local delivery is durable before it returns: the body is written to the blob store (fsynced,
renamed) and every recipient's entry is committed in one database transaction. A message whose
Message-ID the mailbox already holds is not stored twice (the crash window of relaying: a peer
may send again a message we stored but could not acknowledge).

UIDs follow RFC 9051 §2.3.1.1: strictly ascending per folder, never reused; ``uid_next`` is taken
under the folder row's write lock.
"""

from __future__ import annotations

import email.utils
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email import message as email_message
from email.header import decode_header, make_header
from email.parser import BytesHeaderParser
from email.policy import compat32

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from mssante.errors import NotFoundError
from mssante.mail.receipts import parse_report
from mssante.store import tables
from mssante.store.blobs import BlobStore
from mssante.store.db import Database
from mssante.store.models import (
    Folder,
    Mailbox,
    MailboxEntry,
    Message,
    MessageReceipt,
    ReceiptKind,
)

# RFC 6154 special-use attributes of the standard folders (French names come in the webmail).
STANDARD_FOLDERS: tuple[tuple[str, str], ...] = (
    ("INBOX", ""),
    ("Sent", "\\Sent"),
    ("Drafts", "\\Drafts"),
    ("Trash", "\\Trash"),
    ("Archive", "\\Archive"),
)
_HEADER_LIMIT = 200_000  # headers beyond this are not parsed for the summary


@dataclass(frozen=True)
class Delivered:
    address: str
    folder: str
    uid: int
    duplicate: bool  # already held: nothing new stored


@dataclass(frozen=True)
class MessageSummary:
    uid: int
    internal_date: datetime
    date: datetime | None
    from_address: str
    subject: str
    size: int
    flags: tuple[str, ...]
    message_id: str
    blob_sha256: str

    def as_dict(self) -> dict[str, object]:
        return {
            "uid": self.uid,
            "internal_date": self.internal_date.isoformat(),
            "date": self.date.isoformat() if self.date else None,
            "from": self.from_address,
            "subject": self.subject,
            "size": self.size,
            "flags": list(self.flags),
            "message_id": self.message_id,
        }


@dataclass(frozen=True)
class Headers:
    """What the store keeps of a message's header for lists and de-duplication."""

    message_id: str
    subject: str
    from_address: str
    date: datetime | None
    report: bool = False  # multipart/report: a DSN or an MDN (RFC 6522), recorded as receipts
    content_sha256: str = ""  # the message as handed in: with the Message-ID, the dedupe key

    @classmethod
    def parse(cls, raw: bytes) -> Headers:
        head = raw[:_HEADER_LIMIT].split(b"\r\n\r\n", 1)[0]
        parsed = cls.of(BytesHeaderParser(policy=compat32).parsebytes(head + b"\r\n\r\n"))
        return replace(parsed, content_sha256=hashlib.sha256(raw).hexdigest())

    @classmethod
    def of(cls, msg: email_message.Message) -> Headers:
        """From a header already parsed (compat32)."""
        return cls(
            message_id=_clean(msg.get("Message-ID", ""))[:998],
            subject=_decoded(msg.get("Subject", "")),
            from_address=_address(msg.get("From", "")),
            date=_date(msg.get("Date")),
            report=msg.get_content_type() == "multipart/report",
        )


def _clean(value: object) -> str:
    return " ".join(str(value).split())


def _decoded(value: object) -> str:
    try:
        return _clean(str(make_header(decode_header(str(value)))))
    except (ValueError, LookupError):  # RFC 2047 junk: keep the raw text
        return _clean(value)


def _address(value: object) -> str:
    return email.utils.parseaddr(_decoded(value))[1].lower()[:320]


def _date(value: object) -> datetime | None:
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(str(value))
    except (TypeError, ValueError, IndexError):
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class MailStore:
    def __init__(self, db: Database, blobs: BlobStore) -> None:
        self.db = db
        self.blobs = blobs

    # -- mailboxes ---------------------------------------------------------------------------
    def open_mailbox(self, session: Session, address: str) -> Mailbox | None:
        """The open mailbox at ``address`` (case-insensitive), or None."""
        box: Mailbox | None = session.execute(
            select(Mailbox).where(Mailbox.address == address.lower(), Mailbox.closed_at.is_(None))
        ).scalar_one_or_none()
        return box

    def is_local(self, address: str) -> bool:
        with self.db.session() as session:
            return self.open_mailbox(session, address) is not None

    @staticmethod
    def ensure_folders(session: Session, mailbox: Mailbox) -> None:
        existing = {f.name for f in mailbox.folders}
        validity = int(datetime.now(UTC).timestamp())
        for name, special in STANDARD_FOLDERS:
            if name not in existing:
                mailbox.folders.append(
                    Folder(name=name, special_use=special, uid_validity=validity)
                )

    # -- delivery ----------------------------------------------------------------------------
    def deliver(
        self,
        raw: bytes,
        recipients: Sequence[str],
        *,
        folder: str = "INBOX",
        flags: Sequence[str] = (),
        dedupe: bool = True,
    ) -> list[Delivered]:
        """Store ``raw`` for every recipient (local, open mailboxes); durable when it returns.

        Raises :class:`mssante.errors.NotFoundError` if a recipient has no open mailbox, before
        anything is committed."""
        digest = self.blobs.put(raw)
        headers = Headers.parse(raw)
        with self.db.session() as session:
            return self.deliver_in(
                session, digest, len(raw), headers, recipients, folder=folder, flags=flags
            )

    def deliver_in(
        self,
        session: Session,
        digest: str,
        size: int,
        headers: Headers,
        recipients: Sequence[str],
        *,
        folder: str = "INBOX",
        flags: Sequence[str] = (),
        dedupe: bool = True,
    ) -> list[Delivered]:
        """The database half of :meth:`deliver`, inside the caller's transaction (so a batch of
        messages can share one commit). Core statements: this runs for every message.

        ``dedupe``: a mailbox that already holds this message (the same Message-ID *and* the
        same content as handed in: a peer retrying after a lost 250) does not get it again; a
        message that only reuses a Message-ID is delivered (whoever knows or guesses one cannot
        make later mail vanish). Off for the sender's own copy in Sent, which must be kept
        even when the sender wrote to themselves. Each drop is reported as ``duplicate`` for
        the caller to audit."""
        boxes = _open_boxes(session, recipients)
        message_pk: int | None = None
        results = []
        for box_id, address in boxes:
            if dedupe and _holds(session, box_id, headers):
                results.append(Delivered(address, folder, 0, duplicate=True))
                continue
            if message_pk is None:
                message_pk = _insert_message(session, digest, size, headers)
            uid = _add_entry(session, box_id, folder, message_pk, flags)
            results.append(Delivered(address, folder, uid, duplicate=False))
            if headers.report and folder == "INBOX":
                self._record_receipts(session, box_id, digest)
        return results

    def _record_receipts(self, session: Session, box_id: int, digest: str) -> None:
        """A DSN or MDN delivered to a mailbox: what it says of each recipient of the original,
        kept for the Sent view (docs/webmail.md "Receipts"). Rare and small: parsed here."""
        for status in parse_report(self.blobs.get(digest)):
            session.add(
                MessageReceipt(
                    mailbox_id=box_id,
                    original_message_id=status.original_message_id[:998],
                    recipient=status.recipient[:320],
                    kind=ReceiptKind(status.kind.value),
                    detail=status.detail[:1000],
                )
            )

    # -- reading -----------------------------------------------------------------------------
    def list_messages(
        self, address: str, *, folder: str = "INBOX", limit: int = 50, before_uid: int | None = None
    ) -> list[MessageSummary]:
        """Newest first, by UID (an index range scan, never a full scan)."""
        with self.db.session() as session:
            box = self.open_mailbox(session, address)
            if box is None:
                raise NotFoundError(f"no mailbox {address}")
            query = (
                select(MailboxEntry, Message)
                .join(Folder, Folder.id == MailboxEntry.folder_id)
                .join(Message, Message.id == MailboxEntry.message_pk)
                .where(Folder.mailbox_id == box.id, Folder.name == folder)
                .order_by(MailboxEntry.uid.desc())
                .limit(limit)
            )
            if before_uid is not None:
                query = query.where(MailboxEntry.uid < before_uid)
            return [_summary(entry, msg) for entry, msg in session.execute(query).all()]

    def read(self, digest: str) -> bytes:
        return self.blobs.get(digest)


def _open_boxes(session: Session, recipients: Sequence[str]) -> list[tuple[int, str]]:
    """(id, address) of each recipient's open mailbox, in order; NotFoundError if one has none."""
    wanted = list(dict.fromkeys(a.lower() for a in recipients))
    rows = session.execute(
        select(Mailbox.id, Mailbox.address).where(
            Mailbox.address.in_(wanted), Mailbox.closed_at.is_(None)
        )
    ).all()
    found = {address: box_id for box_id, address in rows}
    for address in wanted:
        if address not in found:
            raise NotFoundError(f"no mailbox {address}")
    return [(found[a], a) for a in wanted]


def _holds(session: Session, box_id: int, headers: Headers) -> bool:
    if not headers.message_id or not headers.content_sha256:
        return False
    found = session.execute(
        select(MailboxEntry.id)
        .join(Folder, Folder.id == MailboxEntry.folder_id)
        .join(Message, Message.id == MailboxEntry.message_pk)
        .where(
            Folder.mailbox_id == box_id,
            Message.message_id == headers.message_id,
            Message.content_sha256 == headers.content_sha256,
        )
        .limit(1)
    ).first()
    return found is not None


def _insert_message(session: Session, digest: str, size: int, headers: Headers) -> int:
    pk: int = session.execute(
        insert(tables.messages)
        .values(
            blob_sha256=digest,
            size=size,
            message_id=headers.message_id,
            content_sha256=headers.content_sha256,
            subject=headers.subject,
            from_address=headers.from_address,
            date=headers.date,
            received_at=datetime.now(UTC),
        )
        .returning(tables.messages.c.id)
    ).scalar_one()
    return pk


def _add_entry(
    session: Session, box_id: int, folder_name: str, message_pk: int, flags: Sequence[str]
) -> int:
    """Take the folder's next UID under its row's write lock (RFC 9051 §2.3.1.1), then add the
    entry. The UPDATE … RETURNING is one statement on SQLite and PostgreSQL alike."""
    folders = tables.folders
    row = session.execute(
        update(folders)
        .where(folders.c.mailbox_id == box_id, folders.c.name == folder_name)
        .values(uid_next=folders.c.uid_next + 1)
        .returning(folders.c.id, folders.c.uid_next)
    ).first()
    if row is None:
        _create_folders(session, box_id, folder_name)
        return _add_entry(session, box_id, folder_name, message_pk, flags)
    folder_id, uid_next = row
    session.execute(
        insert(tables.mailbox_entries).values(
            folder_id=folder_id,
            uid=uid_next - 1,
            message_pk=message_pk,
            flags=" ".join(sorted(set(flags))),
            internal_date=datetime.now(UTC),
        )
    )
    return int(uid_next - 1)


def _create_folders(session: Session, box_id: int, wanted: str) -> None:
    box = session.get(Mailbox, box_id)
    if box is None or wanted not in {name for name, _ in STANDARD_FOLDERS}:
        raise NotFoundError(f"no folder {wanted}")
    MailStore.ensure_folders(session, box)
    session.flush()


def _summary(entry: MailboxEntry, msg: Message) -> MessageSummary:
    return MessageSummary(
        uid=entry.uid,
        internal_date=entry.internal_date,
        date=msg.date,
        from_address=msg.from_address,
        subject=msg.subject,
        size=msg.size,
        flags=tuple(entry.flags.split()) if entry.flags else (),
        message_id=msg.message_id,
        blob_sha256=msg.blob_sha256,
    )
