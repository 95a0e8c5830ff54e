"""The provider's HTTPS endpoints (a Starlette app served by uvicorn over TLS).

    GET  /.well-known/openid-configuration   OpenID Connect Discovery 1.0 §4 (RFC 8414)
    GET  /jwks                               the signing key (RFC 7517 §5)
    GET  /authorize                          the login page (RFC 6749 §4.1.1, OIDC Core §3.1.2)
    POST /authorize                          the login: certificate, or password (+ TOTP)
    POST /token                              RFC 6749 §3.2: code and refresh token grants
    POST /revoke                             RFC 7009
    POST /introspect                         RFC 7662 (resource servers only)
    POST /token-status                       session status by jti (resource servers only)
    GET  /userinfo                           OIDC Core §5.3

All paths hang below the issuer's own path, so the discovery document is always at
``<issuer>/.well-known/openid-configuration`` (OIDC Discovery §4). Pages and token responses
are never cached and never framed.
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from authlib.oauth2.rfc6749 import OAuth2Error  # type: ignore[import-untyped]
from joserfc.errors import JoseError
from joserfc.jwt import JWTClaimsRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from mssante.audit.events import AuditEvent
from mssante.oidc.keys import ALGORITHM, public_jwks
from mssante.oidc.models import ACR_ORDER, SCOPES, Subject
from mssante.oidc.people import LoginFailure, LoginResult, People, meets
from mssante.oidc.server import HttpRequest, Provider, Reply

PEER_CERTIFICATE = "mssante_tls_peer_certificate"  # ASGI scope state: the client's DER leaf
MAX_FORM_BYTES = 16384
# OIDC Core §3.1.2.1: what an authorization request may carry (kept across the login form).
AUTHORIZATION_PARAMETERS = (
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "acr_values",
    "prompt",
    "login_hint",
)
SECURITY_HEADERS = (
    (b"cache-control", b"no-store"),
    (b"pragma", b"no-cache"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (
        b"content-security-policy",
        b"default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
    ),
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Asgi = Callable[[Scope, Receive, Send], Awaitable[None]]


class FormError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def discovery_document(issuer: str) -> dict[str, Any]:
    """OpenID Connect Discovery 1.0 §3 / RFC 8414 §2."""
    return {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/authorize",
        "token_endpoint": f"{issuer}/token",
        "userinfo_endpoint": f"{issuer}/userinfo",
        "jwks_uri": f"{issuer}/jwks",
        "revocation_endpoint": f"{issuer}/revoke",
        "introspection_endpoint": f"{issuer}/introspect",
        "mssante_token_status_endpoint": f"{issuer}/token-status",
        "scopes_supported": list(SCOPES),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [ALGORITHM],
        "token_endpoint_auth_methods_supported": ["none"],
        "revocation_endpoint_auth_methods_supported": ["none"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic"],
        "code_challenge_methods_supported": ["S256"],
        "acr_values_supported": list(ACR_ORDER),
        "claims_supported": [
            "sub",
            "iss",
            "aud",
            "exp",
            "iat",
            "auth_time",
            "acr",
            "amr",
            "preferred_username",
            "given_name",
            "family_name",
            "email",
        ],
    }


def create_app(provider: Provider, people: People) -> Starlette:
    handlers = _Handlers(provider, people)
    routes: list[BaseRoute] = [
        Route("/.well-known/openid-configuration", handlers.discovery, methods=["GET"]),
        Route("/jwks", handlers.jwks, methods=["GET"]),
        Route("/authorize", handlers.authorize, methods=["GET", "POST"]),
        Route("/token", handlers.token, methods=["POST"]),
        Route("/revoke", handlers.revoke, methods=["POST"]),
        Route("/introspect", handlers.introspect, methods=["POST"]),
        Route("/token-status", handlers.token_status, methods=["POST"]),
        Route("/userinfo", handlers.userinfo, methods=["GET", "POST"]),
        Route("/healthz", handlers.healthz, methods=["GET"]),
    ]
    prefix = urlsplit(provider.ctx.issuer).path.rstrip("/")
    app = Starlette(routes=[Mount(prefix, routes=routes)] if prefix else routes)
    app.add_middleware(_SecurityHeaders)
    return app


class _SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every response."""

    def __init__(self, app: Asgi) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name for name, _ in message.get("headers", [])}
                extra = [(n, v) for n, v in SECURITY_HEADERS if n not in present]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, with_headers)


@dataclass
class _Handlers:
    provider: Provider
    people: People

    # -- metadata --------------------------------------------------------------------------------
    async def discovery(self, _: Request) -> Response:
        return JSONResponse(discovery_document(self.provider.ctx.issuer))

    async def jwks(self, _: Request) -> Response:
        key = self.provider.ctx.keys.keys[0]
        return JSONResponse(public_jwks(key))  # type: ignore[arg-type]

    async def healthz(self, _: Request) -> Response:
        return JSONResponse({"status": "ok"})

    # -- the authorization endpoint --------------------------------------------------------------
    async def authorize(self, request: Request) -> Response:
        try:
            form = await _read_form(request) if request.method == "POST" else []
        except FormError as exc:
            return _page(exc.status, "Requête refusée", html.escape(str(exc)))
        source = form if request.method == "POST" else list(request.query_params.multi_items())
        params = [(k, v) for k, v in source if k in AUTHORIZATION_PARAMETERS]
        oauth = HttpRequest(request.method, str(request.url), request.headers, params, [])
        try:
            grant = await asyncio.to_thread(self.provider.get_consent_grant, oauth)
        except OAuth2Error as error:
            return await self._authorization_error(oauth, error)
        if request.method == "GET" or not dict(form).get("method"):
            return _login_page(params, _peer_certificate(request) is not None)
        result = await self._login(request, dict(form), oauth)
        if result.subject is None:
            return _login_page(params, _peer_certificate(request) is not None, refused=True)
        reply = await asyncio.to_thread(
            self.provider.create_authorization_response, oauth, result.subject, grant
        )
        return _send(reply)

    async def _login(
        self, request: Request, form: dict[str, str], oauth: HttpRequest
    ) -> LoginResult:
        peer = request.client.host if request.client else "?"
        if form.get("method") == "certificate":
            der = _peer_certificate(request)
            result = await asyncio.to_thread(self.people.certificate_login, der)
        else:
            result = await self.people.password_login(
                form.get("login", ""), form.get("password", ""), form.get("code", ""), peer
            )
        requested = oauth.payload.data.get("acr_values", "").split()
        if result.subject is not None and not meets(result.subject.acr, requested):
            result = LoginResult(None, LoginFailure.LEVEL_TOO_LOW, result.who)
        client_id = oauth.payload.data.get("client_id", "")
        await asyncio.to_thread(self._audit_login, result, client_id, peer)
        return result

    def _audit_login(self, result: LoginResult, client_id: str, peer: str) -> None:
        ctx = self.provider.ctx
        if result.subject is None:
            reason = result.failure.value if result.failure else "unknown"
            ctx.record(
                AuditEvent.OIDC_LOGIN_FAILED,
                result.who[:320] or peer,
                client_id,
                peer=peer,
                reason=reason,
                detail=result.detail,
            )
            return
        ctx.record(
            AuditEvent.OIDC_LOGIN_SUCCEEDED,
            result.subject.id_nat,
            client_id,
            peer=peer,
            acr=result.subject.acr,
            amr=list(result.subject.amr),
            who=result.who,
        )

    async def _authorization_error(self, oauth: HttpRequest, error: OAuth2Error) -> Response:
        """RFC 6749 §4.1.2.1: redirect the error to the client only once its redirect URI is
        known to be registered; otherwise tell the person, never redirect."""
        await asyncio.to_thread(
            self.provider.ctx.record,
            AuditEvent.OIDC_REFUSED,
            "anonymous",
            oauth.payload.data.get("client_id", "")[:200],
            endpoint="authorize",
            error=error.error,
        )
        if getattr(error, "redirect_uri", None):
            return _send(self.provider.handle_error_response(oauth, error))
        text = html.escape(error.description or error.error)
        return _page(400, "Demande d'autorisation invalide", text)

    # -- token endpoints -------------------------------------------------------------------------
    async def token(self, request: Request) -> Response:
        return await self._form_endpoint(request, self.provider.create_token_response)

    async def revoke(self, request: Request) -> Response:
        return await self._endpoint(request, "revocation")

    async def introspect(self, request: Request) -> Response:
        return await self._endpoint(request, "introspection")

    async def token_status(self, request: Request) -> Response:
        return await self._endpoint(request, "token_status")

    async def _endpoint(self, request: Request, name: str) -> Response:
        def run(oauth: HttpRequest) -> Reply:
            reply: Reply = self.provider.create_endpoint_response(name, oauth)
            return reply

        return await self._form_endpoint(request, run)

    async def _form_endpoint(
        self, request: Request, run: Callable[[HttpRequest], Reply]
    ) -> Response:
        try:
            form = await _read_form(request)
        except FormError as exc:
            return JSONResponse(
                {"error": "invalid_request", "error_description": str(exc)}, exc.status
            )
        oauth = HttpRequest("POST", str(request.url), request.headers, [], form)
        reply = await asyncio.to_thread(run, oauth)
        if reply.status >= 400:
            error = reply.body.get("error", "") if isinstance(reply.body, dict) else ""
            await asyncio.to_thread(
                self.provider.ctx.record,
                AuditEvent.OIDC_REFUSED,
                dict(form).get("client_id", "")[:200] or "anonymous",
                request.url.path,
                error=error,
                peer=request.client.host if request.client else "?",
            )
        return _send(reply)

    # -- userinfo (OIDC Core §5.3) ---------------------------------------------------------------
    async def userinfo(self, request: Request) -> Response:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        subject = None
        if scheme.lower() == "bearer" and token:
            subject = await asyncio.to_thread(self._token_subject, token.strip())
        if subject is None:
            # RFC 6750 §3: the challenge names the error.
            return Response(
                status_code=401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
            )
        return JSONResponse(subject.claims())

    def _token_subject(self, token: str) -> Subject | None:
        ctx = self.provider.ctx
        claims = ctx.access_claims(token)
        if claims is None:
            return None
        try:
            JWTClaimsRegistry(now=int(ctx.clock()), exp={"essential": True}).validate(claims)
        except JoseError:
            return None
        found = ctx.state.find_access_token(str(claims.get("jti")))
        if found is None or found.revoked or found.expired:
            return None
        return found.subject


# -- helpers ------------------------------------------------------------------------------------


async def _read_form(request: Request) -> list[tuple[str, str]]:
    """An ``application/x-www-form-urlencoded`` body (RFC 6749 Appendix B), size-bounded."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise FormError(415, "the body must be application/x-www-form-urlencoded")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise FormError(413, "the request body is too large")
    try:
        return parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=64)
    except (UnicodeDecodeError, ValueError):
        raise FormError(400, "the request body is not a valid form") from None


def _peer_certificate(request: Request) -> bytes | None:
    state = request.scope.get("state") or {}
    der = state.get(PEER_CERTIFICATE)
    return der if isinstance(der, bytes) else None


def _send(reply: Reply) -> Response:
    headers = dict(reply.headers)
    if isinstance(reply.body, dict):
        return JSONResponse(reply.body, reply.status, headers)
    return Response(reply.body or "", reply.status, headers)


_STYLE = (
    "body{font-family:sans-serif;max-width:36em;margin:2em auto;padding:0 1em}"
    "fieldset{margin:1em 0;padding:1em}label{display:block;margin:.5em 0}"
    "input[type=text],input[type=password]{width:100%}.refused{color:#a00}"
)


def _page(status: int, title: str, body_html: str) -> HTMLResponse:
    text = (
        f'<!doctype html><html lang="fr"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{_STYLE}</style></head><body><h1>{title}</h1>{body_html}</body></html>"
    )
    return HTMLResponse(text, status)


def _login_page(
    params: Sequence[tuple[str, str]], has_certificate: bool, *, refused: bool = False
) -> HTMLResponse:
    hidden = "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">' for k, v in params
    )
    login_hint = html.escape(dict(params).get("login_hint", ""))
    refusal = (
        '<p class="refused" role="alert">Connexion refusée : identifiant, mot de passe, code '
        "ou certificat incorrect, ou niveau d'authentification insuffisant.</p>"
        if refused
        else ""
    )
    certificate = (
        '<button type="submit" name="method" value="certificate">Se connecter avec ma carte '
        "(certificat présenté)</button>"
        if has_certificate
        else "<p>Aucun certificat client n'a été présenté : insérez votre carte CPS ou "
        "choisissez votre certificat dans le navigateur, puis rechargez la page.</p>"
    )
    body = (
        "<p>Fournisseur d'identité local, de test, qui tient le rôle de Pro Santé Connect.</p>"
        f"{refusal}"
        f'<form method="post">{hidden}<fieldset><legend>Carte CPS</legend>{certificate}'
        "</fieldset></form>"
        f'<form method="post">{hidden}<fieldset><legend>Mot de passe et code à usage unique'
        "</legend>"
        f'<label>Identifiant (adresse) <input type="text" name="login" value="{login_hint}" '
        'autocomplete="username" required></label>'
        '<label>Mot de passe <input type="password" name="password" '
        'autocomplete="current-password" required></label>'
        '<label>Code (application d\'authentification) <input type="text" name="code" '
        'inputmode="numeric" autocomplete="one-time-code" pattern="[0-9]{6}"></label>'
        '<button type="submit" name="method" value="password">Se connecter</button>'
        "</fieldset></form>"
    )
    return _page(403 if refused else 200, "Connexion", body)
