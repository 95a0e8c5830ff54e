"""Our backend for pymap: pymap speaks IMAP, :mod:`mssante.ops.folders` decides and stores.

pymap's backend plugin model (``pymap.backend.session.BaseSession`` over a
``MailboxSetInterface`` of ``MailboxDataInterface``, the shape of its ``dict`` backend) is
implemented here over the folder operations; nothing of pymap leaks past this package. The
commands that touch many messages (FETCH with \\Seen, STORE, SEARCH, COPY, MOVE, EXPUNGE)
are overridden to make one folder operation each, instead of pymap's one call per message.

Every call goes through :meth:`MailboxRef.call`, which runs the (blocking) folder operation in
a worker thread with the session's caller and mailbox: the authorization check happens inside
each operation (:mod:`mssante.ops.rights`, the one rule), never here. What a folder advertises
at SELECT (READ-ONLY, PERMANENTFLAGS) is what that rule says the caller may do (RFC 4314 §4).
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import hashlib
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from pymap.backend.mailbox import MailboxDataInterface, MailboxSetInterface
from pymap.backend.session import BaseSession
from pymap.bytes import Writeable
from pymap.concurrent import Event
from pymap.config import IMAPConfig
from pymap.exceptions import (
    MailboxConflict,
    MailboxNotFound,
    MailboxReadOnly,
    NotAllowedError,
    NotSupportedError,
)
from pymap.flags import FlagOp
from pymap.interfaces.message import CachedMessage, LoadedMessageInterface
from pymap.listtree import ListTree
from pymap.mailbox import MailboxSnapshot
from pymap.message import BaseLoadedMessage, BaseMessage
from pymap.mime import MessageContent
from pymap.parsing.message import AppendMessage
from pymap.parsing.response.code import CopyUid
from pymap.parsing.specials import (
    FetchAttribute,
    FetchRequirement,
    ObjectId,
    SearchKey,
    SequenceSet,
)
from pymap.parsing.specials.flag import Flag, Recent, Wildcard, get_system_flags
from pymap.selected import SelectedMailbox, SelectedSet

from mssante.config import MimeSettings
from mssante.imap.search import criterion_of
from mssante.imap.watch import FolderWatch
from mssante.mail.mime import structure
from mssante.ops.bus import ChangeBus
from mssante.ops.folders import (
    DELIMITER,
    INBOX,
    AccessDenied,
    Caller,
    Entry,
    FlagMode,
    FolderExists,
    FolderNotFound,
    FolderRefused,
    Folders,
    Probe,
    UidRange,
)
from mssante.ops.rights import Operation, may_change_flag, read_only

T = TypeVar("T")
_MODES = {
    FlagOp.ADD: FlagMode.ADD,
    FlagOp.DELETE: FlagMode.REMOVE,
    FlagOp.REPLACE: FlagMode.REPLACE,
}
FULL_REFRESH_SECONDS = 30.0  # a folder is relisted at least this often (flag changes elsewhere)
# System flags and any keyword (\*): $Forwarded, $MDNSent… (RFC 9051 §7.1 PERMANENTFLAGS)
ALL_FLAGS = (get_system_flags() - {Recent}) | {Wildcard}


@dataclass(frozen=True, eq=False, slots=True, weakref_slot=True)
class SyncMark:
    """A listing of a folder: what a session last saw (kept as pymap's ``mod_sequence``),
    and what other sessions of the same folder may adopt (:meth:`Listings.latest`)."""

    probe: Probe  # UIDVALIDITY, UIDNEXT, message count
    version: int  # the bus's count of this process's changes to the mailbox, then
    listed_at: float  # time.monotonic() of the listing
    messages: tuple[ListedMessage, ...] = ()


@contextlib.contextmanager
def translated(name: str = "", *, try_create: bool = False) -> Iterator[None]:
    """Folder errors as IMAP response codes (RFC 5530)."""
    try:
        yield
    except AccessDenied as exc:  # NotPermitted too: beyond the caller's grant (RFC 4314 §4)
        raise NotAllowedError(exc.public) from None  # NO [NOPERM]
    except FolderNotFound:
        raise MailboxNotFound(name, try_create=try_create) from None  # [NONEXISTENT]/[TRYCREATE]
    except FolderExists:
        raise MailboxConflict(name) from None  # NO [ALREADYEXISTS]
    except FolderRefused as exc:
        raise NotSupportedError(exc.public) from None  # NO [CANNOT]


@dataclass(frozen=True)
class MailboxRef:
    """What one IMAP session works on: a caller, one mailbox, the operations and the bus."""

    folders: Folders
    caller: Caller
    address: str
    bus: ChangeBus
    watch: FolderWatch
    listings: Listings
    mime: MimeSettings = field(default_factory=MimeSettings)

    def parse(self, raw: bytes) -> MessageContent:
        """pymap's tree of a message, cut at the MIME limits (mail/mime.py)."""
        return structure(raw, self.mime).content

    async def call(self, op: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``op(caller, address, *args)`` in a worker thread (database and blob I/O)."""
        return await asyncio.to_thread(op, self.caller, self.address, *args, **kwargs)


def _flags(names: Iterable[str]) -> frozenset[Flag]:
    # A flag IMAP cannot carry (not ASCII: written by another path) is not shown.
    return frozenset(Flag(name) for name in names if name.isascii() and name)


def _names(flags: Iterable[Flag]) -> set[str]:
    return {flag.value.decode("ascii") for flag in flags}


_NO_ID = ObjectId(None)  # pymap makes two per message unless given one; an immutable value


class ListedMessage(BaseMessage):
    """A message as a session's snapshot of its folder holds it: UID, date, flags and size,
    no content and nothing of the session, so that every session listing the same folder
    version shares one object per message (:class:`Listings`)."""

    __slots__ = ("__weakref__", "size")

    def __init__(
        self,
        uid: int,
        internal_date: datetime,
        flags: frozenset[Flag],
        size: int,
        *,
        expunged: bool = False,
    ) -> None:
        super().__init__(
            uid, internal_date, flags, email_id=_NO_ID, thread_id=_NO_ID, expunged=expunged
        )
        self.size = size

    def as_expunged(self) -> ListedMessage:
        return ListedMessage(
            self.uid, self.internal_date, self.permanent_flags, self.size, expunged=True
        )

    async def load_content(self, requirement: FetchRequirement) -> LoadedMessageInterface:
        """No content: a FETCH of a body goes through the :class:`StoredMessage` it makes."""
        return BaseLoadedMessage(self, requirement, None)


class _Unloaded:
    """The content was not read with the message (a sentinel: None means "no content")."""


UNLOADED = _Unloaded()


class StoredMessage(ListedMessage):
    """A message a FETCH works on. Its content comes with it when the command's data was read
    in one operation (:meth:`StoreSession.fetch_messages`), else is read from the blob store
    when pymap asks, and parsed off the event loop. When the command wants no content
    (``wanted``: RFC822.SIZE alone is answered from the stored size), none is read."""

    __slots__ = ("_content", "_load", "_parse", "_wanted")

    def __init__(
        self,
        listed: ListedMessage,
        load: Callable[[int], Any],
        parse: Callable[[bytes], MessageContent],
        *,
        wanted: FetchRequirement | None = None,
        content: MessageContent | bytes | _Unloaded | None = UNLOADED,
        expunged: bool = False,
    ) -> None:
        super().__init__(
            listed.uid, listed.internal_date, listed.permanent_flags, listed.size, expunged=expunged
        )
        self._load = load
        self._parse = parse
        self._wanted = wanted
        self._content = content

    def as_expunged(self) -> StoredMessage:
        return StoredMessage(self, self._load, self._parse, wanted=self._wanted, expunged=True)

    async def load_content(self, requirement: FetchRequirement) -> LoadedMessageInterface:
        wanted = requirement if self._wanted is None else self._wanted
        if wanted.has_none(FetchRequirement.CONTENT):
            return SizedLoadedMessage(self, requirement, None)
        content = self._content
        if isinstance(content, bytes):
            return RawLoadedMessage(self, requirement, content, self._parse)
        if isinstance(content, _Unloaded):
            raw: bytes | None = await self._load(self.uid)
            content = None if raw is None else await asyncio.to_thread(self._parse, raw)
        return SizedLoadedMessage(self, requirement, content)


class SizedLoadedMessage(BaseLoadedMessage):
    """pymap's loaded message, whose whole size (RFC822.SIZE) is the stored size when the
    content was not read (pymap would answer 0)."""

    __slots__ = ()

    def get_size(self, section: Sequence[int] | None = None) -> int:
        message = self.message
        if not section and self._content is None and isinstance(message, ListedMessage):
            return message.size
        return super().get_size(section)

    def get_body(self, section: Sequence[int] | None = None, binary: bool = False) -> Writeable:
        """pymap's; a BINARY fetch (RFC 3516) of a part whose base64 or quoted-printable is
        corrupt raises in pymap (binascii.Error, while the answer is written: the client saw
        its connection close with no reply, found by tests/fuzz). The part is then decoded
        leniently, as mail readers do (written here: pymap has no lenient decoder); a part of
        an identity encoding pymap does not know (``binary``: NotImplementedError) is sent as
        stored."""
        try:
            return super().get_body(section, binary)
        except (ValueError, NotImplementedError, LookupError):  # binascii.Error: a ValueError
            if not binary:
                raise
            body = bytes(super().get_body(section, False))
            decoded = _lenient_base64(body) if b"base64" in self._cte(section) else None
            return Writeable.wrap(decoded if decoded is not None else body)

    def _cte(self, section: Sequence[int] | None) -> bytes:
        header = bytes(self.get_headers(section or [])).lower()
        start = header.find(b"content-transfer-encoding:")
        return header[start : start + 60] if start >= 0 else b""


def _lenient_base64(data: bytes) -> bytes | None:
    """Base64 with what is not of its alphabet dropped and the padding completed; None when
    even that cannot be read."""
    kept = bytes(c for c in data if c in _BASE64_ALPHABET)
    kept = kept.rstrip(b"=")
    if len(kept) % 4 == 1:  # one stray character cannot be a byte
        kept = kept[:-1]
    try:
        return binascii.a2b_base64(kept + b"=" * (-len(kept) % 4))
    except binascii.Error:
        return None


_BASE64_ALPHABET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")


class RawLoadedMessage(SizedLoadedMessage):
    """A message read for a FETCH that wants it whole (``BODY.PEEK[]``, ``RFC822``, sizes:
    what mbsync asks for each message): answered from the bytes, never parsed. Any other
    part asked all the same is parsed then."""

    __slots__ = ("_parse", "_raw")

    def __init__(
        self,
        message: ListedMessage,
        requirement: FetchRequirement,
        raw: bytes,
        parse: Callable[[bytes], MessageContent],
    ) -> None:
        super().__init__(message, requirement, None)
        self._raw = raw
        self._parse = parse

    @property
    def content(self) -> MessageContent:
        if self._content is None:
            self._content = self._parse(self._raw)
        return self._content

    def __bytes__(self) -> bytes:
        return self._raw

    def get_body(self, section: Sequence[int] | None = None, binary: bool = False) -> Writeable:
        if not section and not binary:
            return Writeable.wrap(self._raw)
        return super().get_body(section, binary)

    def get_size(self, section: Sequence[int] | None = None) -> int:
        return len(self._raw) if not section else super().get_size(section)


class Listings:
    """The messages of the folders this process's sessions have listed, shared: a session's
    snapshot of a 10,000-message folder was 10,000 objects of its own (about 1.5 KB each with
    their flags, dates and identifiers); two sessions listing the same folder now point to the
    same objects, and sets of flags are made once per process.

    A listed message is reused only if its UID, flags, date and size are the same, so sharing
    never shows a session anything but what its own listing read. Objects no snapshot holds
    any more leave the map by themselves (weak references)."""

    MAX_FLAG_SETS = 4096  # distinct flag sets kept; beyond, each listing makes its own

    def __init__(self) -> None:
        self._flag_sets: dict[frozenset[str], frozenset[Flag]] = {}
        self._messages: weakref.WeakValueDictionary[tuple[int, int], ListedMessage] = (
            weakref.WeakValueDictionary()
        )
        self._latest: weakref.WeakValueDictionary[int, SyncMark] = weakref.WeakValueDictionary()

    def latest(self, folder_id: int) -> SyncMark | None:
        """The newest listing of the folder that a session still holds."""
        return self._latest.get(folder_id)

    def remember(self, mark: SyncMark) -> None:
        known = self._latest.get(mark.probe.folder_id)
        if known is None or known.listed_at < mark.listed_at:
            self._latest[mark.probe.folder_id] = mark

    def flags(self, names: frozenset[str]) -> frozenset[Flag]:
        flags = self._flag_sets.get(names)
        if flags is None:
            flags = _flags(names)
            if len(self._flag_sets) < self.MAX_FLAG_SETS:
                self._flag_sets[names] = flags
        return flags

    def message(self, folder_id: int, entry: Entry) -> ListedMessage:
        flags = self.flags(entry.flags)
        known = self._messages.get((folder_id, entry.uid))
        if (
            known is not None
            and known.permanent_flags == flags  # not "is": pymap copies an empty set
            and known.internal_date == entry.internal_date
            and known.size == entry.size
        ):
            return known
        listed = ListedMessage(entry.uid, entry.internal_date, flags, entry.size)
        self._messages[(folder_id, entry.uid)] = listed
        return listed


class RightsSnapshot(MailboxSnapshot):
    """What SELECT answers: PERMANENTFLAGS only the flags the caller may change (RFC 4314 §4:
    \\Seen without ``s``, \\Deleted without ``t``, the others and \\* without ``w`` are not
    listed), FLAGS every flag of the mailbox all the same."""

    __slots__ = ("_defined",)

    def __init__(self, *args: Any, defined: frozenset[Flag]) -> None:
        super().__init__(*args)
        self._defined = defined

    @property
    def flags(self) -> frozenset[Flag]:
        return self._defined | self.session_flags


def changeable(holds: frozenset[Operation]) -> frozenset[Flag]:
    """The permanent flags that a caller holding ``holds`` may change."""
    allowed = {f for f in ALL_FLAGS if f != Wildcard and may_change_flag(holds, f.value.decode())}
    return frozenset(allowed | ({Wildcard} if Operation.FLAG in holds else set()))


class FolderData(MailboxDataInterface[ListedMessage]):
    """One folder of the session's mailbox, as pymap sees a mailbox; ``holds``: what the
    caller may do to the mailbox, as the folder was probed."""

    def __init__(
        self, ref: MailboxRef, name: str, probe: Probe, holds: frozenset[Operation]
    ) -> None:
        self._ref = ref
        self.name = name
        self._probe = probe
        self._holds = holds
        digest = hashlib.sha256(f"{ref.address}\0{name}\0{probe.uid_validity}".encode()).digest()
        self._mailbox_id = ObjectId.new_mailbox_id(digest[:16])
        self._selected_set = SelectedSet()

    @property
    def mailbox_id(self) -> ObjectId:
        return self._mailbox_id

    @property
    def readonly(self) -> bool:
        """RFC 4314 §4 SELECT: READ-ONLY when the caller may neither insert, expunge nor change
        a flag (\\Seen is shared in this store, so ``s`` counts)."""
        return read_only(self._holds)

    @property
    def uid_validity(self) -> int:
        return self._probe.uid_validity

    @property
    def permanent_flags(self) -> frozenset[Flag]:
        """Every flag a STORE may name: those the caller may not change reach the folder
        operation, which refuses them (NO [NOPERM]) rather than pymap dropping them."""
        return ALL_FLAGS

    @property
    def selected_set(self) -> SelectedSet:
        return self._selected_set

    def listed(self, entry: Entry) -> ListedMessage:
        return self._ref.listings.message(self._probe.folder_id, entry)

    def message(
        self,
        entry: Entry,
        *,
        wanted: FetchRequirement | None = None,
        content: MessageContent | bytes | _Unloaded | None = UNLOADED,
    ) -> StoredMessage:
        return StoredMessage(
            self.listed(entry), self._body, self._ref.parse, wanted=wanted, content=content
        )

    async def _body(self, uid: int) -> bytes | None:
        with translated(self.name):
            return await self._ref.call(self._ref.folders.body, self.name, uid)

    async def update_selected(
        self, selected: SelectedMailbox, *, wait_on: Event | None = None
    ) -> SelectedMailbox:
        """After every command: the folder's state for pymap to compare with what the session
        last saw (new messages, expunges, flag changes become untagged responses).

        Listing a folder costs a query and an object per message, so it is skipped when
        nothing can have changed since the last listing: the folder's UIDNEXT and message
        count (probed when the command began) are the same, this process published no change
        of the mailbox (its own commands, SMTP deliveries: the bus), and the listing is less
        than :data:`FULL_REFRESH_SECONDS` old (flag changes made by another process). Without
        it, a client fetching 10,000 messages one by one made 10,000 listings of 10,000."""
        woken = wait_on is not None and await self._wait_for_change(selected, wait_on)
        if not woken and self._unchanged_since(selected.mod_sequence):
            return selected  # nothing changed (and the client ended IDLE, if it was in one)
        version = self._ref.bus.version(self._ref.address)  # before: a change meanwhile counts
        shared = None
        if not woken and wait_on is not None:
            shared = await self._newer_listing(selected, version)
        if shared is None:
            with translated(self.name):
                view = await self._ref.call(self._ref.folders.select, self.name)
            listed = tuple(self.listed(e) for e in view.entries)
            shared = SyncMark(view.probe, version, time.monotonic(), listed)
            self._ref.listings.remember(shared)
        selected.mod_sequence = shared
        selected.set_messages(shared.messages)
        return selected

    async def _newer_listing(self, selected: SelectedMailbox, version: int) -> SyncMark | None:
        """After :data:`FULL_REFRESH_SECONDS` in IDLE with no change seen (the watch polls
        the probe every second): a listing of the folder made since ours by another session
        of this process, with no change published since and the folder's probe the same now,
        is as good as a new one. 2,000 sessions idling on one folder made 2,000 listings
        every 30 s; now a few, and 2,000 probes (one cheap query each), which also check
        again that the caller may still read the mailbox (a delegation revoked meanwhile)."""
        mark, shared = selected.mod_sequence, self._ref.listings.latest(self._probe.folder_id)
        if not isinstance(mark, SyncMark) or shared is None:
            return None
        if not (shared.version == version and shared.listed_at > mark.listed_at):
            return None
        with translated(self.name):
            probe = await self._ref.call(self._ref.folders.probe, self.name)
        return shared if probe == shared.probe else None

    def _unchanged_since(self, mark: object) -> bool:
        return (
            isinstance(mark, SyncMark)
            and mark.probe == self._probe
            and mark.version == self._ref.bus.version(self._ref.address)
            and time.monotonic() - mark.listed_at < FULL_REFRESH_SECONDS
        )

    async def _wait_for_change(self, selected: SelectedMailbox, wait_on: Event) -> bool:
        """IDLE (RFC 2177): return when the client is done, when this process changed the
        mailbox (the bus), when the process's poll of the database shows another process did
        (the watch), or after :data:`FULL_REFRESH_SECONDS` (flags changed elsewhere). True:
        a change woke it."""
        mark = selected.mod_sequence
        if not isinstance(mark, SyncMark):
            return True
        bus, watch = self._ref.bus, self._ref.watch
        with bus.subscribe(self._ref.address) as changed, watch.waiting(mark.probe) as polled:
            if mark.version != bus.version(self._ref.address):
                return True  # changed between the listing and the subscription
            either = wait_on.or_event(changed, polled)  # set only by what is set from now on
            if not wait_on.is_set():
                await either.wait(timeout=FULL_REFRESH_SECONDS)
            return changed.is_set() or polled.is_set()

    async def append(self, append_msg: AppendMessage, *, recent: bool = False) -> StoredMessage:
        folders = self._ref.folders
        with translated(self.name):
            result = await self._ref.call(
                folders.append,
                self.name,
                append_msg.literal,
                flags=_names(append_msg.flag_set),
                internal_date=append_msg.when,
            )
        when = append_msg.when or datetime.now().astimezone()
        entry = Entry(result.uid, frozenset(_names(append_msg.flag_set)), when, 0)
        return self.message(entry)

    async def copy(self, uid: int, destination: FolderData, *, recent: bool = False) -> int | None:
        with translated(destination.name, try_create=True):
            result = await self._ref.call(
                self._ref.folders.copy, self.name, [uid], destination.name
            )
        return result.uids[0][1] if result.uids else None

    async def move(self, uid: int, destination: FolderData, *, recent: bool = False) -> int | None:
        with translated(destination.name, try_create=True):
            result = await self._ref.call(
                self._ref.folders.move, self.name, [uid], destination.name
            )
        return result.uids[0][1] if result.uids else None

    async def get(self, uid: int, cached_msg: CachedMessage) -> ListedMessage:
        with translated(self.name):
            entries = await self._ref.call(self._ref.folders.fetch, self.name, [uid])
        return self.message(entries[0]) if entries else self.gone(cached_msg)

    async def update(
        self, uid: int, cached_msg: CachedMessage, flag_set: frozenset[Flag], mode: FlagOp
    ) -> ListedMessage:
        with translated(self.name):
            entries = await self._ref.call(
                self._ref.folders.store_flags,
                self.name,
                [uid],
                flags=_names(flag_set),
                mode=_MODES[mode],
            )
        return self.message(entries[0]) if entries else self.gone(cached_msg)

    @staticmethod
    def gone(cached: CachedMessage) -> ListedMessage:
        """A message the folder no longer holds, as the session last saw it."""
        if isinstance(cached, ListedMessage):
            return cached.as_expunged()
        raise TypeError(cached)

    async def delete(self, uids: Iterable[int]) -> None:
        with translated(self.name):
            await self._ref.call(self._ref.folders.expunge, self.name, list(uids))

    async def claim_recent(self, selected: SelectedMailbox) -> None:
        """\\Recent is not kept (RFC 9051 dropped it): no message is ever recent."""

    async def cleanup(self) -> None:
        """Nothing to tidy: expunged bodies are collected by the store's own clean-up."""

    async def snapshot(self) -> MailboxSnapshot:
        with translated(self.name):
            status = await self._ref.call(self._ref.folders.status, self.name)
        return RightsSnapshot(
            self.mailbox_id,
            self.readonly,
            status.folder.uid_validity,
            changeable(self._holds),
            self.session_flags,
            status.messages,
            0,
            status.unseen,
            status.first_unseen,
            status.folder.uid_next,
            defined=ALL_FLAGS,
        )


class FolderSet(MailboxSetInterface[FolderData]):
    """The folders of the session's mailbox. Every folder counts as subscribed (LSUB lists
    them all; SUBSCRIBE and UNSUBSCRIBE are accepted and change nothing)."""

    def __init__(self, ref: MailboxRef) -> None:
        self._ref = ref

    @property
    def delimiter(self) -> str:
        return DELIMITER

    async def set_subscribed(self, name: str, subscribed: bool) -> None:
        return None

    async def list_subscribed(self) -> ListTree:
        return await self.list_mailboxes()

    async def list_mailboxes(self) -> ListTree:
        with translated():
            infos = await self._ref.call(self._ref.folders.list_folders)
        return ListTree(DELIMITER).update(INBOX, *(i.name for i in infos))

    async def get_mailbox(self, name: str) -> FolderData:
        try:
            with translated(name):
                probe, holds = await self._ref.call(self._ref.folders.probe_with_rights, name)
        except MailboxNotFound:
            raise KeyError(name) from None
        return FolderData(self._ref, name, probe, holds)

    async def add_mailbox(self, name: str) -> ObjectId:
        try:
            with translated(name):
                info = await self._ref.call(self._ref.folders.create_folder, name)
        except MailboxConflict:
            raise ValueError(name) from None
        digest = hashlib.sha256(f"{self._ref.address}\0{info.name}\0{info.uid_validity}".encode())
        return ObjectId.new_mailbox_id(digest.digest()[:16])

    async def delete_mailbox(self, name: str) -> None:
        try:
            with translated(name):
                await self._ref.call(self._ref.folders.delete_folder, name)
        except MailboxNotFound:
            raise KeyError(name) from None

    async def rename_mailbox(self, before: str, after: str) -> None:
        try:
            with translated(before):
                await self._ref.call(self._ref.folders.rename_folder, before, after)
        except MailboxNotFound:
            raise KeyError(before) from None
        except MailboxConflict:
            raise ValueError(after) from None


@dataclass(frozen=True)
class _Kept:
    name: str
    data: FolderData
    version: int  # the bus's version of the mailbox before the probe
    probed_at: float


class StoreSession(BaseSession[ListedMessage]):
    """One logged-in IMAP session on one mailbox."""

    def __init__(self, ref: MailboxRef, config: IMAPConfig) -> None:
        super().__init__(ref.address)
        self._ref = ref
        self._config = config
        self._folders = FolderSet(ref)
        self._kept: _Kept | None = None  # the selected folder, as last probed
        self._plan: FetchPlan | None = None  # what the FETCH under way needs

    @property
    def config(self) -> IMAPConfig:
        return self._config

    @property
    def mailbox_set(self) -> FolderSet:
        return self._folders

    async def _get_selected(self, selected: SelectedMailbox) -> FolderData:
        """The selected folder, probed again only when this process changed the mailbox or
        the probe is older than ``imap.poll_interval`` (another process's change then shows at
        the next command, as it would in IDLE). Before, every command probed: a client
        fetching 10,000 messages one by one made 10,000 probes, four queries each."""
        name = selected.lookup
        version = self._ref.bus.version(self._ref.address)
        kept = self._kept
        if (
            kept is not None
            and kept.name == name
            and kept.version == version
            and time.monotonic() - kept.probed_at < self._ref.watch.interval
        ):
            return kept.data
        data = await self._get_mailbox(name)
        assert isinstance(data, FolderData)
        self._kept = _Kept(name, data, version, time.monotonic())
        return data

    async def check_mailbox(
        self,
        selected: SelectedMailbox,
        *,
        wait_on: Event | None = None,
        housekeeping: bool = False,
    ) -> SelectedMailbox:
        """In IDLE (``wait_on``), each turn of the wait uses the folder as last probed,
        whatever its age: the bus and the watch report the changes. Else as pymap does."""
        kept = self._kept
        if wait_on is not None and kept is not None and kept.name == selected.lookup:
            return await kept.data.update_selected(selected, wait_on=wait_on)
        return await super().check_mailbox(selected, wait_on=wait_on, housekeeping=housekeeping)

    async def _selected_data(self, selected: SelectedMailbox) -> FolderData:
        data = await self._get_selected(selected)
        assert isinstance(data, FolderData)
        return data

    async def list_mailboxes(
        self,
        ref_name: str,
        filter_: str,
        subscribed: bool = False,
        selected: SelectedMailbox | None = None,
    ) -> tuple[Iterable[tuple[str, str | None, Sequence[bytes]]], SelectedMailbox | None]:
        """LIST and LSUB, with the RFC 6154 special-use attribute of each standard folder
        (\\Sent, \\Drafts, \\Trash, \\Archive) in every LIST response (RFC 6154 §2)."""
        if not filter_:  # the hierarchy delimiter request (RFC 9051 §6.3.9)
            return [("", DELIMITER, [b"Noselect"])], await self._load_updates(selected, None)
        with translated():
            infos = await self._ref.call(self._ref.folders.list_folders)
        special = {i.name: i.special_use.lstrip("\\").encode() for i in infos if i.special_use}
        tree = ListTree(DELIMITER).update(INBOX, *(i.name for i in infos))
        listed = [
            (e.name, DELIMITER, [*e.attributes, *([special[e.name]] if e.name in special else [])])
            for e in tree.list_matching(ref_name, filter_)
        ]
        return listed, await self._load_updates(selected, None)

    def expect_fetch(self, plan: FetchPlan) -> None:
        """What the next FETCH's attributes need (told by the connection: pymap passes
        only the sequence set to :meth:`fetch_messages`)."""
        self._plan = plan

    async def fetch_messages(
        self, selected: SelectedMailbox, sequence_set: SequenceSet, set_seen: bool
    ) -> tuple[Iterable[tuple[int, ListedMessage]], SelectedMailbox]:
        r"""FETCH: one operation for the whole set — with the messages' bytes, parsed in the
        same worker thread, when the attributes need content and the set is under
        :data:`PRELOAD_BYTES`; \Seen set in the same operation when a body is fetched
        without .PEEK (RFC 9051 §6.4.5), if the caller may (RFC 4314 §4: else the FETCH
        goes on and \Seen stays as it was: the folder operation decides)."""
        plan, self._plan = self._plan, None
        wanted = plan.wanted if plan else None
        data = await self._selected_data(selected)
        pairs = _get_all(selected, sequence_set)
        uids = [msg.uid for _, msg in pairs]
        folders = self._ref.folders
        contents: dict[int, MessageContent | bytes] = {}
        with translated(data.name):
            if set_seen and uids:
                entries = await self._ref.call(folders.fetch, data.name, uids, mark_seen=True)
            elif plan is not None and _preload(wanted, pairs):
                parse = None if plan.whole_only else self._ref.parse
                fetch = _fetch_contents(folders, parse)
                loaded = await self._ref.call(fetch, data.name, uids)
                entries = [entry for entry, _ in loaded]
                contents = {entry.uid: content for entry, content in loaded}
            else:
                entries = await self._ref.call(folders.fetch, data.name, uids)
        result = _pair(data, pairs, entries, wanted=wanted, contents=contents)
        return result, await data.update_selected(selected)

    async def search_mailbox(
        self, selected: SelectedMailbox, keys: frozenset[SearchKey]
    ) -> tuple[Iterable[tuple[int, ListedMessage]], SelectedMailbox]:
        """SEARCH over the messages this session knows (RFC 9051 §6.4.4)."""
        data = await self._selected_data(selected)
        criterion = criterion_of(keys, selected)
        known = selected.messages.get_all(SequenceSet.all(uid=True))
        span = UidRange(1, selected.messages.max_uid)
        with translated(data.name):
            matched = set(
                await self._ref.call(self._ref.folders.search, data.name, criterion, uids=span)
            )
        found = [(seq, msg) for seq, msg in known if msg.uid in matched]
        return _as_listed(found), await data.update_selected(selected)

    async def update_flags(
        self,
        selected: SelectedMailbox,
        sequence_set: SequenceSet,
        flag_set: frozenset[Flag],
        mode: FlagOp = FlagOp.REPLACE,
    ) -> tuple[Iterable[tuple[int, ListedMessage]], SelectedMailbox]:
        """STORE (RFC 9051 §6.4.6): one operation for the whole set; the flags go to
        MailboxEntry.flags, where the webmail reads them."""
        if selected.readonly:
            raise MailboxReadOnly()
        data = await self._selected_data(selected)
        pairs = _get_all(selected, sequence_set)
        stored = _names(selected.permanent_flags & flag_set)
        with translated(data.name):
            entries = await self._ref.call(
                self._ref.folders.store_flags,
                data.name,
                [msg.uid for _, msg in pairs],
                flags=stored,
                mode=_MODES[mode],
            )
        result = _pair(data, pairs, entries)
        for _, msg in result:
            if not msg.expunged:
                selected.session_flags.update(msg.uid, flag_set, mode)
        return result, await data.update_selected(selected)

    async def copy_messages(
        self, selected: SelectedMailbox, sequence_set: SequenceSet, mailbox: str
    ) -> tuple[CopyUid | None, SelectedMailbox]:
        """COPY with COPYUID (RFC 9051 §6.4.7, RFC 4315 §3)."""
        return await self._transfer(selected, sequence_set, mailbox, move=False)

    async def move_messages(
        self, selected: SelectedMailbox, sequence_set: SequenceSet, mailbox: str
    ) -> tuple[CopyUid | None, SelectedMailbox]:
        """MOVE (RFC 6851): copy and expunge in one transaction; pymap sends the COPYUID in
        an untagged OK before the EXPUNGE responses (RFC 6851 §4.3)."""
        return await self._transfer(selected, sequence_set, mailbox, move=True)

    async def _transfer(
        self, selected: SelectedMailbox, sequence_set: SequenceSet, mailbox: str, *, move: bool
    ) -> tuple[CopyUid | None, SelectedMailbox]:
        data = await self._selected_data(selected)
        uids = [uid for _, uid in selected.messages.get_uids(sequence_set)]
        op = self._ref.folders.move if move else self._ref.folders.copy
        with translated(mailbox, try_create=True):
            result = await self._ref.call(op, data.name, uids, mailbox)
        copy_uid = CopyUid(result.uid_validity, result.uids) if result.uids else None
        return copy_uid, await data.update_selected(selected)

    async def expunge_mailbox(
        self, selected: SelectedMailbox, uid_set: SequenceSet | None = None
    ) -> SelectedMailbox:
        """EXPUNGE, and UID EXPUNGE limited to a UID set (RFC 4315 §2.1)."""
        if selected.readonly:
            raise MailboxReadOnly()
        data = await self._selected_data(selected)
        uids = None if uid_set is None else [u for _, u in selected.messages.get_uids(uid_set)]
        with translated(data.name):
            await self._ref.call(self._ref.folders.expunge, data.name, uids)
        return await data.update_selected(selected)


def _get_all(
    selected: SelectedMailbox, sequence_set: SequenceSet
) -> Sequence[tuple[int, CachedMessage]]:
    """pymap's ``SynchronizedMessages.get_all``, without a walk of the whole folder for a
    few UIDs: a client fetching 10,000 messages one by one made 10,000 walks of 10,000
    (8 % of a sync's time). Reads pymap's ``_seqs_cache`` and ``_cache`` (pymap is pinned;
    ``tests/imap/test_imap_fetch_reads.py`` compares both ways)."""
    messages = selected.messages
    if not sequence_set.uid:
        return messages.get_all(sequence_set)
    wanted = sequence_set.flatten(messages.max_uid)
    if len(wanted) * 8 > messages.exists:
        return messages.get_all(sequence_set)
    seqs, cache = messages._seqs_cache, messages._cache
    found = [(seqs[uid], cache[uid]) for uid in wanted if uid in cache and uid in seqs]
    return sorted(found, key=lambda pair: pair[0])


def _pair(
    data: FolderData,
    pairs: Sequence[tuple[int, CachedMessage]],
    entries: Sequence[Entry],
    *,
    wanted: FetchRequirement | None = None,
    contents: Mapping[int, MessageContent | bytes] | None = None,
) -> list[tuple[int, ListedMessage]]:
    """(sequence number, message) with fresh entries; those gone meanwhile marked expunged."""
    fresh = {entry.uid: entry for entry in entries}
    contents = contents or {}
    result: list[tuple[int, ListedMessage]] = []
    for seq, cached in pairs:
        entry = fresh.get(cached.uid)
        if entry is None:
            result.append((seq, data.gone(cached)))
            continue
        content = contents.get(entry.uid, UNLOADED)
        result.append((seq, data.message(entry, wanted=wanted, content=content)))
    return result


@dataclass(frozen=True)
class FetchPlan:
    """What a FETCH's attributes need: ``wanted`` (RFC822.SIZE counted as metadata: the
    stored size answers it), and whether every content asked is the whole message."""

    wanted: FetchRequirement
    whole_only: bool

    @classmethod
    def of(cls, attributes: Iterable[FetchAttribute]) -> FetchPlan:
        wanted, whole_only = FetchRequirement.NONE, True
        for attribute in attributes:
            name = attribute.attribute
            if name == b"RFC822.SIZE":
                wanted |= FetchRequirement.METADATA
                continue
            wanted |= attribute.requirement
            if name not in _METADATA and not _whole(attribute):
                whole_only = False
        return cls(wanted, whole_only)


_METADATA = frozenset({b"UID", b"FLAGS", b"INTERNALDATE"})


def _whole(attribute: FetchAttribute) -> bool:
    """BODY[], BODY.PEEK[], RFC822 (a part of it, <start.length>, included)."""
    section = attribute.section
    return (
        attribute.attribute in (b"BODY", b"BODY.PEEK", b"RFC822")
        and section is not None
        and section.specifier is None
        and not section.parts
    )


PRELOAD_BYTES = 8 * 2**20  # a FETCH reads its messages' bytes in one operation up to this


def _preload(wanted: FetchRequirement | None, pairs: Sequence[tuple[int, CachedMessage]]) -> bool:
    if wanted is None or wanted.has_none(FetchRequirement.CONTENT) or not pairs:
        return False
    total = sum(msg.size for _, msg in pairs if isinstance(msg, ListedMessage))
    return total <= PRELOAD_BYTES


def _fetch_contents(
    folders: Folders, parse: Callable[[bytes], MessageContent] | None
) -> Callable[..., list[tuple[Entry, MessageContent | bytes]]]:
    """``Folders.fetch_with_bodies``, each message parsed in the same worker thread unless
    the FETCH wants messages whole (then the bytes as they are)."""

    def fetch(
        caller: Caller, address: str, folder: str, uids: Sequence[int]
    ) -> list[tuple[Entry, MessageContent | bytes]]:
        loaded = folders.fetch_with_bodies(caller, address, folder, uids)
        if parse is None:
            return [(entry, raw) for entry, raw in loaded]
        return [(entry, parse(raw)) for entry, raw in loaded]

    return fetch


def _as_listed(found: Sequence[tuple[int, CachedMessage]]) -> list[tuple[int, ListedMessage]]:
    return [(seq, msg) for seq, msg in found if isinstance(msg, ListedMessage)]
