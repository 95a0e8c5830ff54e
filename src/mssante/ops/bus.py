"""The change bus: "this mailbox changed", from whoever changed it to whoever waits on it.

One bus per operator process, made with the runtime (never by a listener's start-up), so it
exists whichever listeners are open. Writers publish once their transaction has committed:
the acceptance path (``ops/acceptance.py``) and the folder operations (``Folders(notify=…)``)
through :func:`publish_after_commit`, so a woken reader always finds the change. Readers are
IMAP IDLE sessions (RFC 2177) and the webmail's server-sent events. Publishers run in any
thread (the group-commit writer, ``asyncio.to_thread`` workers); the bus hands the news to the
event loop of its subscribers, which wakes them at once.

Other processes (another node on the same database, the command line): IMAP polls the folders
its sessions wait on (:class:`~mssante.imap.watch.FolderWatch`, every ``imap.poll_interval``),
so their changes show up within that interval.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Iterator

from pymap.concurrent import Event
from sqlalchemy import event
from sqlalchemy.orm import Session

_PENDING = "mssante.bus.pending"  # Session.info key: what to publish once it commits
_LISTENING = "mssante.bus.listening"  # Session.info key: the session's listeners are set


class ChangeBus:
    """In-process publish/subscribe of "this mailbox changed", keyed by address.

    The bus learns its event loop from its first subscriber (subscribers live on the loop;
    publishers may not): before anyone subscribes, a publication has nobody to wake."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subscribers: dict[str, set[Event]] = {}
        self._watchers: dict[str, int] = {}  # address -> sessions open on it
        self._versions: dict[str, int] = {}  # address -> changes published while watched

    def publish(self, address: str) -> None:
        """Wake the sessions waiting on ``address``; callable from any thread."""
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(self._wake, address.lower())

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
        self._bind()
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
        self._bind()
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

    def _bind(self) -> None:
        self._loop = asyncio.get_running_loop()


def publish_after_commit(
    session: Session, addresses: Iterable[str], publish: Callable[[str], None]
) -> None:
    """Call ``publish(address)`` for each of ``addresses`` once ``session``'s transaction has
    committed (never before, never after a rollback). A group commit batches many writers in
    one transaction: each adds to the same pending set, so each call happens once."""
    _pending(session).update((publish, address) for address in addresses)


def call_after_commit(session: Session, action: Callable[[], None]) -> None:
    """Call ``action()`` once ``session``'s transaction has committed (once however many
    writers of the transaction asked for it): waking the queue, say."""
    _pending(session).add((action, None))


def _pending(session: Session) -> set[tuple[Callable[..., None], str | None]]:
    if not session.info.get(_LISTENING):  # once per session object, however many commits
        session.info[_LISTENING] = True
        event.listen(session, "after_commit", _committed)
        event.listen(session, "after_rollback", _rolled_back)
    pending: set[tuple[Callable[..., None], str | None]] = session.info.setdefault(_PENDING, set())
    return pending


def _committed(session: Session) -> None:
    for action, address in session.info.pop(_PENDING, set()):
        if address is None:
            action()
        else:
            action(address)


def _rolled_back(session: Session) -> None:
    session.info.pop(_PENDING, None)


class Signal:
    """ "There is work": set from any thread, awaited by one worker on its event loop (the
    outbound queue: the acceptance path sets it once remote recipients are committed)."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event = asyncio.Event()

    def set(self) -> None:
        loop = self._loop
        if loop is None or _running_loop() is loop:
            self._event.set()
        else:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(self._event.set)

    async def wait(self, timeout: float) -> bool:
        """Wait until set or ``timeout`` seconds; whether it was set (and clear it)."""
        self._loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            return False
        self._event.clear()
        return True


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
