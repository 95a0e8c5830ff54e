"""The provider's OAuth 2.0 / OpenID Connect engine, made of authlib's server pieces.

* authorization code grant (RFC 6749 §4.1) for public clients, with PKCE S256 required
  (RFC 7636; RFC 9700 §2.1.1), and the OpenID Connect code flow (Core §3.1: the ID token);
* refresh token grant (RFC 6749 §6) with rotation: every refresh gives a new refresh token and
  retires the old one; an old one coming back revokes the grant (RFC 9700 §4.14.2);
* access tokens as JWTs (RFC 9068): ``iss``, ``sub`` = idNat, ``aud``, ``exp``, ``iat``,
  ``jti``, ``client_id``, ``scope``, ``acr``, ``amr``, ``auth_time``, identity claims;
* revocation (RFC 7009), introspection (RFC 7662), and a session status endpoint by ``jti``
  for mail servers that keep no token (see docs/oidc.md).

authlib is synchronous and framework-neutral: :class:`HttpRequest` carries what the web layer
read, and :meth:`Provider.handle_response` returns a :class:`Reply` the web layer sends.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from authlib.common.security import generate_token  # type: ignore[import-untyped]
from authlib.oauth2.rfc6749 import (  # type: ignore[import-untyped]
    AuthorizationServer,
    InvalidGrantError,
    InvalidRequestError,
    OAuth2Payload,
    OAuth2Request,
    grants,
)
from authlib.oauth2.rfc6749.endpoint import Endpoint  # type: ignore[import-untyped]
from authlib.oauth2.rfc7009 import RevocationEndpoint  # type: ignore[import-untyped]
from authlib.oauth2.rfc7636 import CodeChallenge  # type: ignore[import-untyped]
from authlib.oauth2.rfc7662 import IntrospectionEndpoint  # type: ignore[import-untyped]
from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator  # type: ignore[import-untyped]
from authlib.oidc.core.grants import OpenIDCode  # type: ignore[import-untyped]
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from mssante.audit.events import AuditEvent, AuditRecord, AuditSink
from mssante.config import OidcSettings
from mssante.oidc.keys import ALGORITHM
from mssante.oidc.models import Client, GrantToken, Subject, TokenKind
from mssante.oidc.state import NewCode, StateStore

REFRESH_TOKEN_BYTES = 48


@dataclass(frozen=True)
class Reply:
    """What an endpoint answers: status, body (a dict is sent as JSON), headers."""

    status: int
    body: Any
    headers: Sequence[tuple[str, str]] = ()


class _Payload(OAuth2Payload):  # type: ignore[misc]
    def __init__(self, pairs: Sequence[tuple[str, str]]) -> None:
        self._datalist: defaultdict[str, list[str]] = defaultdict(list)
        for key, value in pairs:
            self._datalist[key].append(value)
        self._data = {key: values[0] for key, values in self._datalist.items()}

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> defaultdict[str, list[str]]:
        return self._datalist


class HttpRequest(OAuth2Request):  # type: ignore[misc]
    """An HTTP request as authlib wants it: the query and the form body already read.

    RFC 6749 §3.1 and §3.2: the authorization endpoint takes its parameters from the query (or
    a form POST), the token endpoint from an ``application/x-www-form-urlencoded`` body."""

    def __init__(
        self,
        method: str,
        uri: str,
        headers: Mapping[str, str],
        query: Sequence[tuple[str, str]],
        form: Sequence[tuple[str, str]],
    ) -> None:
        super().__init__(method, uri, headers=headers)
        self._args = dict(query)
        self._form = dict(form)
        self.payload = _Payload([*query, *form])
        self.grant_id: str | None = None  # set when a code is used or a refresh token rotated

    @property
    def args(self) -> dict[str, str]:
        return self._args

    @property
    def form(self) -> dict[str, str]:
        return self._form


@dataclass
class ProviderContext:
    """What the grants and endpoints share."""

    settings: OidcSettings
    issuer: str
    keys: KeySet
    clients: Mapping[str, Client]
    state: StateStore
    audit: AuditSink
    clock: Callable[[], float] = time.time

    def record(self, event: AuditEvent, actor: str, target: str, **context: Any) -> None:
        self.audit.record(AuditRecord(event, actor=actor, target=target, context=context))

    def access_claims(self, token: str) -> dict[str, Any] | None:
        """The claims of an access token this provider signed, if it did; else None."""
        try:
            decoded = jwt.decode(token, self.keys, algorithms=[ALGORITHM])
        except (JoseError, ValueError):
            return None
        claims = dict(decoded.claims)
        if decoded.header.get("typ") != "at+jwt" or claims.get("iss") != self.issuer:
            return None
        return claims

    def find_token(self, token: str, hint: str | None) -> GrantToken | None:
        """A token as given to revocation or introspection: an access token (JWT) or a refresh
        token. The hint only orders the lookups (RFC 7009 §2.1, RFC 7662 §2.1)."""
        order = [TokenKind.ACCESS, TokenKind.REFRESH]
        if hint == TokenKind.REFRESH:
            order.reverse()
        for kind in order:
            found = self._find(kind, token)
            if found is not None:
                return found
        return None

    def _find(self, kind: TokenKind, token: str) -> GrantToken | None:
        if kind is TokenKind.REFRESH:
            return self.state.find_refresh_token(token)
        claims = self.access_claims(token)
        jti = claims.get("jti") if claims else None
        return self.state.find_access_token(jti) if isinstance(jti, str) else None


# -- the server ----------------------------------------------------------------------------------


class Provider(AuthorizationServer):  # type: ignore[misc]
    def __init__(self, ctx: ProviderContext) -> None:
        super().__init__(scopes_supported=["openid", "scope_all"])
        self.ctx = ctx
        self.register_token_generator("default", AccessTokens(ctx))
        self.register_grant(CodeGrant, [Pkce(required=True), OpenIdCode(ctx)])
        self.register_grant(RefreshGrant)
        self.register_endpoint(Revocation(self))
        self.register_endpoint(Introspection(self))
        self.register_endpoint(TokenStatus(self))

    def query_client(self, client_id: str) -> Client | None:
        return self.ctx.clients.get(client_id)

    def save_token(self, token: dict[str, Any], request: HttpRequest) -> None:
        """Keep the access token's jti and the refresh token's digest, never the tokens."""
        claims = self.ctx.access_claims(token["access_token"]) or {}
        grant_id = request.grant_id
        assert grant_id is not None and claims, "a token is issued only inside a grant"
        self.ctx.state.save_access_token(claims["jti"], grant_id, claims["iat"], claims["exp"])
        if "refresh_token" in token:
            lifetime = self.ctx.settings.refresh_token_lifetime
            self.ctx.state.save_refresh_token(
                token["refresh_token"], grant_id, self.ctx.clock() + lifetime
            )
        refreshed = request.refresh_token is not None
        self.ctx.record(
            AuditEvent.OIDC_TOKEN_REFRESHED if refreshed else AuditEvent.OIDC_TOKEN_ISSUED,
            claims["sub"],
            request.client.client_id,
            grant=grant_id,
            jti=claims["jti"],
            acr=claims.get("acr"),
        )

    def create_oauth2_request(self, request: HttpRequest) -> HttpRequest:
        return request

    def create_json_request(self, request: HttpRequest) -> HttpRequest:
        return request

    def handle_response(
        self, status_code: int, payload: Any, headers: Sequence[tuple[str, str]]
    ) -> Reply:
        return Reply(status_code, payload, list(headers))

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        """authlib's hooks; revocations are audited where they happen."""


# -- tokens (RFC 9068) --------------------------------------------------------------------------


class AccessTokens(JWTBearerTokenGenerator):  # type: ignore[misc]
    """RFC 9068 JWT access tokens, signed RS256, short-lived, with the professional's idNat as
    ``sub`` and the authentication level as ``acr`` (as Pro Santé Connect's tokens)."""

    def __init__(self, ctx: ProviderContext) -> None:
        super().__init__(
            ctx.issuer,
            alg=ALGORITHM,
            refresh_token_generator=lambda **_: generate_token(REFRESH_TOKEN_BYTES),
            expires_generator=lambda client, grant_type: ctx.settings.access_token_lifetime,
        )
        self.ctx = ctx

    def get_jwks(self) -> KeySet:
        return self.ctx.keys

    def get_audiences(self, client: Client, user: Subject, scope: str) -> str:
        # RFC 9068 §3: with no resource indicator, a default one: the mail servers' audience.
        return self.ctx.settings.audience

    def get_acr(self, user: Subject) -> str:
        return user.acr

    def get_amr(self, user: Subject) -> list[str]:
        return list(user.amr)

    def get_auth_time(self, user: Subject) -> int:
        return user.auth_time

    def get_extra_claims(
        self, client: Client, grant_type: str, user: Subject, scope: str
    ) -> dict[str, Any]:
        # RFC 9068 §2.2.3.1: identity claims may be carried; sub is set by the base class.
        return {k: v for k, v in user.claims().items() if k != "sub"}


# -- grants -------------------------------------------------------------------------------------


class CodeGrant(grants.AuthorizationCodeGrant):  # type: ignore[misc]
    """RFC 6749 §4.1 for public clients (no secret: RFC 6749 §2.1), PKCE required."""

    TOKEN_ENDPOINT_AUTH_METHODS = ["none"]  # noqa: RUF012 - authlib's class attribute

    @property
    def ctx(self) -> ProviderContext:
        return self.server.ctx  # type: ignore[no-any-return]

    def save_authorization_code(self, code: str, request: HttpRequest) -> None:
        data = request.payload.data
        lifetime = self.ctx.settings.authorization_code_lifetime
        self.ctx.state.save_code(
            NewCode(
                code=code,
                client_id=request.client.client_id,
                redirect_uri=data.get("redirect_uri", ""),
                scope=request.scope,
                nonce=data.get("nonce"),
                code_challenge=data["code_challenge"],
                code_challenge_method=data["code_challenge_method"],
                subject=request.user,
                expires_at=self.ctx.clock() + lifetime,
            )
        )

    def query_authorization_code(self, code: str, client: Client) -> Any:
        found = self.ctx.state.find_code(code, client.client_id)
        if found is None:
            return None
        record, used_by = found
        if used_by is not None:
            # RFC 6749 §4.1.2: a code used twice is refused, and what it gave is revoked.
            self.ctx.state.revoke_grant(used_by, "code_reused")
            self.ctx.record(
                AuditEvent.OIDC_TOKEN_REVOKED,
                record.subject.id_nat,
                client.client_id,
                grant=used_by,
                reason="code_reused",
            )
            return None
        return record

    def delete_authorization_code(self, authorization_code: Any) -> None:
        """Nothing: the code was marked used in :meth:`authenticate_user`, before tokens."""

    def authenticate_user(self, authorization_code: Any) -> Subject | None:
        """Use the code (once: a conditional UPDATE) and open the grant. Runs after the PKCE
        check, so that a stolen code without its verifier cannot burn the real one."""
        grant_id = self.ctx.state.use_code(authorization_code)
        if grant_id is None:
            return None
        self.request.grant_id = grant_id
        subject: Subject = authorization_code.subject
        return subject


class Pkce(CodeChallenge):  # type: ignore[misc]
    """RFC 7636 with S256 only, for every authorization request (RFC 9700 §2.1.1: "plain"
    must not be used, and PKCE is required of public clients)."""

    DEFAULT_CODE_CHALLENGE_METHOD = "S256"
    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]  # noqa: RUF012 - authlib's class attribute

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("PKCE is required: missing 'code_challenge'")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("PKCE: 'code_challenge_method' must be S256")
        super().validate_code_challenge(grant, redirect_uri)


class OpenIdCode(OpenIDCode):  # type: ignore[misc]
    """OpenID Connect Core §3.1.3.6: the ID token of the code flow."""

    def __init__(self, ctx: ProviderContext) -> None:
        super().__init__(require_nonce=False)
        self.ctx = ctx

    def exists_nonce(self, nonce: str, request: HttpRequest) -> bool:
        return self.ctx.state.nonce_used(request.payload.client_id, nonce)

    def resolve_client_private_key(self, client: Client) -> KeySet:
        return self.ctx.keys

    def get_client_algorithm(self, client: Client) -> str:
        return ALGORITHM

    def get_encode_header(self, client: Client) -> dict[str, str]:
        return {"alg": ALGORITHM}  # the key set adds the kid

    def get_client_claims(self, client: Client) -> dict[str, Any]:
        now = int(self.ctx.clock())
        return {
            "iss": self.ctx.issuer,
            "aud": [client.client_id],
            "iat": now,
            "exp": now + self.ctx.settings.id_token_lifetime,
        }

    def generate_user_info(self, user: Subject, scope: str) -> dict[str, Any]:
        return user.claims()


class RefreshGrant(grants.RefreshTokenGrant):  # type: ignore[misc]
    """RFC 6749 §6, rotating: a new refresh token each time, the old one retired."""

    TOKEN_ENDPOINT_AUTH_METHODS = ["none"]  # noqa: RUF012 - authlib's class attribute
    INCLUDE_NEW_REFRESH_TOKEN = True

    @property
    def ctx(self) -> ProviderContext:
        return self.server.ctx  # type: ignore[no-any-return]

    def authenticate_refresh_token(self, refresh_token: str) -> GrantToken | None:
        token = self.ctx.state.find_refresh_token(refresh_token)
        if token is None or token.revoked or token.expired:
            return None
        if token.rotated:
            self._reused(token)
            return None
        return token

    def authenticate_user(self, refresh_token: GrantToken) -> Subject | None:
        if not self.ctx.state.rotate_refresh_token(refresh_token):
            self._reused(refresh_token)  # another request used it a moment ago
            return None
        self.request.grant_id = refresh_token.grant_id
        return refresh_token.subject

    def revoke_old_credential(self, refresh_token: GrantToken) -> None:
        """Nothing: the old token was retired in :meth:`authenticate_user`, before issuing."""

    def _reused(self, token: GrantToken) -> None:
        """RFC 9700 §4.14.2: a retired refresh token means it leaked; end the whole grant."""
        self.ctx.state.revoke_grant(token.grant_id, "refresh_token_reused")
        self.ctx.record(
            AuditEvent.OIDC_TOKEN_REVOKED,
            token.subject.id_nat,
            token.client_id,
            grant=token.grant_id,
            reason="refresh_token_reused",
        )


# -- endpoints ----------------------------------------------------------------------------------


class Revocation(RevocationEndpoint):  # type: ignore[misc]
    """RFC 7009. Revoking a refresh token ends its grant: the access tokens issued under it
    too (§2.1); revoking an access token ends that token. Either way the mail sessions opened
    with them end at their next check (docs/oidc.md)."""

    CLIENT_AUTH_METHODS = ["none"]  # noqa: RUF012 - authlib's class attribute

    @property
    def ctx(self) -> ProviderContext:
        return self.server.ctx  # type: ignore[no-any-return]

    def query_token(self, token_string: str, token_type_hint: str | None) -> GrantToken | None:
        return self.ctx.find_token(token_string, token_type_hint)

    def revoke_token(self, token: GrantToken, request: HttpRequest) -> None:
        if token.kind is TokenKind.REFRESH:
            self.ctx.state.revoke_grant(token.grant_id, "revoked")
        else:
            self.ctx.state.revoke_access_token(token.key)
        self.ctx.record(
            AuditEvent.OIDC_TOKEN_REVOKED,
            token.subject.id_nat,
            token.client_id,
            grant=token.grant_id,
            kind=token.kind.value,
            reason="revoked",
        )


class Introspection(IntrospectionEndpoint):  # type: ignore[misc]
    """RFC 7662, for the mail servers (resource servers with a secret, §2.1)."""

    @property
    def ctx(self) -> ProviderContext:
        return self.server.ctx  # type: ignore[no-any-return]

    def query_token(self, token_string: str, token_type_hint: str | None) -> GrantToken | None:
        return self.ctx.find_token(token_string, token_type_hint)

    def check_permission(self, token: GrantToken, client: Client, request: HttpRequest) -> bool:
        return client.is_resource_server

    def introspect_token(self, token: GrantToken) -> dict[str, Any]:
        """RFC 7662 §2.2."""
        return {
            "active": True,
            "token_type": "Bearer" if token.kind is TokenKind.ACCESS else "refresh_token",
            "client_id": token.client_id,
            "scope": token.scope,
            "sub": token.subject.id_nat,
            "aud": self.ctx.settings.audience,
            "iss": self.ctx.issuer,
            "iat": token.issued_at,
            "exp": token.expires_at,
            "acr": token.subject.acr,
            **({"jti": token.key} if token.kind is TokenKind.ACCESS else {}),
        }


class TokenStatus(Endpoint):  # type: ignore[misc]
    """Not a standard: ``POST /token-status`` with ``jti=…``, for resource servers. Answers
    ``{"active": …}``: whether a session opened with that access token may go on (the token
    and its grant not revoked, and the token or the grant's refresh token still valid). Mail
    servers keep the ``jti`` of a session's token, never the token, so they cannot use
    RFC 7662 later in a long session."""

    ENDPOINT_NAME = "token_status"
    CLIENT_AUTH_METHODS = ["client_secret_basic"]  # noqa: RUF012 - authlib's style

    def create_endpoint_response(self, request: HttpRequest) -> tuple[int, Any, list[Any]]:
        client = self.server.authenticate_client(request, self.CLIENT_AUTH_METHODS, "token_status")
        if not client.is_resource_server:
            raise InvalidGrantError()
        jti = request.form.get("jti")
        if not jti:
            raise InvalidRequestError("missing 'jti'")
        active = self.server.ctx.state.session_active(jti)
        return 200, {"active": active}, [("Cache-Control", "no-store")]
