"""What the provider knows: clients, the person behind a grant, codes and tokens.

The classes implement authlib's model interfaces (``ClientMixin``, ``AuthorizationCodeMixin``,
``TokenMixin``), so that authlib's grants and endpoints can use them as they are.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from authlib.oauth2.rfc6749 import ClientMixin, TokenMixin  # type: ignore[import-untyped]
from authlib.oidc.core import AuthorizationCodeMixin  # type: ignore[import-untyped]

from mssante.config import OidcSettings

SCOPES = ("openid", "scope_all")  # Pro Santé Connect's scopes for mail (BRIEF §5)
ACR_PASSWORD = "eidas1"  # noqa: S105 - a level name: password (and TOTP), like e-CPS
ACR_CERTIFICATE = "eidas2"  # a CPS-like card certificate
ACR_ORDER = (ACR_PASSWORD, ACR_CERTIFICATE)  # weakest first


class TokenKind(StrEnum):
    ACCESS = "access_token"
    REFRESH = "refresh_token"


def digest(secret: str) -> str:
    """SHA-256 (hex) of a high-entropy secret: codes, refresh tokens, client secrets are kept
    only this way (a random 256-bit value needs no slow hash)."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Client(ClientMixin):  # type: ignore[misc]
    """A registered client. Public clients (mail software, the webmail) use the authorization
    code flow with PKCE and no secret (RFC 6749 §2.1); resource servers (the operators' mail
    servers) authenticate with a secret and may only introspect (RFC 7662 §2.1)."""

    client_id: str
    redirect_uris: tuple[str, ...] = ()
    secret_digest: str | None = None
    client_metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def is_resource_server(self) -> bool:
        return self.secret_digest is not None

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        # RFC 6749 §3.1.2.3: with several registered URIs the request must name one.
        return self.redirect_uris[0] if len(self.redirect_uris) == 1 else None

    def get_allowed_scope(self, scope: str | None) -> str:
        if not scope:
            return " ".join(SCOPES)
        return " ".join(s for s in scope.split() if s in SCOPES)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        # RFC 6749 §3.1.2.2 and RFC 9700 §4.1.3: simple string comparison, no patterns.
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        if self.secret_digest is None:
            return False
        return hmac.compare_digest(digest(client_secret), self.secret_digest)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if self.is_resource_server:
            return method == "client_secret_basic" and endpoint in ("introspection", "token_status")
        return method == "none" and endpoint in ("token", "revocation")

    def check_response_type(self, response_type: str) -> bool:
        return not self.is_resource_server and response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return not self.is_resource_server and grant_type in (
            "authorization_code",
            "refresh_token",
        )


def clients_from(settings: OidcSettings) -> dict[str, Client]:
    public = {cid: Client(cid, tuple(uris)) for cid, uris in settings.clients.items()}
    servers = {
        cid: Client(cid, (), secret.strip().lower())
        for cid, secret in settings.resource_servers.items()
    }
    return {**public, **servers}


@dataclass(frozen=True)
class Subject:
    """The person a grant is for, as they proved themselves at /authorize.

    ``id_nat`` is the professional's national id: the ``sub`` of every token (as Pro Santé
    Connect does). ``amr`` follows RFC 8176 (``pwd``, ``otp``, ``hwk``, ``sc``)."""

    id_nat: str
    acr: str
    amr: tuple[str, ...]
    auth_time: int
    given_name: str = ""
    family_name: str = ""
    addresses: tuple[str, ...] = ()

    def get_user_id(self) -> str:
        return self.id_nat

    def claims(self) -> dict[str, Any]:
        """Identity claims for the ID token, userinfo and access tokens (OpenID Connect Core
        §5.1; RFC 9068 §2.2.3.1)."""
        out: dict[str, Any] = {"sub": self.id_nat, "preferred_username": self.id_nat}
        if self.given_name:
            out["given_name"] = self.given_name
        if self.family_name:
            out["family_name"] = self.family_name
        if self.addresses:
            out["email"] = self.addresses[0]
            out["mssante_addresses"] = list(self.addresses)
        return out

    def to_json(self) -> str:
        return json.dumps(
            {
                "id_nat": self.id_nat,
                "acr": self.acr,
                "amr": list(self.amr),
                "auth_time": self.auth_time,
                "given_name": self.given_name,
                "family_name": self.family_name,
                "addresses": list(self.addresses),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Subject:
        data = json.loads(text)
        return cls(
            data["id_nat"],
            data["acr"],
            tuple(data["amr"]),
            int(data["auth_time"]),
            data.get("given_name", ""),
            data.get("family_name", ""),
            tuple(data.get("addresses", ())),
        )


@dataclass(frozen=True)
class AuthorizationCode(AuthorizationCodeMixin):  # type: ignore[misc]
    """A code as stored (only its digest), with what the token request needs of it."""

    code_digest: str
    client_id: str
    redirect_uri: str
    scope: str
    nonce: str | None
    code_challenge: str
    code_challenge_method: str
    subject: Subject
    expires_at: float

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.subject.auth_time

    def get_acr(self) -> str:
        return self.subject.acr

    def get_amr(self) -> list[str]:
        return list(self.subject.amr)


@dataclass(frozen=True)
class GrantToken(TokenMixin):  # type: ignore[misc]
    """An access token (known by its ``jti``) or a refresh token (known by its digest), as
    the revocation and introspection endpoints see it."""

    kind: TokenKind
    key: str  # jti, or the refresh token's digest
    grant_id: str
    client_id: str
    scope: str
    subject: Subject
    issued_at: int
    expires_at: int
    revoked: bool
    expired: bool
    rotated: bool = False  # a refresh token already exchanged for a new one

    def check_client(self, client: Client) -> bool:
        return client.client_id == self.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return self.expires_at - self.issued_at

    def is_expired(self) -> bool:
        return self.expired

    def is_revoked(self) -> bool:
        return self.revoked or self.rotated

    def get_user(self) -> Subject:
        return self.subject

    def get_client_id(self) -> str:
        return self.client_id
