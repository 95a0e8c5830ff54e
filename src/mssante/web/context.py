"""What every webmail route is given (one object, built at start-up from the runtime), and the
per-request checks: who is logged in, which mailbox they read, the CSRF token.

Authorization is never decided here: the routes call the folder operations with a
:class:`~mssante.ops.folders.Caller`, and the operations refuse (decision 0007).
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable, Set
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from fastapi import HTTPException, Request
from fastapi.responses import Response
from fastapi.templating import Jinja2Templates

from mssante.audit.events import AuditRecord
from mssante.auth.bearer import BearerValidator
from mssante.auth.certificates import CertificateLogins
from mssante.auth.service import AuthService
from mssante.config import Settings
from mssante.directory.search import DirectorySearch
from mssante.mail.trace import TraceFacts, new_queue_id, received_header
from mssante.ops.acceptance import Acceptance, Door, Origin
from mssante.ops.accounts import Accounts
from mssante.ops.bus import ChangeBus
from mssante.ops.folders import Caller, Folders
from mssante.ratelimit import TokenBuckets
from mssante.trust.model import Whitelist
from mssante.web.i18n import Translator, choose, translator
from mssante.web.images import RemoteImages
from mssante.web.sessions import COOKIE, SessionInfo, WebSessions

PREFIX = "/webmail"
LOGIN_CSRF_COOKIE = "__Host-mss_login"
LANG_COOKIE = "mss_lang"


@dataclass
class WebContext:
    settings: Settings
    folders: Folders
    auth: AuthService
    accounts: Accounts
    sessions: WebSessions
    acceptance: Acceptance  # every message sent goes through it (ops/acceptance.py)
    whitelist: Callable[[], Whitelist | None]
    local_domains: Set[str]
    directory: DirectorySearch
    templates: Jinja2Templates
    audit: Callable[[AuditRecord], Any]
    login_buckets: TokenBuckets
    bus: ChangeBus
    certificates: CertificateLogins | None = None
    bearer: BearerValidator | None = None  # OIDC logins (web/oidc_login.py)
    images: RemoteImages | None = None  # remote images, when a reader asks (web/images.py)

    def render(self, request: Request, name: str, status: int = 200, **values: Any) -> Response:
        language = getattr(request.state, "language", "fr")
        values.setdefault("session", getattr(request.state, "web_session", None))
        return self.templates.TemplateResponse(
            request,
            name,
            {"t": translator(language), "lang": language, "prefix": PREFIX, **values},
            status_code=status,
        )


@dataclass(frozen=True)
class Visit:
    """A logged-in request: the session, the person, the mailbox being read."""

    session: SessionInfo
    caller: Caller
    mailbox: str
    t: Translator


async def send_mail(
    ctx: WebContext,
    login: str,
    sender: str,
    recipients: list[str],
    raw: bytes,
    *,
    peer: str,
    report: bool = False,
) -> str:
    """Hand a message written in the webmail to the acceptance path, as the webmail door: its
    queue id. Raises :class:`~mssante.ops.acceptance.MessageRefused`. ``report``: an MDN the
    reader chose to send (null sender)."""
    queue_id = new_queue_id()
    facts = TraceFacts(
        helo="webmail",
        peer_ip=peer,
        hostname=ctx.settings.smtp_hostname(),
        tls_version="",  # the browser's TLS ends at the web listener, not here
        cipher="",
        authenticated_as=login,
    )
    await ctx.acceptance.submit(
        Origin(Door.WEBMAIL, login=login, peer_ip=peer),
        "" if report else sender,
        recipients,
        raw,
        trace=received_header(facts, queue_id),
        queue_id=queue_id,
        report=report,
    )
    return queue_id


def peer_of(request: Request) -> str:
    return request.client.host if request.client else "?"


def language_of(request: Request, session: SessionInfo | None) -> str:
    return choose(
        session.language if session else "",
        request.cookies.get(LANG_COOKIE),
        request.headers.get("accept-language"),
    )


def to_login(request: Request, reason: str = "") -> HTTPException:
    """Back to the login page (htmx follows ``HX-Redirect``, a browser the 303)."""
    target = f"{PREFIX}/login" + (f"?reason={reason}" if reason else "")
    return HTTPException(status_code=303, headers={"Location": target, "HX-Redirect": target})


def load_session(ctx: WebContext, request: Request) -> SessionInfo | None:
    """The request's session, read once per request: the routers' dependency reads it in a
    worker thread first (``web/app.py``), so that routes on the event loop never wait for the
    database here."""
    if getattr(request.state, "session_loaded", False):
        return request.state.web_session  # type: ignore[no-any-return]
    session = ctx.sessions.load(request.cookies.get(COOKIE))
    request.state.web_session = session
    request.state.language = language_of(request, session)
    request.state.session_loaded = True
    return session


def forget_session(request: Request) -> None:
    request.state.web_session = None
    request.state.session_loaded = True


def check_csrf(request: Request, expected: str, sent: str | None) -> None:
    """Every state change carries the session's token (a form field, or the ``X-CSRF-Token``
    header htmx adds), and comes from our own origin when the browser says where from."""
    token = sent or request.headers.get("x-csrf-token") or ""
    origin = request.headers.get("origin")
    if origin is not None:  # "null" (a sandboxed frame, a privacy redirect) is refused too
        parts = urlsplit(origin)
        if parts.scheme != "https" or parts.netloc != request.headers.get("host"):
            raise HTTPException(status_code=403, detail="csrf")
    if not token or not hmac.compare_digest(token.encode(), expected.encode()):
        raise HTTPException(status_code=403, detail="csrf")


def new_login_token() -> str:
    return secrets.token_urlsafe(24)
