"""Logging in to the webmail with Pro Santé Connect, or the local provider standing in for it
(docs/webmail.md "Login", BRIEF §5).

Authorization code with PKCE (RFC 7636, S256) for a public client (``web.oidc_client_id``):

1. ``/webmail/oidc``: a random ``state`` and verifier, kept server-side (table ``web_logins``,
   by the state's hash, so any node of a cluster can take the callback); the browser goes to
   the issuer's authorization endpoint with ``scope=openid scope_all`` and ``acr_values``;
2. the person proves themselves at the issuer (password and code, or the CPS card);
3. ``/webmail/oidc/callback``: the state found and spent (once, within ``_STATE_LIFETIME``), the
   code exchanged for tokens, the access token validated exactly as IMAP and submission do
   (``BearerValidator``: signature, issuer, audience, level, the idNat's account); the session
   keeps the token's id, and the process's revocation watcher asks the issuer every
   ``oidc.recheck_seconds`` whether it still holds, for every open session of every door: a
   revoked token deletes the web session's row (docs/revocation.md).

The ID token is not used: the identity comes from the validated access token, and PKCE binds
the code to this browser's login, so the nonce is sent (some issuers require one) but not
needed.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from datetime import timedelta
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import delete

from mssante.auth.bearer import BearerLogin
from mssante.auth.service import AuthProtocol
from mssante.store.models import WebLogin, utcnow
from mssante.web.context import PREFIX, WebContext, load_session, peer_of
from mssante.web.login import open_session, refuse_login, session_principal, set_session_cookie
from mssante.web.sessions import SessionInfo, token_hash

_STATE_LIFETIME = timedelta(minutes=10)
SCOPE = "openid scope_all"  # Pro Santé Connect's scopes (BRIEF §5)
ACR = "eidas1"


def oidc_router(ctx: WebContext) -> APIRouter:
    router = APIRouter(prefix=PREFIX)

    @router.get("/oidc")
    def start(request: Request) -> Response:
        if not _enabled(ctx):
            return refuse_login(ctx, request, "login.failed", 404)
        state, verifier, nonce = (secrets.token_urlsafe(32) for _ in range(3))
        with ctx.sessions.db.session() as session:
            session.execute(
                delete(WebLogin).where(WebLogin.created_at < utcnow() - _STATE_LIFETIME)
            )
            session.add(WebLogin(state_hash=token_hash(state), verifier=verifier, nonce=nonce))
        query = {
            "response_type": "code",
            "client_id": ctx.settings.web.oidc_client_id,
            "redirect_uri": _redirect_uri(request),
            "scope": SCOPE,
            "acr_values": ACR,
            "state": state,
            "nonce": nonce,
            "code_challenge": _challenge(verifier),
            "code_challenge_method": "S256",
        }
        return RedirectResponse(f"{_authorization_endpoint(ctx)}?{urlencode(query)}", 303)

    @router.get("/oidc/callback")
    async def callback(request: Request, state: str = "", code: str = "") -> Response:
        load_session(ctx, request)
        verifier = _spend(ctx, state)
        if not _enabled(ctx) or verifier is None or not code or len(code) > 2000:
            return refuse_login(ctx, request, "login.failed", 400)
        login = await _login(ctx, request, code, verifier)
        if login is None:
            return refuse_login(ctx, request, "login.failed", 401)
        token = await open_session(
            ctx,
            request,
            session_principal(login.account_id, login.login, login.id_nat),
            "oidc",
            oidc_token_id=login.token_id,
        )
        response = RedirectResponse(f"{PREFIX}/", status_code=303)
        set_session_cookie(response, token)
        return response

    return router


async def recheck(ctx: WebContext, session: SessionInfo) -> bool:
    """Whether ``session`` may go on. The issuer is asked by the revocation watcher, not per
    request (one place decides, docs/revocation.md): a session whose token no longer holds has
    no row any more, and the request never gets here. Kept for the routers' dependency."""
    return True


def _enabled(ctx: WebContext) -> bool:
    return ctx.bearer is not None and bool(ctx.settings.web.oidc_client_id)


def _authorization_endpoint(ctx: WebContext) -> str:
    oidc = ctx.settings.oidc
    return oidc.authorization_endpoint or f"{oidc.issuer.rstrip('/')}/authorize"


def _redirect_uri(request: Request) -> str:
    return str(request.base_url).rstrip("/") + f"{PREFIX}/oidc/callback"


def _challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _spend(ctx: WebContext, state: str) -> str | None:
    """The verifier of a login under way, which can serve once only."""
    if not state or len(state) > 100:
        return None
    with ctx.sessions.db.session() as session:
        row = session.get(WebLogin, token_hash(state))
        if row is None:
            return None
        session.delete(row)
        fresh = utcnow() - row.created_at <= _STATE_LIFETIME
        return row.verifier if fresh else None


async def _login(ctx: WebContext, request: Request, code: str, verifier: str) -> BearerLogin | None:
    assert ctx.bearer is not None
    try:
        tokens = await ctx.bearer.exchange_code(
            code,
            client_id=ctx.settings.web.oidc_client_id,
            redirect_uri=_redirect_uri(request),
            verifier=verifier,
        )
    except Exception:
        return None
    access = tokens.get("access_token")
    if not isinstance(access, str):
        return None
    return await ctx.bearer.authenticate(
        access, None, peer=peer_of(request), protocol=AuthProtocol.WEB
    )
