"""Keeping the operator's copy of the national directory current (docs/directory.md,
"Operators' copy").

The operator's users search the directory on their own operator (``/directory/search`` on its
HTTPS listener), so that their type-ahead never waits on the authority. This worker downloads
the authority's extraction at start, then every ``directory.refresh_seconds`` (a day), and
imports it with the authority's own importer (idempotent: added, changed and removed lines).
The download is conditional (ETag): an unchanged directory costs one request. A failure is
logged and audited (``directory.fetch_failed``), the copy in force is kept, and the worker
tries again after ``directory.retry_seconds``.

The import is synchronous and CPU-bound: it runs in a worker thread, one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib

from mssante.directory.fetch import FetchOutcome, fetch_and_import
from mssante.errors import MssanteError
from mssante.logging import get_logger
from mssante.runtime import Node

ACTOR = "directory-sync"


class DirectorySync:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.settings = node.settings.directory
        self.log = get_logger("mssante.directory.sync")
        self.rounds = 0  # rounds done (for tests and diagnostics)

    @property
    def enabled(self) -> bool:
        return bool(self.settings.extraction_url)

    async def run(self, stop: asyncio.Event) -> None:
        """A round now, then on schedule, until ``stop`` is set. Never raises on a failed
        round."""
        if not self.enabled:
            self.log.info("directory copy off: directory.extraction_url is not set")
            return
        while not stop.is_set():
            outcome = await self.refresh_once()
            wait = self.settings.refresh_seconds if outcome else self.settings.retry_seconds
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=wait)

    async def refresh_once(self) -> FetchOutcome | None:
        """One round: the outcome, or None when it failed (logged; audited by the fetch)."""
        try:
            outcome = await asyncio.to_thread(fetch_and_import, self.node, actor=ACTOR)
        except Exception as exc:  # refused, or the database away, the disk full: retry later
            error = exc.public if isinstance(exc, MssanteError) else type(exc).__name__
            self.log.warning("directory copy not refreshed; keeping the one in force", error=error)
            return None
        finally:
            self.rounds += 1
        if outcome.unchanged:
            self.log.info("directory copy unchanged")
        elif outcome.summary is not None:
            summary = outcome.summary
            self.log.info(
                "directory copy refreshed",
                lines=summary.lines,
                added=summary.added,
                updated=summary.updated,
                removed=summary.removed,
            )
        return outcome
