"""The webmail's assembly: the context from the operator's runtime, the routers, the security
headers on every response, static files, and error pages (docs/webmail.md).

The Content-Security-Policy allows scripts, styles and images from this origin only: no inline
script, no ``eval`` (htmx is configured without it), no framing by others. A message's HTML
body is served on its own URL with a stricter policy (``web/mail.py``, ``BODY_CSP``) and shown
in a sandboxed iframe: two walls between a mail and the page.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping, Set
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException

from mssante.audit.events import AuditRecord
from mssante.auth.bearer import BearerValidator
from mssante.auth.certificates import CertificateLogins
from mssante.auth.service import AuthService
from mssante.config import Settings
from mssante.directory.search import DirectorySearch
from mssante.ops.acceptance import Acceptance
from mssante.ops.accounts import Accounts
from mssante.ops.bus import ChangeBus
from mssante.ops.folders import Folders
from mssante.ratelimit import TokenBuckets
from mssante.store.db import Database
from mssante.trust.model import Whitelist
from mssante.web.account import account_router
from mssante.web.compose import compose_router
from mssante.web.context import PREFIX, WebContext, forget_session, load_session
from mssante.web.i18n import folder_label
from mssante.web.images import RemoteImages
from mssante.web.login import login_router
from mssante.web.mail import mail_router
from mssante.web.oidc_login import oidc_router, recheck
from mssante.web.sessions import WebSessions

HERE = Path(__file__).parent
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-src 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
_SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    # same-origin, not no-referrer: with no-referrer a browser sends "Origin: null" on every
    # POST (Fetch §3.1), and the CSRF check could no longer tell our pages from a sandbox.
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (b"strict-transport-security", b"max-age=31536000"),
    (b"cross-origin-opener-policy", b"same-origin"),
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class SecurityHeaders:
    """Adds the security headers to every response; a response that set its own CSP keeps it.
    Pages are never cached (``no-store``): a shared computer keeps no mail on disk."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = str(scope.get("path", "")).startswith(f"{PREFIX}/static/")

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                extra = [(k, v) for k, v in _SECURITY_HEADERS if k not in names]
                if b"content-security-policy" not in names:
                    extra.append((b"content-security-policy", PAGE_CSP.encode()))
                if not static and b"cache-control" not in names:
                    extra.append((b"cache-control", b"no-store"))
                message["headers"] = headers + extra
            await send(message)

        await self.app(scope, receive, sending)


@dataclass(frozen=True)
class WebParts:
    """What the webmail is given by the operator's runtime (nothing else of it)."""

    settings: Settings
    db: Database
    folders: Folders
    auth: AuthService
    accounts: Accounts
    acceptance: Acceptance
    whitelist: Callable[[], Whitelist | None]
    local_domains: Set[str]
    audit: Callable[[AuditRecord], Any]
    bus: ChangeBus
    certificates: CertificateLogins | None = None
    bearer: BearerValidator | None = None


def build_context(parts: WebParts) -> WebContext:
    settings = parts.settings
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals["folder_label"] = folder_label
    return WebContext(
        settings=settings,
        folders=parts.folders,
        auth=parts.auth,
        accounts=parts.accounts,
        sessions=WebSessions(parts.db, settings.web),
        acceptance=parts.acceptance,
        whitelist=parts.whitelist,
        local_domains=parts.local_domains,
        directory=DirectorySearch(parts.db, settings.directory),
        templates=templates,
        audit=parts.audit,
        # a minute's worth at most at once: a burst of 10 let a setting of 3 allow 10
        login_buckets=TokenBuckets(
            settings.web.login_attempts_per_minute / 60.0,
            max(1.0, settings.web.login_attempts_per_minute),
        ),
        bus=parts.bus,
        certificates=parts.certificates,
        bearer=parts.bearer,
        images=RemoteImages(settings.web),
    )


def install_webmail(app: FastAPI, ctx: WebContext) -> None:
    """Routes under ``/webmail``; the security headers on every response of ``app``."""
    app.add_middleware(SecurityHeaders)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=str(HERE / "static")), name="static")

    async def session_first(request: Request) -> None:
        """Before every webmail route: the session read off the event loop, and a session
        opened by a token rechecked at the issuer when due (``web/oidc_login.py``)."""
        session = await asyncio.to_thread(load_session, ctx, request)
        if session is not None and not await recheck(ctx, session):
            forget_session(request)

    for router in (login_router, oidc_router, mail_router, compose_router, account_router):
        app.include_router(router(ctx), dependencies=[Depends(session_first)])

    @app.exception_handler(DataError)
    async def bad_data(request: Request, exc: DataError) -> Response:
        """A value the database cannot hold (a NUL byte in a form field, on PostgreSQL):
        the request was wrong, not the server; nothing was written (the transaction
        rolled back)."""
        return await errors(request, HTTPException(status_code=400, detail="données invalides"))

    @app.exception_handler(StarletteHTTPException)
    async def errors(request: Request, exc: HTTPException) -> Response:
        if not request.url.path.startswith(PREFIX):
            return await http_exception_handler(request, exc)
        if exc.status_code in (301, 302, 303, 307):
            return Response(status_code=exc.status_code, headers=exc.headers)
        if request.state.__dict__.get("web_session") is None:
            load_session(ctx, request)
        key = {403: "error.csrf", 404: "error.not_found"}.get(exc.status_code, "")
        return ctx.render(
            request,
            "error.html",
            exc.status_code,
            message=key,
            detail="" if key else str(exc.detail),
        )
