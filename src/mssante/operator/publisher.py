"""The operator's directory publisher: the worker that sends the outbox to the authority
(docs/publication.md).

Each round, in named stages: **claim** the due heads of line (directory/outbox.py) → **send**
each as ``PATCH <authority_url>/<Practitioner|Organization>?identifier=…`` with a FHIR
``Parameters`` body, over mutual TLS (this node's certificate, ``tls.certificate``, as client
certificate, as between MTAs, BRIEF §2; the authority's certificate checked against the PKI's
anchors and its host name) → **judge** the answer → **settle** the row:

============================================  =============================================
2xx                                           sent (audited ``directory.published``)
no answer, TLS failure, 502, 503, 504         the authority is away: the row is tried again
                                              and the round stops, paused by the retry
                                              schedule (no hammering while it is down)
408, 409, 425, 429, 500, other 5xx and 3xx    tried again later, by the retry schedule
any other 4xx                                 refused for good: recorded, audited
                                              (``directory.publication_refused``), never
                                              retried; the address's next changes go on
============================================  =============================================

A change is never given up while the authority cannot be reached: ``publication.retry_schedule``
spaces the attempts (its last delay repeats).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import httpx

from mssante.config import Settings
from mssante.directory.fhir import STRUCTURE_SYSTEM
from mssante.directory.fhirpatch import FHIR_JSON
from mssante.directory.outbox import OutboxItem, Settlement, claim_due, release, settle
from mssante.errors import ConfigError
from mssante.logging import get_logger
from mssante.store.db import Database
from mssante.store.models import OutboxStatus

_RETRY_LATER = frozenset({408, 409, 425, 429})
_AWAY = frozenset({502, 503, 504})
MAX_ANSWER_BYTES = 65536  # of an answer's body kept to read its OperationOutcome


class Verdict(StrEnum):
    SENT = "sent"
    RETRY = "retry"  # this change, later
    AWAY = "away"  # the authority cannot be reached: every change, later
    REFUSED = "refused"  # for good


@dataclass(frozen=True)
class Answer:
    verdict: Verdict
    status: int | None  # HTTP status; None when there was no answer
    message: str


def judge(status: int, body: bytes) -> Answer:
    """The verdict on an HTTP answer (the table of the module's docstring)."""
    text = _outcome_text(body)
    if 200 <= status < 300:
        return Answer(Verdict.SENT, status, text or "accepted")
    if status in _AWAY:
        return Answer(Verdict.AWAY, status, text or f"HTTP {status}")
    if 400 <= status < 500 and status not in _RETRY_LATER:
        return Answer(Verdict.REFUSED, status, text or f"HTTP {status}")
    return Answer(Verdict.RETRY, status, text or f"HTTP {status}")


def _outcome_text(body: bytes) -> str:
    """The first issue's text of an OperationOutcome (openapi-balmss.yaml), if it is one."""
    try:
        outcome = json.loads(body.decode("utf-8")) if body else None
    except (UnicodeDecodeError, ValueError, RecursionError):
        return ""
    if not isinstance(outcome, dict) or outcome.get("resourceType") != "OperationOutcome":
        return ""
    issues = outcome.get("issue")
    issue = issues[0] if isinstance(issues, list) and issues else {}
    details = issue.get("details") if isinstance(issue, dict) else None
    text = details.get("text") if isinstance(details, dict) else None
    return text[:500] if isinstance(text, str) else ""


@dataclass
class RoundReport:
    """One round: how many changes went which way, and how long to pause if the authority
    was away."""

    sent: int = 0
    retried: int = 0
    refused: int = 0
    claimed: int = 0
    pause: float | None = None
    answers: list[Answer] = field(default_factory=list)


def client_context(settings: Settings) -> ssl.SSLContext:
    """TLS 1.2+, the authority checked against the PKI's anchors (and its host name), this
    node's certificate and chain presented as client certificate."""
    if not settings.publication.authority_url.lower().startswith("https://"):
        raise ConfigError("publication.authority_url must be an https URL")
    if not settings.tls.certificate or not settings.tls.key:
        raise ConfigError("tls.certificate and tls.key must be set to publish to the directory")
    if not settings.pki.trust_anchors:
        raise ConfigError("pki.trust_anchors must be set to check the authority's certificate")
    ctx = ssl.create_default_context(purpose=ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_verify_locations(cafile=str(settings.pki.trust_anchors[0]))
        for path in [*settings.pki.trust_anchors[1:], *settings.pki.intermediates]:
            ctx.load_verify_locations(cafile=str(path))
        ctx.load_cert_chain(settings.tls.certificate, settings.tls.key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            "cannot load the TLS certificate, key or trust anchors", detail=str(exc)
        ) from None
    return ctx


class DirectoryPublisher:
    """Sends the outbox; one per operator process (several processes share it safely)."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.publication = settings.publication
        self.db = db
        self.clock = clock
        self.worker = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"[:100]
        self.log = get_logger("mssante.directory.publisher")

    # -- the loop --------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Send until ``stop`` is set; never raises on a failed attempt."""
        if not self.publication.authority_url:
            self.log.info("directory publication off: publication.authority_url is not set")
            return
        try:
            client = self.http_client()
        except ConfigError as exc:
            self.log.error("directory publication off", error=exc.public, detail=exc.detail)
            return
        failures = 0
        async with client:
            while not stop.is_set():
                report = await self._round(client)
                failures = failures + 1 if report.pause is not None else 0
                await _wait(stop, self._nap(report, failures))

    def _nap(self, report: RoundReport, failures: int) -> float:
        if report.pause is not None:
            return self.delay(failures)
        if report.claimed >= self.publication.batch_size or report.sent + report.refused:
            return 0.0  # more work may be due: a full batch, or the next changes of an address
        return self.publication.poll_seconds

    async def _round(self, client: httpx.AsyncClient) -> RoundReport:
        try:
            return await self.send_due_once(client)
        except Exception as exc:  # a database hiccup: try again at the next round
            self.log.warning("directory publication round failed", error=str(exc))
            return RoundReport(pause=0.0)

    def http_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            verify=client_context(self.settings),
            timeout=self.publication.timeout,
            follow_redirects=False,
        )

    def delay(self, attempts: int) -> float:
        """Seconds before attempt ``attempts + 1`` (the schedule's last delay repeats)."""
        schedule = self.publication.retry_schedule
        return float(schedule[min(max(attempts, 1), len(schedule)) - 1])

    # -- one round -------------------------------------------------------------------------
    async def send_due_once(self, client: httpx.AsyncClient | None = None) -> RoundReport:
        """Claim → send → judge → settle, for the changes due now (tests and tools call it)."""
        if client is None:
            async with self.http_client() as own:
                return await self.send_due_once(own)
        now = self.clock()
        lease = timedelta(seconds=self.publication.lease_seconds)
        items = await asyncio.to_thread(
            claim_due, self.db, worker=self.worker, now=now, limit=self.publication.batch_size,
            lease=lease,
        )  # fmt: skip
        report = RoundReport(claimed=len(items))
        for index, item in enumerate(items):
            answer = await self.send(client, item)
            report.answers.append(answer)
            await self._settle(item, answer, report)
            if answer.verdict is Verdict.AWAY:
                await self._release(items[index + 1 :])
                break
        return report

    async def send(self, client: httpx.AsyncClient, item: OutboxItem) -> Answer:
        identifier = item.identifier or self._own_structure()
        if not identifier:
            return Answer(
                Verdict.REFUSED, None, "no structure id: set operator.structure_id (IdNatStruct)"
            )
        url = f"{self.publication.authority_url.rstrip('/')}/{item.resource}"
        try:
            async with client.stream(
                "PATCH",
                url,
                params={"identifier": identifier},
                content=item.body.encode("utf-8"),
                headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON},
            ) as response:
                body = await _bounded(response)
        except (httpx.HTTPError, ssl.SSLError, OSError) as exc:
            return Answer(Verdict.AWAY, None, f"the authority cannot be reached: {_why(exc)}")
        return judge(response.status_code, body)

    def _own_structure(self) -> str:
        own = self.settings.operator.structure_id.strip()
        return f"{STRUCTURE_SYSTEM}|{own}" if own else ""

    async def _settle(self, item: OutboxItem, answer: Answer, report: RoundReport) -> None:
        now = self.clock()
        status, retry_at = OutboxStatus.PENDING, None
        if answer.verdict is Verdict.SENT:
            status, report.sent = OutboxStatus.SENT, report.sent + 1
        elif answer.verdict is Verdict.REFUSED:
            status, report.refused = OutboxStatus.FAILED, report.refused + 1
            self.log.warning(
                "directory publication refused", address=item.address, status=answer.status,
                reason=answer.message,
            )  # fmt: skip
        else:
            pause = self.delay(item.attempts + 1)
            retry_at, report.retried = now + timedelta(seconds=pause), report.retried + 1
            if answer.verdict is Verdict.AWAY:
                report.pause = pause
        outcome = Settlement(item, status, answer.status, answer.message, retry_at)
        await asyncio.to_thread(settle, self.db, outcome, worker=self.worker, now=now)

    async def _release(self, items: list[OutboxItem]) -> None:
        """Claimed but not tried (the authority went away): back to the queue, untouched."""
        if items:
            await asyncio.to_thread(release, self.db, [i.id for i in items], self.worker)


async def _bounded(response: httpx.Response) -> bytes:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > MAX_ANSWER_BYTES:
            break
    return bytes(body[:MAX_ANSWER_BYTES])


def _why(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:300]


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    if seconds <= 0:
        await asyncio.sleep(0)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
