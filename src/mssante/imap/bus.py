"""How a change to a mailbox reaches the IMAP sessions waiting on it (IDLE, RFC 2177).

In this process: every change publishes the mailbox's address on a :class:`ChangeBus` once it
has committed. SMTP deliveries do so through :class:`NotifyingMailStore` (the store the SMTP
listeners are given), folder operations through ``Folders(notify=…)``. Publishers run in any
thread (the group-commit writer, ``asyncio.to_thread`` workers); the bus hands the news to the
event loop, which wakes the waiting sessions at once.

Other processes (another node on the same database, the command line): the process polls the
folders its sessions wait on (:class:`~mssante.imap.watch.FolderWatch`, one query every
``imap.poll_interval``, one second by default), so their changes show up within that interval.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Sequence

from pymap.concurrent import Event
from sqlalchemy import event
from sqlalchemy.orm import Session

from mssante.ops.mailstore import Delivered, Headers, MailStore
from mssante.store.blobs import BlobStore
from mssante.store.db import Database

_PENDING = "mssante.imap.delivered"  # Session.info key: addresses delivered in this transaction


class ChangeBus:
    """In-process publish/subscribe of "this mailbox changed", keyed by address."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._subscribers: dict[str, set[Event]] = {}
        self._watchers: dict[str, int] = {}  # address -> sessions open on it
        self._versions: dict[str, int] = {}  # address -> changes published while watched

    def publish(self, address: str) -> None:
        """Wake the sessions waiting on ``address``; callable from any thread."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            self._loop.call_soon_threadsafe(self._wake, address.lower())

    def _wake(self, address: str) -> None:
        if address in self._watchers:
            self._versions[address] = self._versions.get(address, 0) + 1
        for waiter in tuple(self._subscribers.get(address, ())):
            waiter.set()

    def version(self, address: str) -> int:
        """How many changes of ``address`` were published while a session watched it: equal
        numbers at two moments mean this process changed nothing in between."""
        return self._versions.get(address.lower(), 0)

    @contextlib.contextmanager
    def watching(self, address: str) -> Iterator[None]:
        """Count the changes of ``address`` (:meth:`version`) while the block runs (a session)."""
        key = address.lower()
        self._watchers[key] = self._watchers.get(key, 0) + 1
        try:
            yield
        finally:
            self._watchers[key] -= 1
            if not self._watchers[key]:
                del self._watchers[key]
                self._versions.pop(key, None)

    @contextlib.contextmanager
    def subscribe(self, address: str) -> Iterator[Event]:
        """An event set when ``address`` changes, for as long as the block runs."""
        key = address.lower()
        waiter = Event.for_asyncio()
        self._subscribers.setdefault(key, set()).add(waiter)
        try:
            yield waiter
        finally:
            waiters = self._subscribers.get(key, set())
            waiters.discard(waiter)
            if not waiters:
                self._subscribers.pop(key, None)


class NotifyingMailStore(MailStore):
    """The mail store, plus: once a delivery's transaction commits, ``on_delivered(address)``
    for every mailbox that got a new message (never before the commit, so a woken session
    always finds the message)."""

    def __init__(
        self, db: Database, blobs: BlobStore, *, on_delivered: Callable[[str], None]
    ) -> None:
        super().__init__(db, blobs)
        self._on_delivered = on_delivered

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
        results = super().deliver_in(
            session, digest, size, headers, recipients, folder=folder, flags=flags, dedupe=dedupe
        )
        fresh = [r.address for r in results if not r.duplicate]
        if fresh:
            self._after_commit(session, fresh)
        return results

    def _after_commit(self, session: Session, addresses: list[str]) -> None:
        pending: set[str] | None = session.info.get(_PENDING)
        if pending is None:  # first delivery of this transaction (group commit batches many)
            pending = session.info[_PENDING] = set()
            event.listen(session, "after_commit", self._committed)
            event.listen(session, "after_rollback", self._rolled_back)
        pending.update(addresses)

    def _committed(self, session: Session) -> None:
        for address in session.info.pop(_PENDING, ()):
            self._on_delivered(address)

    @staticmethod
    def _rolled_back(session: Session) -> None:
        session.info.pop(_PENDING, None)
