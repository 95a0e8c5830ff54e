"""Delivery to other operators: the workers that empty the outbound queue (docs/queue.md).

One *domain job* at a time per domain, at most ``smtp.delivery_workers`` jobs at once. A job:

1. **trust space**: the domain must be on the whitelist, else its recipients fail at once
   ("domain not in the MSSanté trust space"; no whitelist loaded yet: they wait);
2. **route**: :mod:`mssante.queue.routes` (static table, else DNS MX, RFC 5321 §5.1);
3. **session**: connect, EHLO, STARTTLS required (RFC 3207; never in clear), TLS 1.2+, our
   certificate presented, the peer's certificate and DN checked
   (:func:`mssante.queue.client_tls.check_peer`) before a single MAIL FROM is sent; a refused
   peer is audited (``queue.peer_refused``) and the next route is tried;
4. **transactions**: every due message of the domain in turn over that one connection, then
   whatever became due meanwhile, for as long as some is (connection reuse: a TLS handshake
   with certificate checks costs far more than a transaction); per-recipient replies;
5. **bookkeeping**: after each message, its recipients' outcomes, their audit entries and any
   DSN or delay notice commit in one transaction (:func:`mssante.queue.store.apply`).

Database and blob work runs in threads (``asyncio.to_thread``), so that the event loop only
ever waits on sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import secrets
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import make_msgid
from typing import Protocol

import aiosmtplib
from sqlalchemy.orm import Session

from mssante.audit.events import SYSTEM_ACTOR, AuditEvent, AuditRecord, AuditSink
from mssante.audit.log import append
from mssante.config import Settings
from mssante.errors import NotFoundError
from mssante.logging import get_logger
from mssante.mail.dsn import (
    Action,
    DeliveryReport,
    RecipientStatus,
    build_dsn,
    status_code,
    wants_report,
)
from mssante.ops import refusals
from mssante.ops.bus import Signal
from mssante.ops.mailstore import Headers
from mssante.ops.refusals import Refusal
from mssante.pki.crl import CrlCache
from mssante.pki.truststore import TrustStore
from mssante.queue.client_tls import check_peer, client_context, peer_certificate, tls_version
from mssante.queue.routes import NoRoute, Route, RouteResolver, is_ip_literal
from mssante.queue.store import (
    Claim,
    DomainBatch,
    Queue,
    QueuedMessage,
    Reply,
    RetryPolicy,
    Settled,
    apply,
    claim_due_in,
    domain_of,
    enqueue,
    utc_now,
)
from mssante.store.blobs import BlobStore
from mssante.store.db import Database
from mssante.store.group_commit import GroupCommitter
from mssante.store.models import QueueStatus
from mssante.trust.model import Whitelist

Clock = Callable[[], datetime]

CLAIM_BATCH = 20  # recipients claimed at a time by one connection (small: spreads the work)
POLL_SECONDS = 1.0  # the queue is looked at least this often without notify()
REUSE_SECONDS = 300.0  # a connection carries new work for at most this long
LEASE = timedelta(hours=1)  # in flight longer than this: its worker is taken for dead
RECOVER_EVERY = timedelta(minutes=5)
SHUTDOWN_GRACE = 10.0  # seconds running jobs get to finish when the service stops

# This MTA's own decisions, worded as SMTP replies (RFC 3463 enhanced codes).
NO_WHITELIST = Reply.of(Refusal.of(refusals.NO_WHITELIST))
CONTENT_LOST = Reply(554, "5.3.0 the queued message's content is missing from the store")
LOCAL_ERROR = Reply(451, "4.3.0 local error during delivery, will retry")
NO_STARTTLS = "the peer does not offer STARTTLS; mail is never sent in clear"


@dataclass
class RoundReport:
    """What one :meth:`DeliveryService.deliver_due_once` did."""

    delivered: int = 0
    deferred: int = 0
    failed: int = 0
    connections: int = 0
    notices: int = 0

    def add(self, settled: Sequence[Settled]) -> None:
        for outcome in settled:
            if outcome.status is QueueStatus.DELIVERED:
                self.delivered += 1
            elif outcome.status is QueueStatus.DEFERRED:
                self.deferred += 1
            else:
                self.failed += 1


@dataclass
class _Job:
    """One domain's delivery: its clock, what it reports, and the claims it still holds."""

    domain: str
    clock: Clock
    report: RoundReport
    held: set[int] = field(default_factory=set)


@dataclass
class _Peer:
    """An open connection whose peer passed the checks."""

    smtp: aiosmtplib.SMTP
    route: Route
    dn: str
    opened: float = field(default_factory=time.monotonic)
    alive: bool = True

    def reusable(self) -> bool:
        return self.alive and time.monotonic() - self.opened < REUSE_SECONDS

    async def close(self) -> None:
        try:
            await self.smtp.quit()
        except (aiosmtplib.SMTPException, OSError):
            self.smtp.close()


class DeliveryService:
    """The outbound workers of one process. ``run`` until ``stop`` is set; ``notify`` after
    enqueueing so that a new message leaves at once."""

    def __init__(  # noqa: PLR0917 - the node's parts, in the order the wiring holds them
        self,
        settings: Settings,
        db: Database,
        blobs: BlobStore,
        reports: ReportDelivery,
        whitelist: Callable[[], Whitelist | None],
        trust: TrustStore,
        crls: CrlCache | None,
        audit: AuditSink,
        *,
        clock: Clock = utc_now,
        committer: GroupCommitter | None = None,
        routes: RouteResolver | None = None,
        worker_id: str | None = None,
        wakeup: Signal | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.queue = Queue(db, RetryPolicy.from_settings(settings.smtp))
        self.worker_id = worker_id or _worker_id()
        self._smtp = settings.smtp
        self._blobs = blobs
        self._whitelist = whitelist
        self._trust = trust
        self._crls = crls
        self._audit = audit
        self._clock = clock
        # With a committer, claims and outcomes share the process's group commit instead of
        # competing with it for SQLite's single writer lock.
        self._committer = committer
        self._routes = routes or RouteResolver(settings.smtp.routes)
        self._tls = client_context(settings)
        self._notifier = Notifier(settings, blobs, reports, self.queue.policy)
        self._slots = asyncio.Semaphore(settings.smtp.delivery_workers)
        self._wakeup = wakeup or Signal()
        self._active: dict[str, set[asyncio.Task[None]]] = {}
        self._log = get_logger("mssante.queue.delivery")

    # -- entry points ----------------------------------------------------------------------
    def notify(self) -> None:
        """Something was queued: look at the queue now. Safe from any thread."""
        self._wakeup.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set. At start, whatever a crashed process left in flight
        is queued again; every few minutes, so is what a dead worker elsewhere holds."""
        recovered = await asyncio.to_thread(self.queue.recover, self._clock())
        if recovered:
            self._log.warning("queue.recovered", recipients=recovered)
        last_recovery = self._clock()
        try:
            while not stop.is_set():
                await self._dispatch()
                last_recovery = await self._recover_stale(last_recovery)
                await self._nap(stop)
        finally:
            await self._shutdown()

    async def deliver_due_once(self, now: datetime | None = None) -> RoundReport:
        """One pass over every domain with due work, waiting for all of it (tests, tools).
        ``now`` fixes the time the queue is read and written at."""
        moment = now or self._clock()
        clock = (lambda: moment) if now is not None else self._clock
        report = RoundReport()
        domains = await asyncio.to_thread(self.queue.due_domains, now=moment, limit=100_000)
        await asyncio.gather(*(self._domain_job(_Job(d, clock, report)) for d in domains))
        return report

    # -- the run loop ----------------------------------------------------------------------
    async def _dispatch(self) -> None:
        """Start one more connection for each domain with due work, up to
        ``connections_per_domain`` per domain and ``delivery_workers`` in all: a busy peer
        ramps up to several parallel connections as work keeps arriving, a quiet one gets one."""
        free = self._smtp.delivery_workers - sum(len(t) for t in self._active.values())
        if free <= 0:
            return
        full = {
            d
            for d, tasks in self._active.items()
            if len(tasks) >= self._smtp.connections_per_domain
        }
        domains = await asyncio.to_thread(
            self.queue.due_domains, now=self._clock(), limit=free, exclude=full
        )
        for domain in domains:
            task = asyncio.create_task(self._domain_job(_Job(domain, self._clock, RoundReport())))
            self._active.setdefault(domain, set()).add(task)
            task.add_done_callback(functools.partial(self._job_done, domain))

    def _job_done(self, domain: str, task: asyncio.Task[None]) -> None:
        tasks = self._active.get(domain, set())
        tasks.discard(task)
        if not tasks:
            self._active.pop(domain, None)
        if not task.cancelled() and task.exception() is not None:
            self._log.error("queue.job_crashed", domain=domain, error=repr(task.exception()))
        self._wakeup.set()

    async def _nap(self, stop: asyncio.Event) -> None:
        waits = {
            asyncio.create_task(stop.wait()),
            asyncio.create_task(self._wakeup.wait(POLL_SECONDS)),
        }
        _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()

    async def _recover_stale(self, last: datetime) -> datetime:
        now = self._clock()
        if now - last < RECOVER_EVERY:
            return last
        count = await asyncio.to_thread(self.queue.recover, now, lease=LEASE)
        if count:
            self._log.warning("queue.recovered_stale", recipients=count)
        return now

    async def _shutdown(self) -> None:
        """Let running jobs finish for a while, cancel the rest, give back what we hold."""
        if self._active:
            running = [t for tasks in self._active.values() for t in tasks]
            _, pending = await asyncio.wait(running, timeout=SHUTDOWN_GRACE)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await asyncio.to_thread(self.queue.recover, self._clock(), worker_id=self.worker_id)

    # -- one domain ------------------------------------------------------------------------
    async def _domain_job(self, job: _Job) -> None:
        async with self._slots:
            batch = await self._claim(job)
            if batch is None:
                return
            try:
                await self._deliver_domain(job, batch)
            except Exception as exc:  # a bug must not leave recipients in flight for an hour
                self._log.exception("queue.domain_failed", domain=job.domain, error=repr(exc))
                await self._release(job)

    async def _claim(self, job: _Job) -> DomainBatch | None:
        claim = functools.partial(
            claim_due_in,
            db=self.db,
            worker_id=self.worker_id,
            limit=CLAIM_BATCH,
            now=job.clock(),
            domains=[job.domain],
        )
        if self._committer is not None:
            batches = await self._committer.run(claim)
        else:
            batches = await asyncio.to_thread(self._claim_alone, claim)
        if not batches:
            return None
        job.held.update(claim.recipient_id for claim in batches[0].claims)
        return batches[0]

    async def _deliver_domain(self, job: _Job, batch: DomainBatch) -> None:
        whitelist = await self._admitted(job, batch)
        if whitelist is None:
            return
        routes = await self._routes.resolve(job.domain)
        if isinstance(routes, NoRoute):
            await self._settle(job, batch.claims, _no_route_reply(routes))
            return
        peer = await self._open(job.domain, routes, whitelist, job.clock())
        if isinstance(peer, Reply):
            await self._settle(job, batch.claims, peer)
            return
        job.report.connections += 1
        await self._carry(job, peer, batch)

    async def _admitted(self, job: _Job, batch: DomainBatch) -> Whitelist | None:
        """BRIEF §2: mail leaves only for whitelisted domains. The whitelist in force, or None
        once the batch is settled (no list yet: wait; domain not listed: fail)."""
        whitelist = self._whitelist()
        if whitelist is None:
            await self._settle(job, batch.claims, NO_WHITELIST)
            return None
        if not whitelist.is_listed(job.domain).trusted:
            outside = Refusal.of(refusals.DOMAIN_OUTSIDE_TRUST_SPACE, domain=job.domain)
            await self._settle(job, batch.claims, Reply.of(outside))
            return None
        return whitelist

    async def _carry(self, job: _Job, peer: _Peer, first: DomainBatch) -> None:
        """Every due message of the domain over ``peer``'s one connection, then what became
        due meanwhile, for as long as the connection lasts."""
        batch: DomainBatch | None = first
        try:
            while batch is not None:
                await self._send_batch(job, peer, batch)
                batch = await self._claim(job) if peer.reusable() else None
        finally:
            await peer.close()

    async def _release(self, job: _Job) -> None:
        """After an unexpected error: what the job still holds waits for the first retry."""
        if not job.held:
            return
        now = job.clock()
        retry_at = self.queue.policy.next_attempt(1, now, now)
        with contextlib.suppress(Exception):
            await asyncio.to_thread(
                self.queue.release, sorted(job.held), now=now, retry_at=retry_at, reply=LOCAL_ERROR
            )

    # -- opening a verified session --------------------------------------------------------
    async def _open(
        self, domain: str, routes: Sequence[Route], whitelist: Whitelist, now: datetime
    ) -> _Peer | Reply:
        """The first route, in order, that gives a verified session (RFC 5321 §5.1: try the
        mail hosts in preference order); else the last route's reason."""
        last = Reply(451, "4.4.4 no route to the domain's mail hosts")
        for route in routes:
            opened = await self._connect(domain, route, whitelist, now)
            if isinstance(opened, _Peer):
                return opened
            last = opened
        return last

    async def _connect(
        self, domain: str, route: Route, whitelist: Whitelist, now: datetime
    ) -> _Peer | Reply:
        smtp = aiosmtplib.SMTP(
            hostname=route.address,
            port=route.port,
            local_hostname=self.settings.smtp_hostname(),
            timeout=self._smtp.command_timeout,
            start_tls=False,
            tls_context=self._tls,
        )
        try:
            await smtp.connect(timeout=self._smtp.connect_timeout)
            outcome = await self._secure(smtp, domain, route, whitelist, now)
        except ssl.SSLCertVerificationError as exc:
            smtp.close()
            reason = f"peer certificate refused during the TLS handshake: {exc.verify_message}"
            await self._peer_refused(domain, route, "", reason)
            return Reply(451, f"4.7.5 {reason}", route.host)
        except (aiosmtplib.SMTPException, OSError) as exc:  # ssl.SSLError is an OSError
            smtp.close()
            return Reply(451, f"4.4.1 no session with {route}: {_why(exc)}", route.host)
        if isinstance(outcome, Reply):
            await _Peer(smtp, route, "").close()
            return outcome
        return _Peer(smtp, route, outcome)

    async def _secure(
        self,
        smtp: aiosmtplib.SMTP,
        domain: str,
        route: Route,
        whitelist: Whitelist,
        now: datetime,
    ) -> str | Reply:
        """STARTTLS, then the peer's checks. Returns the peer's DN, or why not to send."""
        await smtp.ehlo()
        if not smtp.supports_extension("starttls"):
            # RFC 3207 §4: the client decides what an unprotected session may carry: nothing.
            return Reply(451, f"4.7.10 {NO_STARTTLS}", route.host)
        server_name = None if is_ip_literal(route.host) else route.host
        await smtp.starttls(
            server_hostname=server_name,
            tls_context=self._tls,
            timeout=self._smtp.connect_timeout,
        )
        check = check_peer(
            peer_certificate(smtp),
            domain=domain,
            host=route.host,
            whitelist=whitelist,
            trust=self._trust,
            crls=self._crls,
            at=now,
        )
        if not check.ok:
            await self._peer_refused(domain, route, check.dn, check.reason, check.detail)
            return Reply(451, f"4.7.5 {check.reason}", route.host)
        await smtp.ehlo()  # RFC 3207 §4.2: forget what was said in clear, ask again
        self._log.info(
            "queue.session_opened",
            domain=domain,
            route=str(route),
            dn=check.dn,
            tls=tls_version(smtp),
        )
        return check.dn

    async def _peer_refused(
        self, domain: str, route: Route, dn: str, reason: str, detail: str = ""
    ) -> None:
        self._log.warning(
            "queue.peer_refused", domain=domain, route=str(route), dn=dn, reason=reason
        )
        record = AuditRecord(
            AuditEvent.QUEUE_PEER_REFUSED,
            SYSTEM_ACTOR,
            domain,
            {
                "host": route.host,
                "address": route.address,
                "port": route.port,
                "dn": dn,
                "reason": reason,
                "detail": detail,
            },
        )
        await asyncio.to_thread(self._audit.record, record)

    # -- transactions ----------------------------------------------------------------------
    async def _send_batch(self, job: _Job, peer: _Peer, batch: DomainBatch) -> None:
        """Every message of the batch, then one transaction for all their outcomes. A crash
        before that commit sends the batch again; the receiver drops what it already holds
        (same Message-ID), so this costs a resend, never a duplicate in a mailbox."""
        replies: list[tuple[Claim, Reply]] = []
        for message, claims in batch.by_message():
            if not peer.alive:
                lost = Reply(451, f"4.4.2 connection to {peer.route.host} lost", peer.route.host)
                replies += [(claim, lost) for claim in claims]
                continue
            replies += await self._transaction(peer, message, claims)
        await self._settle_each(job, replies)

    async def _transaction(
        self, peer: _Peer, message: QueuedMessage, claims: tuple[Claim, ...]
    ) -> list[tuple[Claim, Reply]]:
        raw = await asyncio.to_thread(self._read, message)
        if raw is None:
            return [(claim, CONTENT_LOST) for claim in claims]
        try:
            return await self._smtp_transaction(peer, message, claims, raw)
        except (aiosmtplib.SMTPException, OSError) as exc:
            # Disconnected or timed out: whether the peer kept the message is unknown, so it
            # is sent again later (the receiving side drops a copy it already stored).
            peer.alive = False
            host = peer.route.host
            lost = Reply(451, f"4.4.2 connection to {host} lost: {_why(exc)}", host)
            return [(claim, lost) for claim in claims]

    async def _smtp_transaction(
        self, peer: _Peer, message: QueuedMessage, claims: tuple[Claim, ...], raw: bytes
    ) -> list[tuple[Claim, Reply]]:
        """MAIL, one RCPT per recipient, DATA (RFC 5321 §3.3). Each recipient gets the reply
        that decided its fate; the status is written only after the peer's reply to DATA."""
        smtp, host = peer.smtp, peer.route.host
        try:
            await smtp.mail(message.sender, options=_mail_options(smtp, raw))
        except aiosmtplib.SMTPResponseException as exc:
            await _reset(smtp)
            return [(claim, _reply(exc, host)) for claim in claims]
        except ValueError:  # an address that cannot go on a command line
            return [(claim, Reply(550, "5.1.7 invalid sender address")) for claim in claims]
        results, accepted = await self._recipients(smtp, claims, host)
        if not accepted:
            await _reset(smtp)
            return results
        try:
            response = await smtp.data(raw, timeout=self._smtp.data_timeout)
        except aiosmtplib.SMTPResponseException as exc:
            await _reset(smtp)
            return results + [(claim, _reply(exc, host)) for claim in accepted]
        return results + [(c, Reply(response.code, response.message, host)) for c in accepted]

    async def _recipients(
        self, smtp: aiosmtplib.SMTP, claims: tuple[Claim, ...], host: str
    ) -> tuple[list[tuple[Claim, Reply]], list[Claim]]:
        """RCPT for each recipient: the peer may accept some and refuse others."""
        refused: list[tuple[Claim, Reply]] = []
        accepted: list[Claim] = []
        for claim in claims:
            try:
                await smtp.rcpt(claim.address)
            except aiosmtplib.SMTPResponseException as exc:
                refused.append((claim, _reply(exc, host)))
            except ValueError:
                refused.append((claim, Reply(550, "5.1.3 invalid recipient address")))
            else:
                accepted.append(claim)
        return refused, accepted

    def _read(self, message: QueuedMessage) -> bytes | None:
        try:
            return self._blobs.get(message.blob_sha256)
        except NotFoundError:
            self._log.error("queue.content_missing", queue_id=message.id)
            return None

    # -- bookkeeping -----------------------------------------------------------------------
    async def _settle(self, job: _Job, claims: Sequence[Claim], reply: Reply) -> None:
        await self._settle_each(job, [(claim, reply) for claim in claims])

    async def _settle_each(self, job: _Job, replies: Sequence[tuple[Claim, Reply]]) -> None:
        now = job.clock()
        settled = [self.queue.settle(claim, reply, now) for claim, reply in replies]
        notices = await asyncio.to_thread(self._notifier.prepare, settled, now)
        if self._committer is not None:
            await self._committer.run(
                functools.partial(self._commit_in, settled=settled, notices=notices, now=now)
            )
        else:
            await asyncio.to_thread(self._commit, settled, notices, now)
        job.held.difference_update(outcome.claim.recipient_id for outcome in settled)
        job.report.add(settled)
        job.report.notices += len(notices)
        for outcome in settled:
            self._log.info(
                f"queue.{outcome.status.value}",
                queue_id=outcome.claim.message.id,
                recipient=outcome.claim.address,
                reply=outcome.reply.line(),
            )

    def _claim_alone(self, claim: Callable[[Session], list[DomainBatch]]) -> list[DomainBatch]:
        with self.db.session() as session:
            return claim(session)

    def _commit(self, settled: Sequence[Settled], notices: Sequence[Notice], now: datetime) -> None:
        """Outcomes, audit entries and notifications: one transaction."""
        with self.db.session() as session:
            self._commit_in(session, settled=settled, notices=notices, now=now)

    def _commit_in(
        self,
        session: Session,
        *,
        settled: Sequence[Settled],
        notices: Sequence[Notice],
        now: datetime,
    ) -> None:
        apply(session, settled, now)
        for notice in notices:
            self._notifier.dispatch(session, notice, now)


# -- notifications (DSN, delay notices) ------------------------------------------------------


@dataclass(frozen=True)
class Notice:
    """A DSN written to the blob store, waiting to be delivered with the outcomes."""

    message: QueuedMessage
    action: Action
    recipients: tuple[str, ...]
    digest: str
    size: int
    headers: Headers


class ReportDelivery(Protocol):
    """Where a DSN for a local sender goes: the acceptance path's report door
    (:meth:`mssante.ops.acceptance.Acceptance.deliver_report_in`), inside the caller's
    transaction; False when the sender has no open mailbox here."""

    def deliver_report_in(
        self, session: Session, digest: str, size: int, headers: Headers, recipient: str
    ) -> bool: ...


class Notifier:
    """Builds DSNs (RFC 3464) and hands them to the sender: into a local mailbox, or into the
    queue with an empty envelope sender (RFC 3461 §6.2) when the sender is elsewhere."""

    def __init__(
        self, settings: Settings, blobs: BlobStore, reports: ReportDelivery, policy: RetryPolicy
    ) -> None:
        self._hostname = settings.smtp_hostname()
        self._local_domains = frozenset(d.lower() for d in settings.operator.domains)
        self._blobs = blobs
        self._reports = reports
        self._policy = policy
        self._log = get_logger("mssante.queue.delivery")

    def prepare(self, settled: Sequence[Settled], now: datetime) -> list[Notice]:
        """The notices ``settled`` calls for, one per message and action, built and stored
        before the transaction that records the outcomes (which then only links them)."""
        groups: dict[tuple[int, Action], list[Settled]] = {}
        for outcome in settled:
            action = _action(outcome)
            if action is None or not wants_report(outcome.claim.message.sender):
                continue  # never a DSN about a message with an empty sender (a DSN itself)
            groups.setdefault((outcome.claim.message.id, action), []).append(outcome)
        return [self._notice(items, action, now) for (_, action), items in groups.items()]

    def dispatch(self, session: Session, notice: Notice, now: datetime) -> None:
        """Deliver or queue ``notice`` inside the caller's transaction, and audit it."""
        where = self._deliver(session, notice, now)
        if where is None:
            return
        event = (
            AuditEvent.QUEUE_DSN_SENT
            if notice.action is Action.FAILED
            else AuditEvent.QUEUE_DELAY_NOTICE_SENT
        )
        context = {
            "queue_id": notice.message.id,
            "message_id": notice.message.message_id,
            "recipients": list(notice.recipients),
            "delivery": where,
            "dsn_message_id": notice.headers.message_id,
        }
        append(session, AuditRecord(event, SYSTEM_ACTOR, notice.message.sender, context, at=now))

    def _deliver(self, session: Session, notice: Notice, now: datetime) -> str | None:
        sender = notice.message.sender
        if self._reports.deliver_report_in(
            session, notice.digest, notice.size, notice.headers, sender
        ):
            return "local"
        if domain_of(sender) in self._local_domains:
            self._log.warning("queue.dsn_undeliverable", queue_id=notice.message.id, sender=sender)
            return None
        enqueue(
            session,
            digest=notice.digest,
            size=notice.size,
            sender="",  # RFC 3461 §6.2, RFC 5321 §4.5.5: a DSN's envelope sender is empty
            recipients=[sender],
            message_id=notice.headers.message_id,
            account="",
            now=now,
        )
        return "queued"

    def _notice(self, items: Sequence[Settled], action: Action, now: datetime) -> Notice:
        message = items[0].claim.message
        report = DeliveryReport(
            reporting_mta=self._hostname,
            sender=message.sender,
            original=self._original(message),
            arrival_date=message.created_at,
            recipients=tuple(self._status(item, action, now) for item in items),
            queue_id=str(message.id),
        )
        raw = build_dsn(report, now=now, message_id=make_msgid("dsn", domain=self._hostname))
        digest = self._blobs.put(raw)
        return Notice(
            message,
            action,
            tuple(i.claim.address for i in items),
            digest,
            len(raw),
            Headers.parse(raw),
        )

    def _status(self, outcome: Settled, action: Action, now: datetime) -> RecipientStatus:
        reply = outcome.reply
        until = outcome.claim.message.created_at + self._policy.give_up_after
        return RecipientStatus(
            address=outcome.claim.address,
            action=action,
            status=status_code(reply.code, reply.text, gave_up=outcome.gave_up),
            diagnostic=reply.line(),
            remote_mta=reply.remote_mta,
            last_attempt=now,
            will_retry_until=until if action is Action.DELAYED else None,
        )

    def _original(self, message: QueuedMessage) -> bytes:
        try:
            return self._blobs.get(message.blob_sha256)
        except NotFoundError:
            return b""


# -- small helpers ---------------------------------------------------------------------------


def _action(outcome: Settled) -> Action | None:
    if outcome.notify_failure:
        return Action.FAILED
    if outcome.notify_delay:
        return Action.DELAYED
    return None


def _no_route_reply(no_route: NoRoute) -> Reply:
    if no_route.permanent:
        return Reply(556, f"5.1.10 {no_route.reason}")  # RFC 7505 §4.2
    return Reply(451, f"4.4.4 {no_route.reason}")  # RFC 3463 X.4.4: unable to route


def _mail_options(smtp: aiosmtplib.SMTP, raw: bytes) -> list[str]:
    options = []
    if smtp.supports_extension("size"):
        options.append(f"SIZE={len(raw)}")  # RFC 1870
    if not raw.isascii() and smtp.supports_extension("8bitmime"):
        options.append("BODY=8BITMIME")  # RFC 6152
    return options


async def _reset(smtp: aiosmtplib.SMTP) -> None:
    """RSET (RFC 5321 §4.1.1.5) after a transaction left open, so the next one starts clean."""
    with contextlib.suppress(aiosmtplib.SMTPResponseException):
        await smtp.rset()


def _reply(exc: aiosmtplib.SMTPResponseException, host: str) -> Reply:
    code = exc.code if 200 <= exc.code < 600 else 451
    return Reply(code, " ".join(exc.message.split())[:900], host)


def _why(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


def _worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"[:100]
