"""The account page: second factor, app passwords for mail clients, open sessions (ended one by
one or all at once), and the shared mailboxes the person belongs to (docs/webmail.md)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from mssante.audit.events import Actor, AuditEvent, AuditRecord
from mssante.auth.app_passwords import AppPasswordError
from mssante.auth.service import AuthError, AuthProtocol
from mssante.errors import NotFoundError
from mssante.web.context import PREFIX, Visit, WebContext, peer_of
from mssante.web.login import changing, visit


def account_router(ctx: WebContext) -> APIRouter:
    router = APIRouter(prefix=PREFIX)

    @router.get("/account")
    async def account(request: Request) -> Response:
        current = visit(ctx, request)
        return await _page(ctx, request, current)

    @router.post("/account/password")
    async def change_password(
        request: Request,
        csrf: Annotated[str, Form(max_length=100)] = "",
        current: Annotated[str, Form(max_length=1024)] = "",
        new: Annotated[str, Form(max_length=1024)] = "",
        confirm: Annotated[str, Form(max_length=1024)] = "",
        code: Annotated[str, Form(max_length=16)] = "",
    ) -> Response:
        """The current password (and code, for an account with a device) again, then the new
        one twice; every other session of the account ends (docs/webmail.md "Sessions")."""
        visit_ = changing(ctx, request, csrf)
        login = visit_.session.login
        if new != confirm:
            return await _page(ctx, request, visit_, error="account.mismatch", status=400)
        peer = peer_of(request)
        checked = (
            await ctx.auth.check_password_totp_async(login, current, code.strip(), peer)
            if code.strip()
            else await ctx.auth.check_password_async(
                login, current, peer=peer, protocol=AuthProtocol.WEB
            )
        )
        if checked is None or checked.method.value == "app_password":
            return await _page(ctx, request, visit_, error="login.failed", status=401)
        try:
            await asyncio.to_thread(
                ctx.auth.change_password,
                login,
                new,
                _actor(request, visit_),
                keep_web_session=visit_.session.token_hash,  # this session goes on
            )
        except AuthError:
            return await _page(ctx, request, visit_, error="account.weak", status=400)
        for other in ctx.sessions.of_account(visit_.session.account_id):
            if other.token_hash != visit_.session.token_hash:
                ctx.sessions.end(other.token_hash)
        return await _page(ctx, request, visit_, notice="account.password_changed")

    @router.post("/account/app-passwords")
    async def add_app_password(
        request: Request,
        label: Annotated[str, Form(max_length=100)],
        csrf: Annotated[str, Form(max_length=100)] = "",
    ) -> Response:
        current = changing(ctx, request, csrf)
        try:
            new = await asyncio.to_thread(
                ctx.auth.add_app_password, current.session.login, label, _actor(request, current)
            )
        except AppPasswordError as exc:
            return await _page(ctx, request, current, error=str(exc), status=400)
        return await _page(ctx, request, current, new_password=new.password)

    @router.post("/account/app-passwords/{ident}/revoke")
    async def revoke_app_password(
        request: Request, ident: str, csrf: Annotated[str, Form(max_length=100)] = ""
    ) -> Response:
        current = changing(ctx, request, csrf)
        try:
            await asyncio.to_thread(
                ctx.auth.revoke_app_password,
                current.session.login,
                ident,
                _actor(request, current),
            )
        except AppPasswordError as exc:
            return await _page(ctx, request, current, error=str(exc), status=400)
        except NotFoundError as exc:  # not one of this account's app passwords
            return await _page(ctx, request, current, error=str(exc), status=404)
        return RedirectResponse(f"{PREFIX}/account", status_code=303)

    @router.post("/account/sessions/{prefix}/end")
    async def end_session(
        request: Request, prefix: str, csrf: Annotated[str, Form(max_length=100)] = ""
    ) -> Response:
        current = changing(ctx, request, csrf)
        if ctx.sessions.end_one(current.session.account_id, prefix):
            await ctx.audit(
                AuditRecord(
                    AuditEvent.WEB_SESSION_ENDED,
                    actor=current.session.login,
                    target=current.session.login,
                    context={"why": "revoked from the account page", "session": prefix[:12]},
                )
            )
        return RedirectResponse(f"{PREFIX}/account", status_code=303)

    return router


async def _page(
    ctx: WebContext,
    request: Request,
    current: Visit,
    *,
    new_password: str = "",
    error: str = "",
    notice: str = "",
    status: int = 200,
) -> Response:
    login = current.session.login
    app_passwords = await asyncio.to_thread(ctx.auth.list_app_passwords, login)
    totp = await asyncio.to_thread(ctx.auth.totp_active, login)
    mailboxes = await asyncio.to_thread(ctx.folders.mailboxes, current.caller)
    return ctx.render(
        request,
        "account.html",
        status,
        visit=current,
        app_passwords=app_passwords,
        totp=totp,
        sessions=ctx.sessions.of_account(current.session.account_id),
        mailboxes=mailboxes,
        new_password=new_password,
        error=error,
        notice=notice,
    )


def _actor(request: Request, current: Visit) -> Actor:
    return Actor(current.session.login, {"via": "web", "peer": peer_of(request)})
