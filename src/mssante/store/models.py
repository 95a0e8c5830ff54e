"""The metadata schema (SQLAlchemy 2 declarative models).

Message bodies are not here: they live in the blob store, addressed by their SHA-256. The schema
is changed only through Alembic migrations (``store/migrations``); a test checks that the models
and the migrations agree.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, validates
from sqlalchemy.types import TypeDecorator

from mssante.errors import ImmutableFieldError

# Named constraints, so that migrations are the same on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """Timestamps stored in UTC and always read back timezone-aware (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use an aware UTC time")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class MailboxType(StrEnum):
    """BAL types (MSSanté): personal, organisational, applicative, practice."""

    PER = "PER"
    ORG = "ORG"
    APP = "APP"
    CAB = "CAB"


class AccessRight(StrEnum):
    """What a grant on a mailbox allows someone other than its owner (docs/delegation.md)."""

    READ = "read"  # list, read, mark seen (RFC 4314 l r s): nothing else
    FILE = "file"  # read, flag, delete and expunge, append, copy and move (l r s w t e i)
    SEND = "send"  # file, and send on behalf of the mailbox (From: it, Sender: the delegate)


class AccountKind(StrEnum):
    PERSON = "person"
    APPLICATION = "application"


class CredentialKind(StrEnum):
    PASSWORD = "password"  # noqa: S105 - a kind name; the value stored is an argon2id hash
    TOTP = "totp"  # RFC 6238 shared secret (base32)
    APP_PASSWORD = "app_password"  # noqa: S105 - argon2id hash, one per named device
    CERTIFICATE = "certificate"  # an APP account's organisation certificate: its subject DN


def _enum(cls: type[StrEnum], name: str) -> Enum:
    # Stored as text with a CHECK, so that adding a member is a simple migration on both engines.
    return Enum(
        cls, name=name, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e]
    )


# --- Trust space (the authority's registry) ----------------------------------------------------


class Operator(Base):
    """An organisation that runs mail for one or more domains of the trust space."""

    __tablename__ = "operators"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    structure_id: Mapped[str] = mapped_column(String(32))  # IdNatStruct
    responsable_contact: Mapped[str] = mapped_column(String(300), default="")
    support_contact: Mapped[str] = mapped_column(String(300), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)

    domains: Mapped[list[Domain]] = relationship(
        back_populates="operator", cascade="all, delete-orphan", order_by="Domain.name"
    )
    certificate_dns: Mapped[list[OperatorCertificate]] = relationship(
        back_populates="operator", cascade="all, delete-orphan", order_by="OperatorCertificate.dn"
    )


class Domain(Base):
    """A mail domain: on the authority, a whitelist entry; on an operator, a domain it serves."""

    __tablename__ = "domains"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(253), unique=True)
    description: Mapped[str] = mapped_column(String(500), default="")
    operator_id: Mapped[int | None] = mapped_column(ForeignKey("operators.id", ondelete="CASCADE"))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)

    operator: Mapped[Operator | None] = relationship(back_populates="domains")


class OperatorCertificate(Base):
    """A subject DN an operator's MTAs present; listed for each of its domains."""

    __tablename__ = "operator_certificates"
    __table_args__ = (UniqueConstraint("operator_id", "dn"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    operator_id: Mapped[int] = mapped_column(ForeignKey("operators.id", ondelete="CASCADE"))
    dn: Mapped[str] = mapped_column(String(500))

    operator: Mapped[Operator] = relationship(back_populates="certificate_dns")


# --- People, accounts, mailboxes --------------------------------------------------------------


class Professional(Base):
    """A health professional, known by their national id (idNat = 8+RPPS or 0+ADELI)."""

    __tablename__ = "professionals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    id_nat: Mapped[str] = mapped_column(String(20), unique=True)
    id_type: Mapped[str] = mapped_column(String(8))  # RPPS or ADELI
    id_value: Mapped[str] = mapped_column(String(16))
    civility: Mapped[str] = mapped_column(String(16), default="")
    last_name: Mapped[str] = mapped_column(String(200))
    first_name: Mapped[str] = mapped_column(String(200))
    profession_code: Mapped[str] = mapped_column(String(8), default="")
    profession_label: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Account(Base):
    """Who logs in: a person (usually a professional) or a piece of software (APP mailbox)."""

    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    login: Mapped[str] = mapped_column(String(320), unique=True)
    kind: Mapped[AccountKind] = mapped_column(_enum(AccountKind, "account_kind"))
    professional_id: Mapped[int | None] = mapped_column(ForeignKey("professionals.id"))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    professional: Mapped[Professional | None] = relationship()
    credentials: Mapped[list[Credential]] = relationship(
        back_populates="account", cascade="all, delete-orphan"
    )


class Credential(Base):
    """A secret an account proves itself with. Passwords are argon2id hashes, never plain."""

    __tablename__ = "credentials"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[CredentialKind] = mapped_column(_enum(CredentialKind, "credential_kind"))
    label: Mapped[str] = mapped_column(String(100), default="")
    secret: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    account: Mapped[Account] = relationship(back_populates="credentials")


class Mailbox(Base):
    """A BAL. Its address and type never change after creation (MSSanté rule)."""

    __tablename__ = "mailboxes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    address: Mapped[str] = mapped_column(String(320), unique=True)
    type: Mapped[MailboxType] = mapped_column(_enum(MailboxType, "mailbox_type"))
    liste_rouge: Mapped[bool] = mapped_column(Boolean, default=False)
    description: Mapped[str] = mapped_column(String(500), default="")
    owner_account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"), index=True)
    owner_professional_id: Mapped[int | None] = mapped_column(ForeignKey("professionals.id"))
    structure_id: Mapped[str] = mapped_column(String(32), default="")  # IdNatStruct, ORG/APP
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    owner_account: Mapped[Account | None] = relationship()
    owner_professional: Mapped[Professional | None] = relationship()
    folders: Mapped[list[Folder]] = relationship(
        back_populates="mailbox", cascade="all, delete-orphan"
    )
    grants: Mapped[list[MailboxAccess]] = relationship(
        back_populates="mailbox", cascade="all, delete-orphan", order_by="MailboxAccess.id"
    )

    @validates("address", "type")
    def _immutable(self, key: str, value: Any) -> Any:
        current = self.__dict__.get(key)
        if current is not None and current != value:
            raise ImmutableFieldError(f"a mailbox's {key} cannot change after creation")
        if key == "address":
            return str(value).lower()
        return value


class MailboxAccess(Base):
    """A grant of a mailbox to an account other than its owner: an ORG mailbox's members, or a
    PER mailbox delegated to a secretary or a replacement. Never deleted: revoking sets
    ``revoked_at``; a grant past ``expires_at`` ends by itself (checked at each use)."""

    __tablename__ = "mailbox_access"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(
        ForeignKey("mailboxes.id", ondelete="CASCADE"), index=True
    )
    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    right: Mapped[AccessRight] = mapped_column(_enum(AccessRight, "access_right"))
    granted_by: Mapped[str] = mapped_column(String(320))
    granted_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    mailbox: Mapped[Mailbox] = relationship(back_populates="grants")
    account: Mapped[Account] = relationship()

    def active(self, now: datetime | None = None) -> bool:
        """Not revoked and not expired at ``now`` (default: the present instant)."""
        now = now or utcnow()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


class Folder(Base):
    """An IMAP-style folder of one mailbox, with its UID counters (RFC 9051 §2.3.1.1)."""

    __tablename__ = "folders"
    __table_args__ = (UniqueConstraint("mailbox_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    special_use: Mapped[str] = mapped_column(String(16), default="")  # RFC 6154: \Sent, \Trash…
    uid_validity: Mapped[int] = mapped_column(BigInteger)
    uid_next: Mapped[int] = mapped_column(BigInteger, default=1)

    mailbox: Mapped[Mailbox] = relationship(back_populates="folders")


class Message(Base):
    """One stored message body (immutable), shared by every mailbox entry that points at it."""

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    blob_sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    message_id: Mapped[str] = mapped_column(String(998), default="", index=True)
    # SHA-256 of the message as its sender handed it in (before our trace headers): with the
    # Message-ID, the key that tells a redelivery from another message (docs/security.md)
    content_sha256: Mapped[str] = mapped_column(String(64), default="", server_default="")
    subject: Mapped[str] = mapped_column(Text, default="")
    from_address: Mapped[str] = mapped_column(String(320), default="")
    date: Mapped[datetime | None] = mapped_column(UtcDateTime)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class MailboxEntry(Base):
    """A message as it appears in one folder: its UID, flags and arrival time."""

    __tablename__ = "mailbox_entries"
    __table_args__ = (UniqueConstraint("folder_id", "uid"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    folder_id: Mapped[int] = mapped_column(ForeignKey("folders.id", ondelete="CASCADE"))
    uid: Mapped[int] = mapped_column(BigInteger)
    message_pk: Mapped[int] = mapped_column(ForeignKey("messages.id"), index=True)
    flags: Mapped[str] = mapped_column(String(500), default="")  # space-separated, sorted
    internal_date: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    message: Mapped[Message] = relationship()


# --- Audit -------------------------------------------------------------------------------------


class AuditEntry(Base):
    """One append-only audit entry, chained to the previous one by its hash (docs/audit.md)."""

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    event: Mapped[str] = mapped_column(String(64), index=True)
    actor: Mapped[str] = mapped_column(String(320), index=True)
    target: Mapped[str] = mapped_column(String(1000), index=True)
    context: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """The chain's last sequence number and hash; its row lock serialises appends."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


# --- Outbound queue (mssante.queue.store; docs/queue.md) -----------------------------------------


class QueueStatus(StrEnum):
    """Where one recipient of a queued message stands (docs/queue.md: states and transitions)."""

    QUEUED = "queued"  # waiting for its first attempt, or released after a crash
    DEFERRED = "deferred"  # a temporary failure; tried again at next_attempt_at
    IN_FLIGHT = "in_flight"  # claimed by a delivery worker (claimed_by, claimed_at)
    DELIVERED = "delivered"  # the peer answered 250 to DATA (final)
    FAILED = "failed"  # permanent failure or given up; the sender was told (final)


class QueueMessage(Base):
    """A message waiting for delivery to other operators; its body is in the blob store."""

    __tablename__ = "queue_messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    blob_sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    sender: Mapped[str] = mapped_column(String(320), default="")  # envelope; "" = null sender
    account: Mapped[str] = mapped_column(String(320), default="")  # who submitted it
    message_id: Mapped[str] = mapped_column(String(998), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    recipients: Mapped[list[QueueRecipient]] = relationship(
        back_populates="message", cascade="all, delete-orphan", order_by="QueueRecipient.id"
    )


class QueueRecipient(Base):
    """One recipient of a queued message, with its own state, attempts and last reply.

    ``next_attempt_at`` is set only while the recipient waits (queued, deferred), so the index
    on it holds exactly the pending work that :func:`mssante.queue.store.claim_due` scans.
    """

    __tablename__ = "queue_recipients"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_pk: Mapped[int] = mapped_column(
        ForeignKey("queue_messages.id", ondelete="CASCADE"), index=True
    )
    address: Mapped[str] = mapped_column(String(320))
    domain: Mapped[str] = mapped_column(String(253), index=True)
    status: Mapped[QueueStatus] = mapped_column(_enum(QueueStatus, "queue_status"))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)
    last_code: Mapped[int | None] = mapped_column(Integer)  # SMTP reply code, or ours
    last_reply: Mapped[str] = mapped_column(String(1000), default="")  # enhanced code + text
    remote_mta: Mapped[str] = mapped_column(String(253), default="")  # "" when decided here
    delay_notified: Mapped[bool] = mapped_column(Boolean, default=False)
    claimed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    claimed_by: Mapped[str] = mapped_column(String(100), default="")
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)

    message: Mapped[QueueMessage] = relationship(back_populates="recipients")


# --- National directory (mssante.directory; docs/directory.md) ---------------------------------


class DirectorySource(StrEnum):
    """Where a directory entry comes from; an import only replaces and removes its own."""

    EXTRACTION = "extraction"  # the agency's daily extraction (mssante directory import)
    OPERATOR = "operator"  # published by an operator (FHIR PATCH; the publication half)


# Search words compare in code point order on both engines: SQLite's BINARY collation, and
# PostgreSQL's "C" (whatever the database's default), so that a prefix is one index range.
_WORD_TYPE = String(64).with_variant(String(64, collation="C"), "postgresql")


class DirectoryEntry(Base):
    """One mailbox (BAL) of the national directory: the extraction's line as it came (``raw``,
    the 31 fields, exported byte for byte), and the columns search and FHIR reads filter on."""

    __tablename__ = "directory_entries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # A unique index rather than a constraint, so that a first import can drop and rebuild it.
    address: Mapped[str] = mapped_column(String(320), unique=True, index=True)  # lower case
    bal_type: Mapped[MailboxType] = mapped_column(_enum(MailboxType, "mailbox_type"))
    id_nat_pp: Mapped[str] = mapped_column(String(32), default="", index=True)
    structure_id: Mapped[str] = mapped_column(String(32), default="", index=True)
    profession_code: Mapped[str] = mapped_column(String(8), default="")
    postal_code: Mapped[str] = mapped_column(String(10), default="")
    city: Mapped[str] = mapped_column(String(200), default="")  # folded (normalize.fold)
    liste_rouge: Mapped[bool] = mapped_column(Boolean, default=False)  # never published
    source: Mapped[DirectorySource] = mapped_column(_enum(DirectorySource, "directory_source"))
    ordinal: Mapped[int] = mapped_column(BigInteger, index=True)  # position in the file (export)
    content_hash: Mapped[int] = mapped_column(BigInteger)  # BLAKE2b-64 of raw, signed
    sort_name: Mapped[str] = mapped_column(_WORD_TYPE)  # alphabetical key of results
    search_text: Mapped[str] = mapped_column(Text)  # " names | structure | address | context "
    raw: Mapped[str] = mapped_column(Text)  # the line, without its end-of-line


class DirectoryWord(Base):
    """The type-ahead index: one row per (word, mailbox), ordered the way results are ranked,
    so that the first rows of a prefix range are the answer (docs/decisions/0009). Liste rouge
    mailboxes have no row. Rebuilt in bulk by each import."""

    __tablename__ = "directory_words"
    __table_args__ = ({"sqlite_with_rowid": False},)

    word: Mapped[str] = mapped_column(_WORD_TYPE, primary_key=True)
    weight: Mapped[int] = mapped_column(Integer, primary_key=True)  # normalize.WEIGHT_*
    sort_name: Mapped[str] = mapped_column(_WORD_TYPE, primary_key=True)
    entry_id: Mapped[int] = mapped_column(Integer, primary_key=True)  # directory_entries.id


class DirectoryStructure(Base):
    """A structure named by mailboxes of the directory (IdNatStruct), with the words of its
    names and town: a few thousand rows, so that a query such as "cardiologie chu lyon" finds
    the structure first, then its mailboxes. Rebuilt by each import."""

    __tablename__ = "directory_structures"

    structure_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    search_text: Mapped[str] = mapped_column(Text)  # " word word … "


class DirectoryStructureWord(Base):
    """Words of structures, in key order (the structures' type-ahead index)."""

    __tablename__ = "directory_structure_words"
    __table_args__ = ({"sqlite_with_rowid": False},)

    word: Mapped[str] = mapped_column(_WORD_TYPE, primary_key=True)
    structure_id: Mapped[str] = mapped_column(String(32), primary_key=True)


class DirectoryImport(Base):
    """One import of an extraction: its file, counts, and how its lines ended (for export)."""

    __tablename__ = "directory_imports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    file_name: Mapped[str] = mapped_column(String(300))
    sha256: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(320))
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime] = mapped_column(UtcDateTime)
    lines: Mapped[int] = mapped_column(Integer)
    added: Mapped[int] = mapped_column(Integer)
    updated: Mapped[int] = mapped_column(Integer)
    removed: Mapped[int] = mapped_column(Integer)
    bad_lines: Mapped[int] = mapped_column(Integer)
    newline: Mapped[str] = mapped_column(String(2), default="\n")
    bom: Mapped[bool] = mapped_column(Boolean, default=False)


# --- Directory publication (docs/publication.md) -----------------------------------------------
# Operator side: the transactional outbox of mailbox changes to publish (directory/outbox.py,
# operator/publisher.py). Authority side: what each operator published (directory/publication.py).


class OutboxStatus(StrEnum):
    """Where one change waiting for the authority stands (docs/publication.md, "The outbox")."""

    PENDING = "pending"  # not sent yet, or sent and to be tried again (next_attempt_at)
    SENT = "sent"  # the authority accepted it (2xx; final)
    FAILED = "failed"  # the authority refused it for good (4xx; final, audited)


class OutboxOperation(StrEnum):
    """The FHIR PATCH operation a change becomes (openapi-balmss.yaml, PatchParameters)."""

    INSERT = "insert"  # a new mailbox
    REPLACE = "replace"  # its whole ContactPoint again (liste rouge, description…)
    DELETE = "delete"  # a closed mailbox


class DirectoryOutbox(Base):
    """One change of a mailbox to publish, written in the transaction of the change itself.

    Rows of one address are sent in ``id`` order, one at a time; ``next_attempt_at`` is set
    only while the row waits, so its index holds exactly the pending work.
    """

    __tablename__ = "directory_outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    address: Mapped[str] = mapped_column(String(320), index=True)
    operation: Mapped[OutboxOperation] = mapped_column(_enum(OutboxOperation, "outbox_operation"))
    resource: Mapped[str] = mapped_column(String(32))  # Practitioner or Organization
    # "system|value" of the conditional PATCH; "" = this operator's own structure id, filled
    # in when sent (an ORG mailbox created without a structure of its own).
    identifier: Mapped[str] = mapped_column(String(200), default="")
    body: Mapped[str] = mapped_column(Text)  # the Parameters resource, JSON
    status: Mapped[OutboxStatus] = mapped_column(_enum(OutboxStatus, "outbox_status"))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)
    claimed_by: Mapped[str] = mapped_column(String(100), default="")
    claimed_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_status: Mapped[int | None] = mapped_column(Integer)  # HTTP status, None: no answer
    last_error: Mapped[str] = mapped_column(String(1000), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class DirectoryPublication(Base):
    """Authority: a mailbox published by an operator, with what the extraction's line cannot
    hold (rank, description, responsible). Kept after a delete (``deleted_at``), so that the
    resource stays known and a repeated delete is answered 200, not 404."""

    __tablename__ = "directory_publications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    address: Mapped[str] = mapped_column(String(320), unique=True)  # lower case
    resource: Mapped[str] = mapped_column(String(32))  # Practitioner or Organization
    identifier: Mapped[str] = mapped_column(String(32), index=True)  # idNat or IdNatStruct
    bal_type: Mapped[MailboxType] = mapped_column(_enum(MailboxType, "mailbox_type"))
    operator: Mapped[str] = mapped_column(String(200))  # the registry's name of the publisher
    rank: Mapped[int | None] = mapped_column(Integer)
    description: Mapped[str] = mapped_column(String(500), default="")
    responsible: Mapped[str] = mapped_column(String(500), default="")
    published_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


# --- Webmail (docs/webmail.md) ------------------------------------------------------------------


class WebSession(Base):
    """A webmail session: the cookie holds a random token, this row holds its SHA-256 (a copy
    of the table gives nobody a session). Deleted on logout, revocation, idle timeout."""

    __tablename__ = "web_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    # "password", "totp", "oidc", "certificate": how the login was made. A password alone
    # only reaches the second-factor pages ("pending" sessions, docs/webmail.md "Login").
    method: Mapped[str] = mapped_column(String(16))
    pending: Mapped[bool] = mapped_column(Boolean, default=False)
    csrf_token: Mapped[str] = mapped_column(String(64))
    mailbox: Mapped[str] = mapped_column(String(320), default="")  # the mailbox being read
    language: Mapped[str] = mapped_column(String(8), default="")
    user_agent: Mapped[str] = mapped_column(String(300), default="")
    peer: Mapped[str] = mapped_column(String(64), default="")
    oidc_token_id: Mapped[str] = mapped_column(String(200), default="")  # jti, rechecked
    # What the login rests on besides the account (auth/revocation.py Credential.token:
    # "password:12", "certificate:SERIAL@ISSUER", "oidc_token:JTI"); its revocation deletes the row
    rests_on: Mapped[str] = mapped_column(String(600), default="", index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    checked_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)  # token recheck


class WebLogin(Base):
    """An OIDC login under way (authorization code with PKCE, RFC 7636): what the callback
    needs, found by the hash of ``state``; used once, valid a few minutes."""

    __tablename__ = "web_logins"

    state_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    verifier: Mapped[str] = mapped_column(String(128))
    nonce: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class PatientOpposition(Base):
    """A patient's opposition to exchanges of their data (BRIEF §7), recorded at this operator
    by a professional or the establishment; mail about that patient is then refused."""

    __tablename__ = "patient_oppositions"

    ins: Mapped[str] = mapped_column(String(15), primary_key=True)  # NIR or NIA with its key
    recorded_by: Mapped[str] = mapped_column(String(320))
    note: Mapped[str] = mapped_column(String(500), default="")
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class ReceiptKind(StrEnum):
    """What a returned report says of one recipient (RFC 3464 actions, RFC 8098 dispositions)."""

    DELIVERED = "delivered"
    DELAYED = "delayed"
    FAILED = "failed"
    READ = "read"


class MessageReceipt(Base):
    """A delivery (DSN) or read (MDN) report about a message sent from ``mailbox_id``, recorded
    when the report is delivered to that mailbox; the Sent view shows them per recipient."""

    __tablename__ = "message_receipts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(
        ForeignKey("mailboxes.id", ondelete="CASCADE"), index=True
    )
    original_message_id: Mapped[str] = mapped_column(String(998), index=True)
    recipient: Mapped[str] = mapped_column(String(320))
    kind: Mapped[ReceiptKind] = mapped_column(_enum(ReceiptKind, "receipt_kind"))
    detail: Mapped[str] = mapped_column(String(1000), default="")
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


# --- Revocation (docs/revocation.md) ----------------------------------------------------------------


class Revocation(Base):
    """Something a session may rest on no longer holds (auth/revocation.py): written in the
    transaction that revokes it; every process's watcher reads the rows after the last it saw
    and ends its open sessions resting on it. Kind ``trust_refresh``: a request to refresh the
    CRLs and the whitelist now."""

    __tablename__ = "revocations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))  # auth.revocation.Kind
    account_id: Mapped[int | None] = mapped_column(Integer)  # informative: no foreign key
    key: Mapped[str] = mapped_column(String(500), default="")  # Credential.key
    reason: Mapped[str] = mapped_column(String(100), default="")
    at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
