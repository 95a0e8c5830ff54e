"""IMAP login: the one authentication layer, then the mailbox the session opens.

LOGIN and AUTHENTICATE PLAIN/LOGIN (RFC 9051 §6.2.2-3, RFC 4616) reach :class:`StoreLogin`,
which hands the login and password to :class:`mssante.auth.service.AuthService` (protocol
``imap``): the account password or one of its app passwords (a TOTP-protected account needs an
app password), argon2id in a worker thread, never on the event loop, after the growing delay of
its throttle per login and per client address, every attempt audited there.

AUTHENTICATE XOAUTH2 / OAUTHBEARER (an OIDC access token) and EXTERNAL (the TLS client
certificate) are proven by the connection (:mod:`mssante.imap.server`) with the bearer validator
or the certificate logins, which audit them; they arrive here as a :class:`ProvenLogin`.

Authorization: the session opens the mailbox at the login's address (else the account's first
open mailbox). A SASL authorization identity (``authzid``, RFC 4616 §2) names another mailbox;
it is opened only if the account may read it (:func:`mssante.ops.folders.may_access`).

The identity carries what the session rests on (auth/revocation.py): the account and the
password, app password, token or certificate of the login, and the grant when the mailbox is
someone else's; the connection registers it, so that revoking any of them ends the session.
A TOTP-protected account logging in with its (right) main password is told to make an app
password (``NO [AUTHENTICATIONFAILED]`` with :data:`~mssante.auth.service.TWO_FACTOR_HINT`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Set
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pymap.config import IMAPConfig
from pymap.context import socket_info
from pymap.exceptions import AuthorizationFailure, InvalidAuth, NotSupportedError
from pymap.interfaces.login import IdentityInterface, LoginInterface
from pymap.interfaces.token import TokenCredentials, TokensInterface
from pymap.user import UserMetadata
from pysasl.creds.server import ServerCredentials

from mssante.audit.events import AuditEvent, AuditRecord
from mssante.auth.bearer import BearerValidator
from mssante.auth.revocation import Credential, Grounds, delegation_ground, take_login
from mssante.auth.service import AuthProtocol, AuthService
from mssante.config import MimeSettings
from mssante.imap.backend import Listings, MailboxRef, StoreSession
from mssante.imap.mechanisms import ProvenLogin
from mssante.imap.watch import FolderWatch
from mssante.ops.bus import ChangeBus
from mssante.ops.folders import AccessDenied, Caller, Folders

if TYPE_CHECKING:
    from mssante.auth.certificates import CertificateLogins

AuditFn = Callable[[AuditRecord], Awaitable[None]]


@dataclass(frozen=True)
class ImapContext:
    """What the IMAP listeners share: the operations, the login checks, the bus, the audit."""

    folders: Folders
    auth: AuthService
    bus: ChangeBus
    audit: AuditFn
    watch: FolderWatch  # the process's poll for changes made by other processes
    listings: Listings  # the messages of listed folders, shared by the sessions
    bearer: BearerValidator | None = None  # set: XOAUTH2 and OAUTHBEARER are offered
    certificates: CertificateLogins | None = None  # set: EXTERNAL is offered
    mime: MimeSettings = field(default_factory=MimeSettings)  # how deep a message is read


def peer_address() -> str:
    """The client's IP address (pymap's per-connection context variable)."""
    with contextlib.suppress(LookupError):
        ip = socket_info.get().peername_ip
        if ip is not None:
            return str(ip)
    return "?"


class _Secret:
    """A pysasl identity that keeps the password the client sent (PLAIN or LOGIN) instead of
    comparing it, so that the authentication layer checks it."""

    def __init__(self, login: str) -> None:
        self._login = login
        self.secret = ""

    @property
    def authcid(self) -> str:
        return self._login

    def compare_authcid(self, authcid: str) -> bool:
        return True

    def compare_secret(self, secret: str) -> bool:
        self.secret = secret
        return True

    def get_clear_secret(self) -> str | None:
        return None


def _password(credentials: ServerCredentials) -> str:
    secret = _Secret(credentials.authcid)
    return secret.secret if credentials.verify(secret) else ""


class _NoTokens(TokensInterface):
    """pymap's bearer tokens are not offered (XOAUTH2 with Pro Santé Connect will come)."""

    def get_login_token(
        self,
        identifier: str,
        authcid: str,
        key: bytes,
        *,
        authzid: str | None = None,
        location: str | None = None,
        expiration: datetime | None = None,
    ) -> str | None:
        return None

    def get_admin_token(
        self,
        admin_key: bytes | None,
        *,
        authzid: str | None = None,
        location: str | None = None,
        expiration: datetime | None = None,
    ) -> str | None:
        return None

    def parse(
        self, authzid: str, token: str, *, admin_keys: Set[bytes] = frozenset()
    ) -> TokenCredentials:
        raise ValueError("tokens are not accepted")


@dataclass(frozen=True)
class GroundedLogin(ProvenLogin):
    """A :class:`ProvenLogin` with what the session will rest on (the token or certificate)."""

    grounds: Grounds = field(default_factory=frozenset)


class StoreIdentity(IdentityInterface):
    """A logged-in account, the mailbox its session opens, and what the session rests on."""

    def __init__(
        self,
        ctx: ImapContext,
        config: IMAPConfig,
        caller: Caller,
        address: str,
        grounds: Grounds = frozenset(),
    ) -> None:
        self._ctx = ctx
        self._config = config
        self.caller = caller
        self.address = address
        self.grounds = grounds or frozenset({Credential.account(caller.account_id)})

    @property
    def name(self) -> str:
        return self.address

    @property
    def roles(self) -> frozenset[str]:
        return frozenset()

    @contextlib.asynccontextmanager
    async def new_session(self) -> AsyncIterator[StoreSession]:
        ref = MailboxRef(
            self._ctx.folders,
            self.caller,
            self.address,
            self._ctx.bus,
            self._ctx.watch,
            self._ctx.listings,
            self._ctx.mime,
        )
        with self._ctx.bus.watching(self.address):
            yield StoreSession(ref, self._config)

    async def new_token(self, *, expiration: datetime | None = None) -> str | None:
        return None

    async def get(self) -> UserMetadata:
        raise NotSupportedError("account data is not served over IMAP")

    async def set(self, metadata: UserMetadata) -> int | None:
        raise NotSupportedError("account data is not served over IMAP")

    async def delete(self) -> None:
        raise NotSupportedError("account data is not served over IMAP")


class StoreLogin(LoginInterface):
    def __init__(self, ctx: ImapContext, config: IMAPConfig) -> None:
        self._ctx = ctx
        self._config = config
        self._tokens = _NoTokens()

    @property
    def tokens(self) -> TokensInterface:
        return self._tokens

    async def authenticate(self, credentials: ServerCredentials) -> StoreIdentity:
        peer = peer_address()
        if isinstance(credentials, ProvenLogin):  # a token or certificate, checked already
            context = {"peer": peer, "via": "imap", "method": credentials.method}
            caller = Caller(credentials.account_id, credentials.login, context)
            grounds: Grounds = getattr(credentials, "grounds", frozenset())
            return StoreIdentity(self._ctx, self._config, caller, credentials.login, grounds)
        principal = await self._ctx.auth.check_password_async(
            credentials.authcid, _password(credentials), peer=peer, protocol=AuthProtocol.IMAP
        )
        if principal is None:
            note = take_login()
            # NO [AUTHENTICATIONFAILED], RFC 5530; the reason is audited. The hint only when
            # the main password was right on a TOTP account (docs/auth.md).
            raise InvalidAuth(note.hint) if note is not None and note.hint else InvalidAuth()
        caller = Caller(principal.account_id, principal.login, {"peer": peer, "via": "imap"})
        return StoreIdentity(self._ctx, self._config, caller, principal.login, principal.grounds)

    async def authorize(self, authenticated: IdentityInterface, authzid: str) -> StoreIdentity:
        if not isinstance(authenticated, StoreIdentity):
            raise AuthorizationFailure()
        caller, wanted = authenticated.caller, authzid.strip().lower()
        address = await self._mailbox_for(caller, wanted)
        await self._audit(
            AuditEvent.IMAP_MAILBOX_OPENED, caller.login, address, dict(caller.context)
        )
        grant = await asyncio.to_thread(self._grant_of, caller.account_id, address)
        grounds = authenticated.grounds | ({grant} if grant is not None else set())
        return StoreIdentity(self._ctx, self._config, caller, address, grounds)

    def _grant_of(self, account_id: int, address: str) -> Credential | None:
        """The delegation the session rests on when the mailbox is someone else's."""
        with self._ctx.auth.db.session() as session:
            return delegation_ground(session, account_id, address)

    async def _mailbox_for(self, caller: Caller, wanted: str) -> str:
        folders = self._ctx.folders
        try:
            address: str | None = wanted
            if not address:
                address = await asyncio.to_thread(folders.default_mailbox, caller)
            if not address:
                raise AccessDenied("this account has no open mailbox")
            return await asyncio.to_thread(folders.open, caller, address)
        except AccessDenied:
            await self._audit(
                AuditEvent.IMAP_REFUSED_ACCESS, caller.login, wanted or "-", dict(caller.context)
            )
            raise AuthorizationFailure() from None  # NO [AUTHORIZATIONFAILED]

    async def _audit(
        self, event: AuditEvent, actor: str, target: str, context: dict[str, Any]
    ) -> None:
        await self._ctx.audit(AuditRecord(event, actor=actor, target=target, context=context))
