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
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.header import decode_header, make_header
from email.parser import BytesHeaderParser
from email.policy import compat32

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mssante.errors import NotFoundError
from mssante.store.blobs import BlobStore
from mssante.store.db import Database
from mssante.store.models import Folder, Mailbox, MailboxEntry, Message

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

    @classmethod
    def parse(cls, raw: bytes) -> Headers:
        head = raw[:_HEADER_LIMIT].split(b"\r\n\r\n", 1)[0]
        msg = BytesHeaderParser(policy=compat32).parsebytes(head + b"\r\n\r\n")
        return cls(
            message_id=_clean(msg.get("Message-ID", ""))[:998],
            subject=_decoded(msg.get("Subject", "")),
            from_address=_address(msg.get("From", "")),
            date=_date(msg.get("Date")),
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
    ) -> list[Delivered]:
        """The database half of :meth:`deliver`, inside the caller's transaction (so a batch of
        messages can share one commit)."""
        boxes = []
        for address in dict.fromkeys(a.lower() for a in recipients):
            box = self.open_mailbox(session, address)
            if box is None:
                raise NotFoundError(f"no mailbox {address}")
            boxes.append(box)
        message: Message | None = None
        results = []
        for box in boxes:
            if headers.message_id and _holds(session, box, headers.message_id):
                results.append(Delivered(box.address, folder, 0, duplicate=True))
                continue
            if message is None:
                message = _message_row(digest, size, headers)
                session.add(message)
                session.flush()
            results.append(_add_entry(session, box, folder, message, flags))
        return results

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


def _holds(session: Session, box: Mailbox, message_id: str) -> bool:
    found = session.execute(
        select(MailboxEntry.id)
        .join(Folder, Folder.id == MailboxEntry.folder_id)
        .join(Message, Message.id == MailboxEntry.message_pk)
        .where(Folder.mailbox_id == box.id, Message.message_id == message_id)
        .limit(1)
    ).first()
    return found is not None


def _message_row(digest: str, size: int, headers: Headers) -> Message:
    return Message(
        blob_sha256=digest,
        size=size,
        message_id=headers.message_id,
        subject=headers.subject,
        from_address=headers.from_address,
        date=headers.date,
    )


def _add_entry(
    session: Session, box: Mailbox, folder_name: str, message: Message, flags: Sequence[str]
) -> Delivered:
    folder = _folder(session, box, folder_name)
    # Take the next UID under the folder row's write lock (RFC 9051 §2.3.1.1).
    session.execute(
        update(Folder).where(Folder.id == folder.id).values(uid_next=Folder.uid_next + 1)
    )
    session.refresh(folder, ["uid_next"])
    uid = folder.uid_next - 1
    session.add(
        MailboxEntry(
            folder_id=folder.id, uid=uid, message_pk=message.id, flags=" ".join(sorted(set(flags)))
        )
    )
    return Delivered(box.address, folder_name, uid, duplicate=False)


def _folder(session: Session, box: Mailbox, name: str) -> Folder:
    folder = next((f for f in box.folders if f.name == name), None)
    if folder is None:
        MailStore.ensure_folders(session, box)
        session.flush()
        folder = next((f for f in box.folders if f.name == name), None)
    if folder is None:
        raise NotFoundError(f"no folder {name}")
    return folder


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
