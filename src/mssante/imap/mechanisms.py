"""IMAP SASL mechanisms beyond PLAIN and LOGIN: XOAUTH2, OAUTHBEARER (RFC 7628) and EXTERNAL
(RFC 4422 Appendix A).

pysasl's mechanisms hand back credentials that a backend compares with a stored secret; an
access token or a TLS client certificate is not such a secret. These mechanisms only read the
client's message (with :mod:`mssante.auth.sasl`, the parser the submission server uses too):
the connection (:mod:`mssante.imap.server`) then asks the bearer validator or the certificate
logins and, on success, hands pymap a :class:`ProvenLogin`, which the login layer accepts as is.
Written here because pysasl has no OAUTHBEARER and its XOAUTH2 does not check the message's form.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pysasl.creds.server import ServerCredentials
from pysasl.exception import InvalidResponse
from pysasl.identity import Identity
from pysasl.mechanism import ChallengeResponse, ServerChallenge, ServerMechanism

from mssante.auth import sasl

XOAUTH2 = b"XOAUTH2"
OAUTHBEARER = b"OAUTHBEARER"
EXTERNAL = b"EXTERNAL"


class TokenOffered(ServerCredentials):
    """What an XOAUTH2 / OAUTHBEARER client sent: a token, not yet checked."""

    def __init__(self, mechanism: bytes, credentials: sasl.BearerCredentials) -> None:
        self.mechanism = mechanism
        self.credentials = credentials

    @property
    def authcid(self) -> str:
        return self.credentials.login or ""

    @property
    def authzid(self) -> str:
        return ""

    def verify(self, identity: Identity | None) -> bool:
        return False  # never compared with a stored secret


class CertificateOffered(ServerCredentials):
    """An EXTERNAL request: the identity is the TLS client certificate; ``authzid`` the login
    the client asks for (empty: the certificate's own account)."""

    def __init__(self, requested: str) -> None:
        self.requested = requested

    @property
    def authcid(self) -> str:
        return self.requested

    @property
    def authzid(self) -> str:
        return ""

    def verify(self, identity: Identity | None) -> bool:
        return False


@dataclass(frozen=True)
class ProvenLogin(ServerCredentials):
    """A login already proven by a token or a certificate: the login layer opens it as is."""

    account_id: int
    login: str
    method: str  # "oidc" or "certificate", as audited
    token_id: str | None = None  # the access token's jti, rechecked during the session

    @property
    def authcid(self) -> str:
        return self.login

    @property
    def authzid(self) -> str:
        return ""

    def verify(self, identity: Identity | None) -> bool:
        return False

    def __repr__(self) -> str:
        return f"ProvenLogin(login={self.login!r}, method={self.method!r})"


class _FirstResponse(ServerMechanism):
    """A mechanism whose whole client message is its first response (no SASL-IR in pymap:
    the server sends an empty challenge, ``+ ``, and reads it)."""

    def __init__(self, name: bytes, read: Callable[[bytes], ServerCredentials]) -> None:
        super().__init__(name)
        self._read = read

    def server_attempt(
        self, responses: Sequence[ChallengeResponse]
    ) -> tuple[ServerCredentials, None]:
        if not responses:
            raise ServerChallenge(b"")
        try:
            return self._read(responses[0].response), None
        except sasl.SaslError:
            raise InvalidResponse() from None


def xoauth2() -> ServerMechanism:
    return _FirstResponse(
        XOAUTH2, lambda message: TokenOffered(XOAUTH2, sasl.parse_xoauth2(message))
    )


def oauthbearer() -> ServerMechanism:
    return _FirstResponse(
        OAUTHBEARER, lambda message: TokenOffered(OAUTHBEARER, sasl.parse_oauthbearer(message))
    )


def external() -> ServerMechanism:
    return _FirstResponse(EXTERNAL, _external_request)


def _external_request(message: bytes) -> CertificateOffered:
    """RFC 4422 App. A: the message is the authorization identity, possibly empty (sent as
    ``=`` in IMAP, RFC 9051 §6.2.2, which pymap's reader already turns into b"")."""
    if len(message) > sasl.MAX_MESSAGE_BYTES:
        raise sasl.SaslError("message too long")
    try:
        requested = message.decode("utf-8").strip().lower()
    except UnicodeDecodeError:
        raise sasl.SaslError("authorization identity is not UTF-8") from None
    if any(ord(c) < 0x20 for c in requested):
        raise sasl.SaslError("control character in the authorization identity")
    return CertificateOffered(requested)
