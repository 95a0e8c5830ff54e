"""Starting and stopping the IMAP listeners of an operator (``start_imap``).

Port 143 offers STARTTLS and refuses any login before it; port 993 is IMAP over implicit TLS
(RFC 8314). Both use the submission listeners' server TLS context (TLS 1.2 minimum). Either is
off when its port is 0.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from mssante.imap.backend import Listings
from mssante.imap.bus import ChangeBus, NotifyingMailStore
from mssante.imap.login import ImapContext
from mssante.imap.server import Listener, ServerConfig, mechanisms_for
from mssante.imap.watch import FolderWatch
from mssante.ops.folders import Folders
from mssante.smtp.tls import submission_context

if TYPE_CHECKING:
    from mssante.operator.runtime import OperatorRuntime

_SHUTDOWN_GRACE = 5.0


async def start_imap(rt: OperatorRuntime) -> None:
    """Open the IMAP listeners (``imap.port``, ``imap.tls_port``).

    Called first by ``start_listeners``: the mail store given to the SMTP listeners is then one
    whose deliveries, once committed, wake the IDLE sessions of the recipients' mailboxes."""
    settings = rt.settings.imap
    if not settings.port and not settings.tls_port:
        return
    bus = ChangeBus(asyncio.get_running_loop())
    rt.bus = bus  # the webmail's new-mail events listen to it too
    rt.store = NotifyingMailStore(rt.node.db, rt.node.blobs, on_delivered=bus.publish)
    folders = Folders(rt.node.db, rt.node.blobs, notify=bus.publish)
    ctx = ImapContext(
        folders=folders,
        auth=rt.auth,
        bus=bus,
        audit=rt.audit,
        watch=FolderWatch(folders.probe_many, settings.poll_interval),
        listings=Listings(),
        bearer=rt.bearer,
        certificates=rt.certificates,
        token_recheck=rt.settings.oidc.recheck_seconds,
    )
    tls = submission_context(rt.settings)
    greeting = f"{rt.settings.operator.name or 'MSSante'} IMAP4rev1 ready"
    plans = [(settings.port, True, None), (settings.tls_port, False, tls)]
    servers, listeners = [], []
    for port, starttls, implicit in plans:
        if not port:
            continue
        config = ServerConfig(
            settings, tls, starttls=starttls, greeting=greeting, mechanisms=mechanisms_for(ctx)
        )
        listener = Listener(ctx, config)
        listeners.append(listener)
        servers.append(
            await asyncio.start_server(
                listener.handle,
                settings.listen_host,
                port,
                ssl=implicit,
                limit=settings.max_line_bytes,  # a longer command line is refused
            )
        )
    rt.tasks.append(asyncio.create_task(_serve(servers, listeners, ctx.watch), name="imap"))


async def _serve(
    servers: Sequence[asyncio.AbstractServer], listeners: list[Listener], watch: FolderWatch
) -> None:
    """Hold the listeners until the operator stops (this task is cancelled): then stop
    accepting, say BYE to the connected clients and wait for them to go."""
    try:
        await asyncio.Event().wait()
    finally:
        for server in servers:
            server.close()
        for listener in listeners:
            await listener.close_connections(_SHUTDOWN_GRACE)
        await watch.close()
        for server in servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
