"""Starting and stopping the IMAP listeners of an operator (``start_imap``).

Port 143 offers STARTTLS and refuses any login before it; port 993 is IMAP over implicit TLS
(RFC 8314). Both use the submission listeners' server TLS context (TLS 1.2 minimum). Either is
off when its port is 0.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

from mssante.auth.bearer import BearerValidator
from mssante.auth.certificates import CertificateLogins
from mssante.auth.service import AuthService
from mssante.config import Settings
from mssante.imap.backend import Listings
from mssante.imap.login import AuditFn, ImapContext
from mssante.imap.server import Listener, ServerConfig, mechanisms_for
from mssante.imap.watch import FolderWatch
from mssante.ops.bus import ChangeBus
from mssante.ops.folders import Folders
from mssante.tls import submission_context

_SHUTDOWN_GRACE = 5.0


@dataclass(frozen=True)
class ImapParts:
    """What the IMAP listeners are given by the operator's runtime (nothing else of it)."""

    settings: Settings
    folders: Folders
    auth: AuthService
    bus: ChangeBus
    audit: AuditFn
    bearer: BearerValidator | None = None
    certificates: CertificateLogins | None = None


async def start_imap(parts: ImapParts) -> asyncio.Task[None] | None:
    """Open the IMAP listeners (``imap.port``, ``imap.tls_port``); the task that holds them
    (cancel it to stop), or None when both ports are 0."""
    settings = parts.settings.imap
    if not settings.port and not settings.tls_port:
        return None
    ctx = ImapContext(
        folders=parts.folders,
        auth=parts.auth,
        bus=parts.bus,
        audit=parts.audit,
        watch=FolderWatch(parts.folders.probe_many, settings.poll_interval),
        listings=Listings(),
        bearer=parts.bearer,
        certificates=parts.certificates,
        mime=parts.settings.mime,
    )
    tls = submission_context(parts.settings)
    greeting = f"{parts.settings.operator.name or 'MSSante'} IMAP4rev1 ready"
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
    return asyncio.create_task(_serve(servers, listeners, ctx.watch), name="imap")


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
