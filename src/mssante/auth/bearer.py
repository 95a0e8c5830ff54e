"""Access tokens as mail credentials: SASL XOAUTH2 / OAUTHBEARER logins (docs/oidc.md).

The MSSanté client référentiel (2023) asks mail clients to log in with a Pro Santé Connect
access token (BRIEF §5). :class:`BearerValidator` decides whether a token opens a login:

1. the token is a JWT signed by the configured issuer (RS256; keys from its JWKS, fetched over
   HTTPS, cached, fetched again when a token names an unknown ``kid``), of type ``at+jwt``
   (RFC 9068 §4);
2. ``iss`` equals the configured issuer (a token of another issuer is refused), ``aud`` holds
   the configured audience, ``exp``/``nbf``/``iat`` hold within the clock skew (RFC 7519 §4.1),
   ``acr`` is an accepted level;
3. when the mail server has credentials at the issuer, the issuer confirms the token is
   active (RFC 7662): a revoked token is refused at once;
4. ``sub`` is a professional's idNat, and the login the client named (XOAUTH2 ``user=``, the
   OAUTHBEARER authzid) is one of that professional's accounts.

Every attempt is audited as ``auth.login_succeeded`` / ``auth.login_failed`` with method
``oidc``, like the other logins (docs/auth.md). Tokens are never stored, logged or audited: a
session keeps the token's ``jti`` only, and :meth:`BearerValidator.is_still_valid` asks the
issuer about that ``jti`` (IMAP calls it during long IDLE sessions), so that revoking a token or
its refresh token ends the sessions that used it.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import httpx
from joserfc import jws, jwt
from joserfc.errors import ExpiredTokenError, InvalidClaimError, JoseError, MissingClaimError
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry
from sqlalchemy import Row, select

from mssante.audit.events import AuditEvent, AuditRecord, AuditSink
from mssante.auth.revocation import Credential, Grounds, note_login, note_refusal
from mssante.auth.service import MAX_LOGIN_LENGTH, AuthProtocol
from mssante.config import OidcSettings, Settings
from mssante.errors import ConfigError
from mssante.store.db import Database
from mssante.store.models import Account, Professional

ALGORITHMS = ("RS256", "PS256", "ES256")  # asymmetric only: never "none" nor a shared secret
ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})  # RFC 9068 §2.1
JWKS_MAX_AGE = 3600.0  # seconds a fetched JWKS is used before it is fetched again
JWKS_MIN_INTERVAL = 10.0  # an unknown kid fetches the JWKS again at most this often
STATUS_GRACE = 300.0  # issuer unreachable: a session confirmed this recently goes on
MAX_TOKEN_BYTES = 8192
MAX_RESPONSE_BYTES = 1 << 20
MAX_SESSIONS_REMEMBERED = 100_000
METHOD = "oidc"


class BearerFailure(StrEnum):
    """Why a token did not open a login: for the audit log, never for the client."""

    MALFORMED = "malformed_token"
    WRONG_TYPE = "wrong_token_type"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    WRONG_ISSUER = "wrong_issuer"
    WRONG_AUDIENCE = "wrong_audience"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    MISSING_CLAIM = "missing_claim"
    ACR_REFUSED = "acr_refused"
    INACTIVE = "inactive"  # the issuer says the token was revoked (RFC 7662)
    ISSUER_UNREACHABLE = "issuer_unreachable"
    UNKNOWN_PROFESSIONAL = "unknown_professional"
    LOGIN_NOT_OWNED = "login_not_owned"
    AMBIGUOUS_LOGIN = "login_required"  # several accounts and the client named none
    ACCOUNT_DISABLED = "account_disabled"


class BearerError(Exception):
    def __init__(self, failure: BearerFailure, detail: str = "") -> None:
        super().__init__(failure.value)
        self.failure = failure
        self.detail = detail


@dataclass(frozen=True)
class TokenClaims:
    """What a verified access token says (RFC 9068 §2.2)."""

    sub: str
    jti: str
    acr: str
    client_id: str
    scope: str
    issued_at: int
    expires_at: int


@dataclass(frozen=True)
class BearerLogin:
    """A login opened by a token: the account, and the token's id for later checks."""

    account_id: int
    login: str
    id_nat: str
    acr: str
    token_id: str  # the token's jti: what is_still_valid() takes
    client_id: str
    expires_at: int

    @property
    def grounds(self) -> Grounds:
        """What a session opened by this token rests on (auth/revocation.py)."""
        return frozenset(
            {
                Credential.account(self.account_id),
                Credential.oidc_token(self.account_id, self.token_id),
            }
        )


@dataclass(frozen=True)
class _Issuer:
    jwks_uri: str
    introspection_endpoint: str | None
    status_endpoint: str | None


@dataclass(frozen=True)
class _Attempt:
    login: str | None
    peer: str
    protocol: AuthProtocol


class BearerValidator:
    """Validates access tokens against the configured issuer; one per process."""

    def __init__(
        self,
        settings: OidcSettings,
        audit: AuditSink,
        *,
        db: Database,
        ca_files: Sequence[Path] = (),
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not settings.issuer:
            raise ConfigError("OIDC logins need [oidc] issuer")
        self.settings = settings
        self.issuer = settings.issuer.rstrip("/")
        self.audit = audit
        self.db = db
        self.clock = clock
        self._tls = _tls_context(ca_files)
        self._transport = transport
        self._secret = _read_secret(settings.client_secret_file) if settings.client_id else None
        self._issuer_info: _Issuer | None = None
        self._jwks: KeySet | None = None
        self._jwks_at = float("-inf")
        self._fetch_lock = asyncio.Lock()
        self._confirmed: dict[str, float] = {}  # jti -> when the issuer last said "active"
        self._expiry: dict[str, int] = {}  # jti -> exp, for issuers without a status endpoint

    @classmethod
    def from_settings(cls, settings: Settings, db: Database, audit: AuditSink) -> BearerValidator:
        """The issuer's HTTPS certificate is checked against the system's roots and the PKI's."""
        anchors = [*settings.pki.trust_anchors, *settings.pki.intermediates]
        return cls(settings.oidc, audit, db=db, ca_files=anchors)

    # -- logins ----------------------------------------------------------------------------------
    async def authenticate(
        self, token: str, login: str | None, *, peer: str, protocol: AuthProtocol | str
    ) -> BearerLogin | None:
        """A login for ``login`` (or the professional's only account) with ``token``, or None.
        Every attempt is audited; the client must get one undifferentiated refusal."""
        attempt = _Attempt(login.strip().lower() if login else None, peer, AuthProtocol(protocol))
        claims: TokenClaims | None = None
        try:
            claims = await self.verify(token)
            await self._check_active(token)
            result = await asyncio.to_thread(self._account_for, claims, attempt.login)
        except BearerError as exc:
            await self._audit_failure(attempt, claims, exc)
            note_refusal()
            return None
        self._remember(claims)
        note_login(result.grounds)  # for the door that registers the session
        await self._audit(AuditEvent.LOGIN_SUCCEEDED, result.login, _context(attempt, claims))
        return result

    async def verify(self, token: str) -> TokenClaims:
        """Signature, type, issuer, audience, dates and level (no database, no audit)."""
        if len(token) > MAX_TOKEN_BYTES:
            raise BearerError(BearerFailure.MALFORMED, "token too long")
        header = _header(token)
        key = await self._key(header.get("kid"))
        try:
            decoded = jwt.decode(token, key, algorithms=list(ALGORITHMS))
        except JoseError as exc:
            raise BearerError(BearerFailure.BAD_SIGNATURE, type(exc).__name__) from None
        return self._check_claims(dict(decoded.claims))

    async def exchange_code(
        self, code: str, *, client_id: str, redirect_uri: str, verifier: str
    ) -> dict[str, Any]:
        """The tokens for an authorization code (RFC 6749 §4.1.3, with the PKCE verifier of
        RFC 7636 §4.5), for a public client such as the webmail: no client secret is sent."""
        endpoint = self.settings.token_endpoint or f"{self.issuer}/token"
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "client_id": client_id,
            "code_verifier": verifier,
        }
        return await self._request("POST", endpoint, form, authenticate=False)

    async def is_still_valid(self, token_id: str) -> bool:
        """Whether a session opened with the token ``token_id`` (its jti) may go on.

        With an issuer offering a token status endpoint (ours: ``mssante_token_status_endpoint``
        in its discovery document) and credentials there, the issuer decides: the token and
        its grant not revoked, and the token or the grant's refresh token still valid. If the
        issuer cannot be reached, a session confirmed in the last :data:`STATUS_GRACE` seconds
        goes on. Without such an endpoint, the session lasts until the token expires."""
        try:
            issuer = await self._issuer()
        except BearerError:
            issuer = None
        if issuer is None or issuer.status_endpoint is None or self._secret is None:
            expiry = self._expiry.get(token_id)
            alive = expiry is not None and self.clock() < expiry + self.settings.clock_skew
        else:
            alive = await self._ask_status(issuer.status_endpoint, token_id)
        if not alive:
            self._forget(token_id)
            await self._audit(AuditEvent.OIDC_SESSION_ENDED, token_id, {"jti": token_id})
        return alive

    # -- claims ----------------------------------------------------------------------------------
    def _check_claims(self, claims: dict[str, Any]) -> TokenClaims:
        if claims.get("iss") != self.issuer:
            raise BearerError(BearerFailure.WRONG_ISSUER, str(claims.get("iss"))[:200])
        audience = claims.get("aud")
        audiences = [audience] if isinstance(audience, str) else audience
        if not isinstance(audiences, list) or self.settings.audience not in audiences:
            raise BearerError(BearerFailure.WRONG_AUDIENCE)
        self._check_dates(claims)
        acr = claims.get("acr")
        if acr not in self.settings.accepted_acr:
            raise BearerError(BearerFailure.ACR_REFUSED, str(acr)[:40])
        return TokenClaims(
            sub=str(claims["sub"]),
            jti=str(claims["jti"]),
            acr=str(acr),
            client_id=str(claims.get("client_id", claims.get("azp", ""))),
            scope=str(claims.get("scope", "")),
            issued_at=int(claims["iat"]),
            expires_at=int(claims["exp"]),
        )

    def _check_dates(self, claims: dict[str, Any]) -> None:
        """RFC 7519 §4.1.4-6 with the configured leeway; sub, jti, iat are required too."""
        registry = JWTClaimsRegistry(
            now=int(self.clock()),
            leeway=self.settings.clock_skew,
            exp={"essential": True},
            iat={"essential": True},
            sub={"essential": True},
            jti={"essential": True},
        )
        try:
            registry.validate(claims)
        except ExpiredTokenError:
            raise BearerError(BearerFailure.EXPIRED) from None
        except MissingClaimError as exc:
            raise BearerError(BearerFailure.MISSING_CLAIM, str(exc)) from None
        except InvalidClaimError as exc:
            raise BearerError(BearerFailure.NOT_YET_VALID, exc.claim) from None

    # -- accounts --------------------------------------------------------------------------------
    def _account_for(self, claims: TokenClaims, login: str | None) -> BearerLogin:
        """The professional ``sub`` names must own ``login`` (or have exactly one account)."""
        with self.db.session() as session:
            rows = session.execute(
                select(Account.id, Account.login, Account.disabled)
                .join(Professional, Account.professional_id == Professional.id)
                .where(Professional.id_nat == claims.sub)
            ).all()
        if not rows:
            raise BearerError(BearerFailure.UNKNOWN_PROFESSIONAL)
        row = _pick(rows, login)
        return BearerLogin(
            row.id,
            row.login,
            claims.sub,
            claims.acr,
            claims.jti,
            claims.client_id,
            claims.expires_at,
        )

    # -- the issuer ------------------------------------------------------------------------------
    async def _issuer(self) -> _Issuer:
        """The issuer's metadata (OpenID Connect Discovery 1.0 §4), fetched once."""
        if self._issuer_info is not None:
            return self._issuer_info
        needs_discovery = not self.settings.jwks_url or self._secret is not None
        if not needs_discovery:
            self._issuer_info = _Issuer(self.settings.jwks_url, None, None)
            return self._issuer_info
        document = await self._get_json(f"{self.issuer}/.well-known/openid-configuration")
        # Discovery §4.3: the issuer in the document must be exactly the one asked for.
        if document.get("issuer") != self.issuer:
            raise BearerError(BearerFailure.ISSUER_UNREACHABLE, "discovery names another issuer")
        self._issuer_info = _Issuer(
            self.settings.jwks_url or str(document["jwks_uri"]),
            _optional_url(document.get("introspection_endpoint")),
            _optional_url(document.get("mssante_token_status_endpoint")),
        )
        return self._issuer_info

    async def _key(self, kid: Any) -> KeySet:
        """The JWKS holding ``kid``: cached, fetched again when stale or when ``kid`` is new
        (the issuer rotated its key), at most every :data:`JWKS_MIN_INTERVAL` seconds."""
        async with self._fetch_lock:
            now = self.clock()
            stale = now - self._jwks_at > JWKS_MAX_AGE
            unknown = self._jwks is None or not _has_kid(self._jwks, kid)
            if stale or (unknown and now - self._jwks_at > JWKS_MIN_INTERVAL):
                issuer = await self._issuer()
                document = await self._get_json(issuer.jwks_uri)
                try:
                    self._jwks = KeySet.import_key_set(document)  # type: ignore[arg-type]
                except (JoseError, ValueError, KeyError, TypeError):
                    raise BearerError(BearerFailure.ISSUER_UNREACHABLE, "bad JWKS") from None
                self._jwks_at = now
        if self._jwks is None or not _has_kid(self._jwks, kid):
            raise BearerError(BearerFailure.UNKNOWN_KEY, str(kid)[:80])
        return self._jwks

    async def _check_active(self, token: str) -> None:
        """RFC 7662 §2: ask the issuer whether the token is active (it may be revoked)."""
        if self._secret is None:
            return
        issuer = await self._issuer()
        if issuer.introspection_endpoint is None:
            return
        form = {"token": token, "token_type_hint": "access_token"}
        answer = await self._post_json(issuer.introspection_endpoint, form)
        if answer.get("active") is not True:
            raise BearerError(BearerFailure.INACTIVE)

    async def _ask_status(self, endpoint: str, token_id: str) -> bool:
        try:
            answer = await self._post_json(endpoint, {"jti": token_id})
        except BearerError as exc:
            last = self._confirmed.get(token_id)
            await self._audit(
                AuditEvent.OIDC_ISSUER_UNREACHABLE, self.issuer, {"detail": exc.detail}
            )
            return last is not None and self.clock() - last < STATUS_GRACE
        if answer.get("active") is True:
            self._confirmed[token_id] = self.clock()
            return True
        return False

    async def _get_json(self, url: str) -> dict[str, Any]:
        return await self._request("GET", url, None)

    async def _post_json(self, url: str, form: dict[str, str]) -> dict[str, Any]:
        return await self._request("POST", url, form)

    async def _request(
        self,
        method: str,
        url: str,
        form: dict[str, str] | None,
        *,
        authenticate: bool = True,
    ) -> dict[str, Any]:
        secret = self._secret if authenticate else None
        auth = (self.settings.client_id, secret) if form is not None and secret else None
        try:
            async with httpx.AsyncClient(
                verify=self._tls,
                timeout=self.settings.http_timeout,
                transport=self._transport,
                follow_redirects=False,
            ) as client:
                response = await client.request(method, url, data=form, auth=auth)
        except httpx.HTTPError as exc:
            raise BearerError(BearerFailure.ISSUER_UNREACHABLE, type(exc).__name__) from None
        if response.status_code != 200 or len(response.content) > MAX_RESPONSE_BYTES:
            raise BearerError(BearerFailure.ISSUER_UNREACHABLE, f"HTTP {response.status_code}")
        try:
            data = response.json()
        except ValueError:
            raise BearerError(BearerFailure.ISSUER_UNREACHABLE, "not JSON") from None
        if not isinstance(data, dict):
            raise BearerError(BearerFailure.ISSUER_UNREACHABLE, "not a JSON object")
        return data

    # -- bookkeeping -----------------------------------------------------------------------------
    def _remember(self, claims: TokenClaims) -> None:
        if len(self._expiry) >= MAX_SESSIONS_REMEMBERED:
            now = self.clock()
            for jti in [j for j, exp in self._expiry.items() if exp < now]:
                self._forget(jti)
        self._expiry[claims.jti] = claims.expires_at
        self._confirmed[claims.jti] = self.clock()

    def _forget(self, token_id: str) -> None:
        self._expiry.pop(token_id, None)
        self._confirmed.pop(token_id, None)

    async def _audit_failure(
        self, attempt: _Attempt, claims: TokenClaims | None, exc: BearerError
    ) -> None:
        context = _context(attempt, claims)
        context["reason"] = exc.failure.value
        if exc.detail:
            context["detail"] = exc.detail
        who = attempt.login or (claims.sub if claims else "") or attempt.peer
        await self._audit(AuditEvent.LOGIN_FAILED, who[:MAX_LOGIN_LENGTH], context)

    async def _audit(self, event: AuditEvent, who: str, context: dict[str, Any]) -> None:
        record = AuditRecord(event, actor=who, target=who, context=context)
        await asyncio.to_thread(self.audit.record, record)


def _pick(rows: Sequence[Row[int, str, bool]], login: str | None) -> Row[int, str, bool]:
    """The named login among the professional's accounts, or their only usable one."""
    if login is None:
        usable = [r for r in rows if not r.disabled]
        if len(usable) != 1:
            raise BearerError(BearerFailure.AMBIGUOUS_LOGIN)
        return usable[0]
    for row in rows:
        if row.login == login:
            if row.disabled:
                raise BearerError(BearerFailure.ACCOUNT_DISABLED)
            return row
    raise BearerError(BearerFailure.LOGIN_NOT_OWNED)


def _context(attempt: _Attempt, claims: TokenClaims | None) -> dict[str, Any]:
    context: dict[str, Any] = {
        "protocol": attempt.protocol.value,
        "peer": attempt.peer,
        "method": METHOD,
    }
    if claims is not None:
        context |= {"id_nat": claims.sub, "acr": claims.acr, "jti": claims.jti}
        context["client_id"] = claims.client_id
    return context


def _header(token: str) -> dict[str, Any]:
    """The JOSE header, read before the signature is checked only to pick the key and refuse
    what is not an access token (RFC 9068 §4: ``typ`` must be ``at+jwt``)."""
    try:
        header = dict(jws.extract_compact(token.encode("ascii")).protected)
    except (JoseError, ValueError, UnicodeEncodeError):
        raise BearerError(BearerFailure.MALFORMED) from None
    if str(header.get("typ", "")).lower() not in ACCESS_TOKEN_TYPES:
        raise BearerError(BearerFailure.WRONG_TYPE, str(header.get("typ"))[:40])
    if header.get("alg") not in ALGORITHMS:
        raise BearerError(BearerFailure.MALFORMED, "algorithm not allowed")
    return header


def _has_kid(keys: KeySet, kid: Any) -> bool:
    return any(key.kid == kid for key in keys.keys) if kid else len(keys.keys) == 1


def _optional_url(value: Any) -> str | None:
    return value if isinstance(value, str) and value.startswith("https://") else None


def _tls_context(ca_files: Sequence[Path]) -> ssl.SSLContext:
    """The system's roots plus the PKI's anchors (IGC-Santé, or the test PKI); TLS 1.2+."""
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    for path in ca_files:
        context.load_verify_locations(cafile=str(path))
    return context


def _read_secret(path: Path | None) -> str:
    if path is None:
        raise ConfigError("[oidc] client_id is set: set client_secret_file too")
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except OSError:
        raise ConfigError(f"cannot read the OIDC client secret file {path}") from None
    if not secret:
        raise ConfigError(f"the OIDC client secret file {path} is empty")
    return secret
