"""The operator's HTTPS listener: mail-client autoconfiguration, the search of the operator's
copy of the national directory (``/directory/search``, ``/fhir/Practitioner``… as the
authority serves them: docs/directory.md), and the webmail (``/webmail``, docs/webmail.md).

TLS client authentication is optional on this listener (``web.client_certificates``): a
CPS-like card logs in to the webmail without a password; every other page ignores it.

Limits (docs/webmail.md "Limits"): the client address is the TCP peer's unless the peer is one
of ``web.trusted_proxies`` (only then are ``X-Forwarded-For``/``-Proto`` read; uvicorn's own
default would believe them from 127.0.0.1); ``web.max_connections`` connections at most
(uvicorn's ``limit_concurrency``: beyond, 503); ``web.max_requests_per_address`` requests in
flight per client address (``web/limits.py``: beyond, 429).

Served by uvicorn inside the operator's event loop. ``Server._serve`` is called rather than
``serve`` because ``serve`` takes over SIGINT and SIGTERM, which belong to the runtime
(uvicorn is pinned; revisit on upgrade).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI

from mssante.autoconfig import create_autoconfig_app
from mssante.config import Settings
from mssante.directory.api import directory_router
from mssante.store.db import Database
from mssante.tls import submission_context
from mssante.web.app import WebParts, build_context, install_webmail
from mssante.web.limits import RequestsPerAddress
from mssante.web.tls_client import with_header_timeout

STOP_GRACE = 5.0


@dataclass
class WebListener:
    server: uvicorn.Server
    task: asyncio.Task[None]

    async def stop(self) -> None:
        self.server.should_exit = True
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(self.task, STOP_GRACE)


def create_operator_app(
    settings: Settings, db: Database, webmail: WebParts | None = None
) -> FastAPI:
    """The webmail (given its parts) and the directory's routes first; everything else goes to
    the autoconfig app."""
    app = FastAPI(title="mssante operator", docs_url=None, redoc_url=None, openapi_url=None)
    # Added first, so inside the security headers (the last middleware added is the outermost):
    # its 429 carries them too.
    app.add_middleware(RequestsPerAddress, limit=settings.web.max_requests_per_address)
    if webmail is not None:
        install_webmail(app, build_context(webmail))
    app.include_router(directory_router(db, settings.directory))
    app.mount("/", create_autoconfig_app(settings))
    return app


def uvicorn_concurrency(max_connections: int) -> int:
    """uvicorn's ``limit_concurrency`` for ``web.max_connections`` connections served: uvicorn
    answers 503 when its open connections, the asking one included, reach the limit, so N
    connections are served with a limit of N + 1 (uvicorn is pinned; revisit on upgrade)."""
    return max_connections + 1


async def start_web(settings: Settings, db: Database, webmail: WebParts) -> WebListener | None:
    web = settings.web
    proxies = list(web.trusted_proxies)
    if not web.port or not settings.tls.certificate or not settings.tls.key:
        return None
    config = uvicorn.Config(
        create_operator_app(settings, db, webmail),
        host=web.listen_host,
        port=web.port,
        log_config=None,
        access_log=False,
        lifespan="off",
        ssl_certfile=str(settings.tls.certificate),
        ssl_keyfile=str(settings.tls.key),
        # the browser's certificate reaches the webmail's login; a request's header is awaited
        # web.header_timeout at most
        http=with_header_timeout(web.header_timeout),
        # X-Forwarded-For believed from the configured proxies only (uvicorn's default trusts
        # 127.0.0.1, and FORWARDED_ALLOW_IPS from the environment): by default the client
        # address, which the login limit and the audit use, is the TCP peer's.
        proxy_headers=bool(proxies),
        forwarded_allow_ips=proxies,
        limit_concurrency=uvicorn_concurrency(web.max_connections),
    )
    config.load()
    # TLS 1.2 minimum, like every listener; a client certificate asked for, optionally.
    config.ssl = submission_context(settings, client_certificates=web.client_certificates)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server._serve(), name="web")
    while not server.started and not task.done():
        await asyncio.sleep(0.01)
    if task.done():
        task.result()  # raises the bind error, say
    return WebListener(server, task)
