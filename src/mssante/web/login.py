"""Logging in and out of the webmail (docs/webmail.md "Login").

One form: address, password and, for an account with a device, the TOTP code. The checks are
the shared authentication layer's (``AuthService``: argon2id, throttling per login and per
address, every attempt audited), plus a bucket of attempts per client address here (429).
A password alone opens a *pending* session that can only enrol a device
(``web.require_second_factor``); the code upgrades it to a full session with a new token.
"""

from __future__ import annotations

import asyncio
import hmac
from typing import Annotated
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from mssante.audit.events import Actor, AuditEvent, AuditRecord
from mssante.auth.service import AuthError, AuthMethod, AuthProtocol, Principal
from mssante.ops.folders import Caller
from mssante.store.models import AccountKind
from mssante.web.context import (
    LANG_COOKIE,
    LOGIN_CSRF_COOKIE,
    PREFIX,
    Visit,
    WebContext,
    check_csrf,
    load_session,
    new_login_token,
    peer_of,
    to_login,
)
from mssante.web.i18n import LANGUAGES, translator
from mssante.web.sessions import COOKIE, SessionInfo
from mssante.web.tls_client import STATE_KEY

_CODE_LENGTH = 6


def set_session_cookie(response: Response, token: str) -> None:
    response.set_cookie(COOKIE, token, secure=True, httponly=True, samesite="lax", path="/")


def visit(ctx: WebContext, request: Request) -> Visit:
    """The logged-in person of this request, or a redirect to the login page."""
    session = load_session(ctx, request)
    if session is None:
        raise to_login(request, "expired" if request.cookies.get(COOKIE) else "")
    if session.pending:
        target = f"{PREFIX}/enrol"
        raise HTTPException(status_code=303, headers={"Location": target, "HX-Redirect": target})
    caller = Caller(session.account_id, session.login, {"peer": peer_of(request), "via": "web"})
    mailbox = session.mailbox or ctx.folders.default_mailbox(caller) or session.login
    return Visit(session, caller, mailbox, translator(request.state.language))


def changing(ctx: WebContext, request: Request, csrf: str | None) -> Visit:
    """:func:`visit` for a state change: the CSRF token must match the session's."""
    current = visit(ctx, request)
    check_csrf(request, current.session.csrf_token, csrf)
    return current


def login_router(ctx: WebContext) -> APIRouter:
    router = APIRouter(prefix=PREFIX)

    @router.get("/login")
    def login_page(request: Request, reason: str = "") -> Response:
        load_session(ctx, request)
        token = new_login_token()
        response: Response = ctx.render(
            request,
            "login.html",
            csrf=token,
            message="login.expired" if reason == "expired" else "",
            certificates=ctx.certificates is not None and ctx.settings.web.client_certificates,
            oidc=ctx.bearer is not None and bool(ctx.settings.web.oidc_client_id),
        )
        response.set_cookie(
            LOGIN_CSRF_COOKIE, token, secure=True, httponly=True, samesite="strict", path="/"
        )
        return response

    @router.post("/login")
    async def login(
        request: Request,
        address: Annotated[str, Form(max_length=320)],
        password: Annotated[str, Form(max_length=1024)],
        csrf: Annotated[str, Form(max_length=100)],
        code: Annotated[str, Form(max_length=16)] = "",
    ) -> Response:
        load_session(ctx, request)
        cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
        if not cookie or not hmac.compare_digest(cookie.encode(), csrf.encode()):
            raise HTTPException(status_code=403, detail="csrf")
        peer = peer_of(request)
        if ctx.login_buckets.take(peer):
            return refuse_login(ctx, request, "login.throttled", 429, address)
        principal = await _check(ctx, address, password, code.strip(), peer)
        if principal is None:
            return refuse_login(ctx, request, "login.failed", 401, address)
        return await _open(ctx, request, principal, pending=_needs_enrolment(ctx, principal))

    @router.get("/certificate")
    async def certificate(request: Request) -> Response:
        """Login with the CPS-like card: the certificate the browser presented in the TLS
        handshake, verified and mapped by the shared certificate logins (decision 0008)."""
        load_session(ctx, request)
        chain = getattr(request.state, STATE_KEY, [])
        result = None
        if chain and ctx.certificates is not None and ctx.settings.web.client_certificates:
            result = await ctx.certificates.authenticate(
                chain, None, peer=peer_of(request), protocol=AuthProtocol.WEB
            )
        if result is None:
            return refuse_login(ctx, request, "login.no_certificate", 401)
        token = await open_session(
            ctx,
            request,
            session_principal(result.account_id, result.login, result.id_nat_or_structure),
            "certificate",
            pending=False,
        )
        response = RedirectResponse(f"{PREFIX}/", status_code=303)
        set_session_cookie(response, token)
        return response

    @router.get("/enrol")
    def enrol_page(request: Request) -> Response:
        session = _pending_or_full(ctx, request)
        enrolment = ctx.auth.enrol_totp(session.login, _actor(request, session))
        secret = parse_qs(urlsplit(enrolment.uri).query).get("secret", [""])[0]
        return ctx.render(request, "enrol.html", qr=enrolment.qr_svg(), secret=secret, message="")

    @router.post("/enrol")
    async def enrol(
        request: Request,
        code: Annotated[str, Form(max_length=16)],
        csrf: Annotated[str, Form(max_length=100)] = "",
    ) -> Response:
        session = _pending_or_full(ctx, request)
        check_csrf(request, session.csrf_token, csrf)
        try:
            await asyncio.to_thread(
                ctx.auth.confirm_totp, session.login, code.strip(), _actor(request, session)
            )
        except AuthError:
            return ctx.render(request, "enrol.html", 400, qr="", secret="", message="totp.failed")
        response = RedirectResponse(f"{PREFIX}/", status_code=303)
        set_session_cookie(response, ctx.sessions.upgrade(session.token_hash, "totp"))
        return response

    @router.post("/logout")
    def logout(request: Request, csrf: Annotated[str, Form(max_length=100)] = "") -> Response:
        session = load_session(ctx, request)
        if session is not None:
            check_csrf(request, session.csrf_token, csrf)
            ctx.sessions.end(session.token_hash)
        response = RedirectResponse(f"{PREFIX}/login", status_code=303)
        response.delete_cookie(COOKIE, path="/", secure=True, httponly=True)
        return response

    @router.post("/logout-everywhere")
    def logout_everywhere(
        request: Request, csrf: Annotated[str, Form(max_length=100)] = ""
    ) -> Response:
        current = changing(ctx, request, csrf)
        ctx.sessions.end_all(current.session.account_id)
        response = RedirectResponse(f"{PREFIX}/login", status_code=303)
        response.delete_cookie(COOKIE, path="/", secure=True, httponly=True)
        return response

    @router.get("/lang/{language}")
    def language(request: Request, language: str, next: str = "") -> Response:
        chosen = language if language in LANGUAGES else "fr"
        session = load_session(ctx, request)
        if session is not None:
            ctx.sessions.set_language(session.token_hash, chosen)
        # Back to the page the person was on: a path of ours only (no open redirect).
        target = next if next.startswith(PREFIX + "/") and "//" not in next else PREFIX + "/"
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(LANG_COOKIE, chosen, secure=True, samesite="lax", path="/")
        return response

    return router


async def _check(
    ctx: WebContext, address: str, password: str, code: str, peer: str
) -> Principal | None:
    if code:
        if len(code) != _CODE_LENGTH or not code.isdigit():
            return None
        return await ctx.auth.check_password_totp_async(address, password, code, peer)
    return await ctx.auth.check_password_async(
        address, password, peer=peer, protocol=AuthProtocol.WEB
    )


def _needs_enrolment(ctx: WebContext, principal: Principal) -> bool:
    """A password alone (no device yet) while a second factor is required."""
    return ctx.settings.web.require_second_factor and principal.method.value == "password"


async def open_session(
    ctx: WebContext,
    request: Request,
    principal: Principal,
    method: str,
    *,
    pending: bool = False,
    oidc_token_id: str = "",
) -> str:
    caller = Caller(principal.account_id, principal.login, {})
    mailbox = await asyncio.to_thread(ctx.folders.default_mailbox, caller)
    await ctx.audit(
        AuditRecord(
            AuditEvent.WEB_SESSION_OPENED,
            actor=principal.login,
            target=mailbox or principal.login,
            context={"method": method, "pending": pending, "peer": peer_of(request)},
        )
    )
    return ctx.sessions.create(
        principal.account_id,
        method,
        pending=pending,
        mailbox=mailbox or principal.login,
        user_agent=request.headers.get("user-agent", ""),
        peer=peer_of(request),
        language=getattr(request.state, "language", ""),
        oidc_token_id=oidc_token_id,
    )


async def _open(
    ctx: WebContext, request: Request, principal: Principal, *, pending: bool
) -> Response:
    token = await open_session(ctx, request, principal, principal.method.value, pending=pending)
    response = RedirectResponse(f"{PREFIX}/enrol" if pending else f"{PREFIX}/", status_code=303)
    set_session_cookie(response, token)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/", secure=True, httponly=True)
    return response


def refuse_login(
    ctx: WebContext, request: Request, message: str, status: int, address: str = ""
) -> Response:
    """The login page again, with why (never which of the address or password was wrong)."""
    token = new_login_token()
    response = ctx.render(
        request,
        "login.html",
        status,
        csrf=token,
        message=message,
        address=address,
        certificates=ctx.certificates is not None and ctx.settings.web.client_certificates,
        oidc=ctx.bearer is not None and bool(ctx.settings.web.oidc_client_id),
    )
    response.set_cookie(
        LOGIN_CSRF_COOKIE, token, secure=True, httponly=True, samesite="strict", path="/"
    )
    return response


def session_principal(account_id: int, login: str, id_nat: str) -> Principal:
    """The person a card or a token opened a session for (the session records the method)."""
    return Principal(
        account_id=account_id,
        login=login,
        kind=AccountKind.PERSON,
        id_nat=id_nat,
        method=AuthMethod.PASSWORD,  # not used: WebSession.method says how
    )


def _pending_or_full(ctx: WebContext, request: Request) -> SessionInfo:
    session = load_session(ctx, request)
    if session is None:
        raise to_login(request, "expired")
    return session


def _actor(request: Request, session: SessionInfo) -> Actor:
    return Actor(session.login, {"via": "web", "peer": peer_of(request)})
