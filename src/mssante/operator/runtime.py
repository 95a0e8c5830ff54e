"""One operator process: every listener and worker, assembled from the settings and run together.

Stages of building (``build_runtime``, no event loop needed): open the node (database migrated,
blobs, audit) → trust material (anchors, CRLs, the last good whitelist) → the core (mail store,
accounts, group commit, the change bus, the acceptance path, the folder operations) → the
queue's workers → the authentication services. Every part is made once, complete, and handed
to the doors that use it: nothing is swapped or filled in later.

Stages of running (``run_operator``): listeners (inbound SMTP, submission 587 and 465, IMAP,
HTTPS), each given its own explicit context → workers (whitelist refresh, delivery, directory
publication, the directory's local copy). Stopping closes the listeners first, lets sessions
finish, then stops the workers.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from mssante.audit.events import AuditRecord
from mssante.auth.bearer import BearerValidator
from mssante.auth.certificates import CertificateLogins
from mssante.auth.revocation import RevocationWatcher
from mssante.auth.service import AuthService
from mssante.auth.throttle import LoginThrottle
from mssante.config import Settings
from mssante.imap import start_imap
from mssante.imap.service import ImapParts
from mssante.logging import get_logger
from mssante.operator.directory_sync import DirectorySync
from mssante.operator.publisher import DirectoryPublisher
from mssante.operator.web import WebListener, start_web
from mssante.operator.whitelist_sync import WhitelistSync
from mssante.ops.acceptance import Acceptance, AcceptanceContext, Limits, OutgoingMessage
from mssante.ops.accounts import Accounts
from mssante.ops.bus import ChangeBus, Signal
from mssante.ops.folders import Folders
from mssante.ops.mailstore import MailStore
from mssante.ops.patients import Oppositions
from mssante.queue.delivery import DeliveryService
from mssante.queue.store import enqueue
from mssante.runtime import Node, open_node
from mssante.smtp.inbound import InboundContext, make_inbound_protocol
from mssante.smtp.session import SessionLimits
from mssante.smtp.submission import SubmissionContext, make_submission_protocol
from mssante.store.group_commit import GroupCommitter
from mssante.tls import inbound_context, submission_context
from mssante.tls_memory import set_tls_read_buffer
from mssante.web.app import WebParts


@dataclass
class OperatorRuntime:
    settings: Settings
    node: Node
    sync: WhitelistSync
    store: MailStore
    accounts: Accounts
    committer: GroupCommitter
    bus: ChangeBus  # "this mailbox changed": IMAP IDLE and the webmail's events listen to it
    acceptance: Acceptance  # the one acceptance path of every door (ops/acceptance.py)
    folders: Folders  # the folder operations of IMAP, the webmail and the API
    delivery: DeliveryService
    auth: AuthService
    publisher: DirectoryPublisher | None = None  # the directory's outbox (docs/publication.md)
    directory: DirectorySync | None = None  # the local copy of the national directory
    bearer: BearerValidator | None = None
    certificates: CertificateLogins | None = None  # SASL EXTERNAL (submission, IMAP, web)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    servers: list[asyncio.AbstractServer] = field(default_factory=list)
    web: WebListener | None = None
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    @property
    def local_domains(self) -> frozenset[str]:
        return local_domains(self.settings)

    async def audit(self, record: AuditRecord) -> None:
        await asyncio.to_thread(self.node.audit.record, record)


def local_domains(settings: Settings) -> frozenset[str]:
    return frozenset(d.lower() for d in settings.operator.domains)


def build_runtime(settings: Settings) -> OperatorRuntime:
    node = open_node(settings)
    sync = WhitelistSync(settings, node.audit)
    store = MailStore(node.db, node.blobs)
    committer = GroupCommitter(node.db)
    accounts = Accounts(node.db)
    bus, queue_wakeup = ChangeBus(), Signal()

    async def audit(record: AuditRecord) -> None:
        await asyncio.to_thread(node.audit.record, record)

    acceptance = Acceptance(
        AcceptanceContext(
            local_domains=local_domains(settings),
            limits=Limits(
                max_message_bytes=settings.smtp.max_message_bytes,
                max_recipients=settings.smtp.max_recipients,
                messages_per_hour=settings.smtp.max_messages_per_hour,
                mime=settings.mime,
            ),
            software=settings.smtp.software_reference,
            whitelist=sync.keeper.current,
            store=store,
            accounts=accounts,
            oppositions=Oppositions(node.db),
            committer=committer,
            enqueue=_enqueue,
            wake_queue=queue_wakeup.set,
            bus=bus,
            audit=audit,
        )
    )
    delivery = DeliveryService(
        settings,
        node.db,
        node.blobs,
        acceptance.reports,  # DSNs for local senders: the acceptance path's report door
        sync.keeper.current,
        sync.trust,
        sync.crls,
        node.audit,
        committer=committer,
        wakeup=queue_wakeup,
    )
    # One login throttle for every door: passwords (SMTP AUTH, IMAP LOGIN, the webmail, all
    # through the AuthService) and certificates count failures together (docs/auth.md).
    throttle = LoginThrottle.from_settings(settings.auth)
    return OperatorRuntime(
        settings=settings,
        node=node,
        sync=sync,
        store=store,
        accounts=accounts,
        committer=committer,
        bus=bus,
        acceptance=acceptance,
        folders=Folders(node.db, node.blobs, notify=bus.publish, mime=settings.mime),
        delivery=delivery,
        auth=AuthService(node.db, settings, node.audit, throttle=throttle),
        publisher=DirectoryPublisher(settings, node.db),
        directory=DirectorySync(node),
        bearer=BearerValidator.from_settings(settings, node.db, node.audit)
        if settings.oidc.issuer
        else None,
        # The same trust store and CRL cache as the inbound listener: the PKI's anchors and
        # intermediates (the person CA among them), the CRLs refreshed by the whitelist worker.
        certificates=CertificateLogins(
            node.db, sync.trust, sync.crls, node.audit, auth=settings.auth, throttle=throttle
        ),
    )


def _enqueue(session: Session, message: OutgoingMessage) -> None:
    enqueue(
        session,
        digest=message.digest,
        size=message.size,
        sender=message.sender,
        recipients=list(message.recipients),
        message_id=message.message_id,
        account=message.account,
    )


# -- the doors' contexts: each gets what it uses, nothing else ------------------------------------


def inbound_parts(rt: OperatorRuntime) -> InboundContext:
    return InboundContext(
        hostname=rt.settings.smtp_hostname(),
        max_message_bytes=rt.settings.smtp.max_message_bytes,
        whitelist=rt.sync.keeper.current,
        trust=rt.sync.trust,
        crls=rt.sync.crls,
        acceptance=rt.acceptance,
        audit=rt.audit,
    )


def submission_parts(rt: OperatorRuntime) -> SubmissionContext:
    return SubmissionContext(
        hostname=rt.settings.smtp_hostname(),
        max_message_bytes=rt.settings.smtp.max_message_bytes,
        acceptance=rt.acceptance,
        auth=rt.auth,
        bearer=rt.bearer,
        certificates=rt.certificates,
        audit=rt.audit,
    )


def imap_parts(rt: OperatorRuntime) -> ImapParts:
    return ImapParts(
        settings=rt.settings,
        folders=rt.folders,
        auth=rt.auth,
        bus=rt.bus,
        audit=rt.audit,
        bearer=rt.bearer,
        certificates=rt.certificates,
    )


def web_parts(rt: OperatorRuntime) -> WebParts:
    return WebParts(
        settings=rt.settings,
        db=rt.node.db,
        folders=rt.folders,
        auth=rt.auth,
        accounts=rt.accounts,
        acceptance=rt.acceptance,
        whitelist=rt.sync.keeper.current,
        local_domains=rt.local_domains,
        audit=rt.audit,
        bus=rt.bus,
        certificates=rt.certificates,
        bearer=rt.bearer,
    )


async def start_listeners(rt: OperatorRuntime) -> None:
    imap = await start_imap(imap_parts(rt))
    if imap is not None:
        rt.tasks.append(imap)
    smtp = rt.settings.smtp
    loop = asyncio.get_running_loop()
    inbound, submission = inbound_parts(rt), submission_parts(rt)
    tls_in, tls_sub = inbound_context(rt.settings), submission_context(rt.settings)
    timeout, limits = smtp.command_timeout, SessionLimits.of(smtp)
    listeners: list[tuple[Callable[[], Any], int, Any]] = [
        (
            make_inbound_protocol(inbound, tls_in, timeout=timeout, limits=limits),
            smtp.inbound_port,
            None,
        ),
        (
            make_submission_protocol(
                submission, tls_sub, implicit_tls=False, timeout=timeout, limits=limits
            ),
            smtp.submission_port,
            None,
        ),
        (
            make_submission_protocol(
                submission, tls_sub, implicit_tls=True, timeout=timeout, limits=limits
            ),
            smtp.submissions_port,
            tls_sub,
        ),
    ]
    for factory, port, ssl in listeners:
        if port:
            rt.servers.append(await loop.create_server(factory, smtp.listen_host, port, ssl=ssl))


async def run_operator(
    settings: Settings,
    stop: asyncio.Event,
    *,
    runtime: OperatorRuntime | None = None,
    freeze_gc: bool = False,
) -> None:
    """Run until ``stop`` is set (``runtime``: one built beforehand, as tests do;
    ``freeze_gc``: a process of its own, ``mssante operator serve``)."""
    log = get_logger("mssante.operator")
    rt = runtime or build_runtime(settings)
    try:
        await _start(rt, stop)
        if freeze_gc:
            # The start-up's long-lived objects (settings, pools, templates, pymap's tables)
            # leave the collector's view: a full collection then takes milliseconds, not the
            # 140 ms that stalled every listener once per bench run (bench/web). Not in tests,
            # where one process runs many operators and would keep their garbage.
            gc.collect()
            gc.freeze()
        rt.started.set()
        log.info(
            "operator running", domains=sorted(rt.local_domains), hostname=settings.smtp_hostname()
        )
        await stop.wait()
    finally:
        await _stop(rt)


async def _start(rt: OperatorRuntime, stop: asyncio.Event) -> None:
    set_tls_read_buffer(rt.settings.tls.read_buffer_bytes)
    await start_listeners(rt)
    rt.web = await start_web(rt.settings, rt.node.db, web_parts(rt))
    workers: list[Callable[[asyncio.Event], Coroutine[Any, Any, None]]] = [
        rt.sync.run,
        rt.delivery.run,
    ]
    if rt.publisher is not None:
        workers.append(rt.publisher.run)
    if rt.directory is not None:
        workers.append(rt.directory.run)
    # One revocation path for every door (docs/revocation.md).
    workers.append(
        RevocationWatcher.from_settings(
            rt.settings, rt.node.db, rt.auth.sessions,
            bearer=rt.bearer, crls=rt.sync.crls, refresh_trust=rt.sync.refresh_now,
        ).run
    )  # fmt: skip
    rt.tasks += [asyncio.create_task(w(stop)) for w in workers]


async def _stop(rt: OperatorRuntime) -> None:
    if rt.web is not None:
        await rt.web.stop()
    for server in rt.servers:
        server.close()
    for server in rt.servers:
        await server.wait_closed()
    for task in rt.tasks:
        task.cancel()
    await asyncio.gather(*rt.tasks, return_exceptions=True)
    await rt.committer.close()
    rt.node.close()
