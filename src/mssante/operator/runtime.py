"""One operator process: every listener and worker, assembled from the settings and run together.

Stages of start-up: open the node (database migrated, blobs, audit) → trust material (anchors,
CRLs, the last good whitelist) → the shared services (mail store, accounts, group commit, queue)
→ listeners (inbound SMTP, submission 587 and 465, IMAP, HTTPS) → workers (whitelist refresh,
delivery, directory publication, the directory's local copy).
Stopping closes the listeners first, lets sessions finish, then stops the workers.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from mssante.audit.events import AuditRecord
from mssante.auth.bearer import BearerValidator
from mssante.auth.certificates import CertificateLogins
from mssante.auth.service import AuthService
from mssante.config import Settings
from mssante.imap import start_imap
from mssante.imap.bus import ChangeBus
from mssante.logging import get_logger
from mssante.operator.directory_sync import DirectorySync
from mssante.operator.publisher import DirectoryPublisher
from mssante.operator.web import WebListener, start_web
from mssante.operator.whitelist_sync import WhitelistSync
from mssante.ops.accounts import Accounts
from mssante.ops.mailstore import MailStore
from mssante.queue.delivery import DeliveryService
from mssante.queue.store import enqueue
from mssante.runtime import Node, open_node
from mssante.smtp.inbound import InboundContext, make_inbound_protocol
from mssante.smtp.submission import OutgoingMessage, SubmissionContext, make_submission_protocol
from mssante.smtp.tls import inbound_context, submission_context
from mssante.store.group_commit import GroupCommitter
from mssante.tls_memory import set_tls_read_buffer


@dataclass
class OperatorRuntime:
    settings: Settings
    node: Node
    sync: WhitelistSync
    store: MailStore
    accounts: Accounts
    committer: GroupCommitter
    delivery: DeliveryService
    auth: AuthService
    publisher: DirectoryPublisher | None = None  # the directory's outbox (docs/publication.md)
    directory: DirectorySync | None = None  # the local copy of the national directory
    bearer: BearerValidator | None = None
    certificates: CertificateLogins | None = None  # SASL EXTERNAL (submission, IMAP)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    servers: list[asyncio.AbstractServer] = field(default_factory=list)
    web: WebListener | None = None
    bus: ChangeBus | None = None  # set by the IMAP listeners: "this mailbox changed"
    submission: SubmissionContext | None = None  # set by the listeners; the webmail sends with it
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    @property
    def local_domains(self) -> frozenset[str]:
        return frozenset(d.lower() for d in self.settings.operator.domains)

    async def audit(self, record: AuditRecord) -> None:
        await asyncio.to_thread(self.node.audit.record, record)


def build_runtime(settings: Settings) -> OperatorRuntime:
    node = open_node(settings)
    sync = WhitelistSync(settings, node.audit)
    store = MailStore(node.db, node.blobs)
    committer = GroupCommitter(node.db)
    delivery = DeliveryService(
        settings,
        node.db,
        node.blobs,
        store,
        sync.keeper.current,
        sync.trust,
        sync.crls,
        node.audit,
        committer=committer,
    )
    return OperatorRuntime(
        settings=settings,
        node=node,
        sync=sync,
        store=store,
        accounts=Accounts(node.db),
        committer=committer,
        delivery=delivery,
        auth=AuthService(node.db, settings, node.audit),
        publisher=DirectoryPublisher(settings, node.db),
        directory=DirectorySync(node),
        bearer=BearerValidator.from_settings(settings, node.db, node.audit)
        if settings.oidc.issuer
        else None,
        # The same trust store and CRL cache as the inbound listener: the PKI's anchors and
        # intermediates (the person CA among them), the CRLs refreshed by the whitelist worker.
        certificates=CertificateLogins(
            node.db, sync.trust, sync.crls, node.audit, auth=settings.auth
        ),
    )


def _enqueue(session: Any, message: OutgoingMessage) -> None:
    enqueue(
        session,
        digest=message.digest,
        size=message.size,
        sender=message.sender,
        recipients=list(message.recipients),
        message_id=message.message_id,
        account=message.account,
    )


async def start_listeners(rt: OperatorRuntime) -> None:
    await start_imap(rt)  # first: its store wakes IMAP IDLE sessions on SMTP deliveries
    smtp = rt.settings.smtp
    hostname = rt.settings.smtp_hostname()
    loop = asyncio.get_running_loop()
    inbound = InboundContext(
        hostname=hostname,
        max_message_bytes=smtp.max_message_bytes,
        max_recipients=smtp.max_recipients,
        whitelist=rt.sync.keeper.current,
        trust=rt.sync.trust,
        crls=rt.sync.crls,
        store=rt.store,
        committer=rt.committer,
        audit=rt.audit,
    )
    submission = SubmissionContext(
        hostname=hostname,
        local_domains=rt.local_domains,
        max_message_bytes=smtp.max_message_bytes,
        max_recipients=smtp.max_recipients,
        whitelist=rt.sync.keeper.current,
        accounts=rt.accounts,
        store=rt.store,
        committer=rt.committer,
        enqueue=_enqueue,
        notify_queue=rt.delivery.notify,
        auth=rt.auth,
        bearer=rt.bearer,
        certificates=rt.certificates,
        audit=rt.audit,
    )
    rt.submission = submission
    tls_in, tls_sub = inbound_context(rt.settings), submission_context(rt.settings)
    timeout = smtp.command_timeout
    listeners: list[tuple[Callable[[], Any], int, Any]] = [
        (make_inbound_protocol(inbound, tls_in, timeout=timeout), smtp.inbound_port, None),
        (
            make_submission_protocol(submission, tls_sub, implicit_tls=False, timeout=timeout),
            smtp.submission_port,
            None,
        ),
        (
            make_submission_protocol(submission, tls_sub, implicit_tls=True, timeout=timeout),
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
    rt.web = await start_web(rt)
    workers: list[Callable[[asyncio.Event], Coroutine[Any, Any, None]]] = [
        rt.sync.run,
        rt.delivery.run,
    ]
    if rt.publisher is not None:
        workers.append(rt.publisher.run)
    if rt.directory is not None:
        workers.append(rt.directory.run)
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
