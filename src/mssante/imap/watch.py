"""One database poll per process for every folder an IDLE session waits on.

Changes made in this process reach the waiting sessions through the :class:`ChangeBus` at
once. Changes made by another process (another node on the same database, the command line)
are only seen by polling: each waiting folder's UIDVALIDITY, UIDNEXT and message count
(:class:`~mssante.ops.folders.Probe`), every ``imap.poll_interval``.

Polling per session made 2,000 idle sessions cost a whole core (2,000 probes a second, each a
thread hop and three queries: ``bench/imap``). Here one task polls every folder that has at
least one waiting session, in one query (:meth:`Folders.probe_many`), and wakes the sessions
whose last listing no longer matches. The task runs only while someone waits.

Authorization: a session registers the folder it selected with its own rights (the probe it
holds came from an authorized operation); the poll reads counters only, and a woken session
relists the folder with its own caller, which checks the rights again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field

from pymap.concurrent import Event

from mssante.logging import get_logger
from mssante.ops.folders import Probe

ProbeMany = Callable[[Collection[int]], dict[int, Probe]]


@dataclass(eq=False)
class _Waiter:
    seen: Probe  # what the session's last listing saw
    event: Event = field(default_factory=Event.for_asyncio)


class FolderWatch:
    """Wakes the sessions waiting on a folder when a poll finds it changed."""

    def __init__(self, probe_many: ProbeMany, interval: float) -> None:
        self._probe_many = probe_many
        self._interval = interval
        self._waiters: dict[int, set[_Waiter]] = {}  # folder id -> sessions waiting on it
        self._task: asyncio.Task[None] | None = None
        self.polls = 0  # polls made since start (for tests and diagnostics)
        self._log = get_logger("mssante.imap.watch")

    @property
    def interval(self) -> float:
        """Seconds between polls: how late another process's change may be seen."""
        return self._interval

    @contextlib.contextmanager
    def waiting(self, seen: Probe) -> Iterator[Event]:
        """An event set when a poll finds the folder of ``seen`` different from ``seen``
        (new or expunged messages, a new UIDVALIDITY, the folder gone)."""
        waiter = _Waiter(seen)
        self._waiters.setdefault(seen.folder_id, set()).add(waiter)
        self._start()
        try:
            yield waiter.event
        finally:
            waiters = self._waiters.get(seen.folder_id, set())
            waiters.discard(waiter)
            if not waiters:
                self._waiters.pop(seen.folder_id, None)

    def _start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="imap-watch")

    async def _run(self) -> None:
        while self._waiters:
            await asyncio.sleep(self._interval)
            folder_ids = list(self._waiters)
            if not folder_ids:
                break
            try:
                probes = await asyncio.to_thread(self._probe_many, folder_ids)
            except Exception as exc:  # a database outage: keep waiting, poll again later
                self._log.warning("imap.watch.poll_failed", error=type(exc).__name__)
                continue
            self.polls += 1
            self._wake(folder_ids, probes)

    def _wake(self, folder_ids: list[int], probes: dict[int, Probe]) -> None:
        for folder_id in folder_ids:
            now = probes.get(folder_id)  # None: the folder is gone
            for waiter in tuple(self._waiters.get(folder_id, ())):
                if waiter.seen != now:
                    waiter.event.set()

    async def close(self) -> None:
        """Stop polling (the listeners are closing)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
