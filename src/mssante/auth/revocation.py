"""One revocation path: what a session rests on, and ending every session when it is revoked
(docs/revocation.md).

Every door (IMAP, SMTP submission, the webmail) registers each open session here with what it
rests on — its :class:`Credential` values: the account, the password or app password, the
OIDC token, the certificate, the delegation grant — and an ``end`` coroutine of its own (IMAP:
``BYE [EXPIRED]``, RFC 5530; submission: ``421 4.7.0``, RFC 5321 §3.8; the webmail: its
server-sent-events stream closes). What ends sessions is decided here only:

- :func:`revoke` writes a row of ``revocations`` in the transaction of the action that revokes
  (app password revoked, password changed, account disabled, delegation revoked) and ends the
  webmail sessions resting on it (their rows deleted) in that same transaction;
- :class:`RevocationWatcher`, one per process, reads the new rows (``id > last seen``, one
  indexed query every ``auth.revocation_poll_seconds``, at once when this process revoked
  something) and ends the matching open sessions of :class:`SessionRegistry`. So a
  revocation made by the command line or on another node reaches this process too;
- the same watcher finds what is revoked elsewhere and records it with :func:`revoke`: OIDC
  tokens revoked at the provider (asked every ``oidc.recheck_seconds`` for the tokens of open
  sessions), certificates listed on a CRL after a refresh (``CrlCache.generation`` moved),
  delegation grants reaching their ``expires_at`` (those end without a row: each process
  compares the expiry times itself).

The login layers (:mod:`mssante.auth.service`, ``bearer``, ``certificates``) also note in the
current task's context what the login they just accepted rests on (:func:`note_login`), or the
public hint of a refusal (:func:`note_refusal`); a door whose code path does not carry the
login's details (the submission handler hands back a login name) takes it from there
(:func:`take_login`). A context variable is per task, like pymap's ``socket_info``: no state
is shared between connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import delete, event, func, or_, select, update
from sqlalchemy.orm import Session

from mssante.audit.events import SYSTEM_ACTOR, AuditEvent, AuditRecord
from mssante.audit.log import append
from mssante.logging import get_logger
from mssante.store.db import Database
from mssante.store.models import Mailbox, MailboxAccess, Revocation, WebSession, utcnow

if TYPE_CHECKING:
    from mssante.config import Settings

ANY = "*"  # the key of "any delegation of this account" (a submission session's send-as set)
LOGIN_WINDOW = 10.0  # seconds: a session registered this soon after a revocation it rests on
#                      ends at once (its login was checked before the revocation committed)
TOKEN_CHECKS_AT_ONCE = 8  # concurrent questions to the OIDC issuer
ROWS_PER_POLL = 1000


class Kind(StrEnum):
    """What a session can rest on."""

    PASSWORD = "password"  # noqa: S105 - a kind name
    APP_PASSWORD = "app_password"  # noqa: S105 - a kind name
    OIDC_TOKEN = "oidc_token"  # noqa: S105 - a kind name
    CERTIFICATE = "certificate"  # a CPS-like card or an APP organisation certificate
    DELEGATION = "delegation"  # a grant on someone else's mailbox (docs/delegation.md)
    ACCOUNT = "account"  # every session rests on its account (disabled: all end)
    DEVICE = "device"  # a paired device (reserved)
    TRUST_REFRESH = "trust_refresh"  # not a credential: "refresh CRLs and the whitelist now"


@dataclass(frozen=True)
class Credential:
    """One thing a session rests on. ``key`` names it within its kind: a credential row's id
    (password, app password), a token's ``jti``, ``SERIAL@ISSUER-DN`` for a certificate,
    ``ACCOUNT/MAILBOX`` for a delegation, the account's id for an account."""

    kind: Kind
    key: str
    account_id: int | None = field(default=None, compare=False)

    @property
    def token(self) -> str:
        """The registry's (and ``web_sessions.rests_on``'s) name of it."""
        return f"{self.kind.value}:{self.key}"

    @property
    def matches(self) -> tuple[str, ...]:
        """The tokens of the sessions its revocation ends: its own, and for a delegation the
        "any delegation" of its account's submission sessions."""
        if self.kind is Kind.DELEGATION:
            account = self.key.split("/", 1)[0]
            return (self.token, f"{Kind.DELEGATION.value}:{account}/{ANY}")
        return (self.token,)

    @classmethod
    def account(cls, account_id: int) -> Credential:
        return cls(Kind.ACCOUNT, str(account_id), account_id)

    @classmethod
    def password(cls, account_id: int, credential_id: int) -> Credential:
        return cls(Kind.PASSWORD, str(credential_id), account_id)

    @classmethod
    def app_password(cls, account_id: int, credential_id: int) -> Credential:
        return cls(Kind.APP_PASSWORD, str(credential_id), account_id)

    @classmethod
    def oidc_token(cls, account_id: int | None, jti: str) -> Credential:
        return cls(Kind.OIDC_TOKEN, jti, account_id)

    @classmethod
    def certificate(cls, account_id: int | None, serial_hex: str, issuer_dn: str) -> Credential:
        return cls(Kind.CERTIFICATE, f"{serial_hex.upper()}@{issuer_dn}", account_id)

    @classmethod
    def delegation(cls, account_id: int, mailbox_id: int | str) -> Credential:
        return cls(Kind.DELEGATION, f"{account_id}/{mailbox_id}", account_id)

    @classmethod
    def from_token(cls, token: str, account_id: int | None = None) -> Credential | None:
        kind, _, key = token.partition(":")
        try:
            return cls(Kind(kind), key, account_id) if key else None
        except ValueError:
            return None

    def certificate_serial(self) -> tuple[int, str] | None:
        """(serial, issuer DN) of a certificate credential."""
        serial, _, issuer = self.key.partition("@")
        try:
            return (int(serial, 16), issuer) if self.kind is Kind.CERTIFICATE and issuer else None
        except ValueError:
            return None


Grounds = frozenset[Credential]

_TEXTS = {  # French, then English: read by a professional in their mail client's alert
    Kind.PASSWORD: "Mot de passe change : reconnectez-vous / Password changed: log in again.",
    Kind.APP_PASSWORD: "Mot de passe d'application revoque / App password revoked.",
    Kind.OIDC_TOKEN: "Jeton revoque ou expire : reconnectez-vous / "
    "Access token revoked or expired; log in again.",
    Kind.CERTIFICATE: "Certificat revoque / Certificate revoked.",
    Kind.DELEGATION: "L'acces a cette boite a pris fin / Access to this mailbox has ended.",
    Kind.ACCOUNT: "Compte desactive / Account disabled.",
    Kind.DEVICE: "Appareil retire / Device removed.",
}


@dataclass(frozen=True)
class Ending:
    """Why an open session ends: the credential revoked, and a reason for the audit log."""

    credential: Credential
    reason: str

    @property
    def imap_code(self) -> bytes:
        """RFC 5530: NOPERM when the access control (a delegation) no longer permits it,
        else EXPIRED ("access is no longer permitted using that passphrase")."""
        return b"NOPERM" if self.credential.kind is Kind.DELEGATION else b"EXPIRED"

    @property
    def text(self) -> str:
        """Public, ASCII (RFC 3501 text, RFC 5321 §2.4)."""
        return _TEXTS.get(self.credential.kind, "Session revoquee / Session revoked.")


# -- what the login layers note for the doors ------------------------------------------------------
@dataclass(frozen=True)
class LoginNote:
    """The outcome of the last login checked in this task: what it rests on, or (refused) a
    public hint for the person ("" when the refusal must say nothing)."""

    account_id: int | None
    grounds: Grounds
    hint: str = ""


_LOGIN: ContextVar[LoginNote | None] = ContextVar("mssante_login", default=None)


def note_login(grounds: Grounds) -> None:
    account = next((c.account_id for c in grounds if c.kind is Kind.ACCOUNT), None)
    _LOGIN.set(LoginNote(account, grounds))


def note_refusal(hint: str = "") -> None:
    _LOGIN.set(LoginNote(None, frozenset(), hint))


def take_login() -> LoginNote | None:
    """The note of this task's last login, once."""
    note = _LOGIN.get()
    _LOGIN.set(None)
    return note


# -- the registry of open sessions ---------------------------------------------------------------
EndFn = Callable[[Ending], Awaitable[None]]


class OpenSession:
    """A registered session; :meth:`close` it when the connection ends."""

    def __init__(self, registry: SessionRegistry, grounds: Grounds, end: EndFn, door: str) -> None:
        self.grounds = grounds
        self.end = end
        self.door = door
        self._registry = registry

    def close(self) -> None:
        self._registry.forget(self)


class SessionRegistry:
    """The open sessions of this process, by what they rest on. Used on the event loop; only
    :meth:`poke` may be called from other threads."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._by_token: dict[str, set[OpenSession]] = {}
        self._recent: dict[str, float] = {}  # token -> when its revocation was applied here
        self._loop: asyncio.AbstractEventLoop | None = None
        self._poked: asyncio.Event | None = None
        self._ending: set[asyncio.Task[None]] = set()
        self._log = get_logger("mssante.auth.revocation")

    def open(self, grounds: Iterable[Credential], end: EndFn, *, door: str) -> OpenSession:
        self._bind_loop()
        session = OpenSession(self, frozenset(grounds), end, door)
        for credential in session.grounds:
            self._by_token.setdefault(credential.token, set()).add(session)
        late = self._revoked_lately(session.grounds)
        if late is not None:
            self._end(session, late)
        return session

    def forget(self, session: OpenSession) -> None:
        for credential in session.grounds:
            sessions = self._by_token.get(credential.token)
            if sessions is not None:
                sessions.discard(session)
                if not sessions:
                    del self._by_token[credential.token]

    def end_matching(self, credential: Credential, reason: str) -> int:
        """End every open session resting on ``credential``; how many."""
        now = self.clock()
        self._recent = {t: at for t, at in self._recent.items() if now - at < LOGIN_WINDOW}
        hit: set[OpenSession] = set()
        for token in credential.matches:
            self._recent[token] = now
            hit |= self._by_token.get(token, set())
        for session in hit:
            self._end(session, Ending(credential, reason))
        return len(hit)

    def credentials(self, kind: Kind) -> set[Credential]:
        """What the open sessions rest on, of one kind."""
        return {c for s in self._all() for c in s.grounds if c.kind is kind}

    def has(self, kind: Kind) -> bool:
        prefix = f"{kind.value}:"
        return any(token.startswith(prefix) for token in self._by_token)

    def count(self) -> int:
        return len(self._all())

    def poke(self) -> None:
        """Wake the watcher now (after a commit that revoked something); any thread."""
        loop, poked = self._loop, self._poked
        if loop is not None and poked is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(poked.set)

    async def wait(self, timeout: float) -> None:
        """Until poked, or ``timeout`` seconds."""
        self._bind_loop()
        assert self._poked is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._poked.wait(), timeout)
        self._poked.clear()

    async def drain(self) -> None:
        """Wait for the sessions being ended (tests, shutdown)."""
        while self._ending:
            await asyncio.gather(*list(self._ending), return_exceptions=True)

    def _all(self) -> set[OpenSession]:
        return {s for sessions in self._by_token.values() for s in sessions}

    def _bind_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop, self._poked = loop, asyncio.Event()

    def _revoked_lately(self, grounds: Grounds) -> Ending | None:
        now = self.clock()
        for credential in grounds:
            at = self._recent.get(credential.token)
            if at is not None and now - at < LOGIN_WINDOW:
                return Ending(credential, "revoked_during_login")
        return None

    def _end(self, session: OpenSession, ending: Ending) -> None:
        session.close()  # ended once, whatever else it rests on
        task = asyncio.get_running_loop().create_task(self._run_end(session, ending))
        self._ending.add(task)
        task.add_done_callback(self._ending.discard)

    async def _run_end(self, session: OpenSession, ending: Ending) -> None:
        try:
            await session.end(ending)
        except Exception:  # a connection already gone, say: nothing left to end
            self._log.debug("revocation.end_failed", door=session.door, reason=ending.reason)


# -- recording a revocation ----------------------------------------------------------------------
def revoke(
    db: Session,
    credential: Credential,
    reason: str,
    *,
    actor: str = SYSTEM_ACTOR,
    notify: Callable[[], None] | None = None,
) -> Revocation:
    """Record that ``credential`` no longer holds, in the caller's transaction: a
    ``revocations`` row (read by every process's watcher), the webmail sessions resting on it
    ended, the audit entry. ``notify`` runs after the commit (this process's watcher, at once).
    """
    row = Revocation(
        kind=credential.kind.value,
        account_id=credential.account_id,
        key=credential.key[:500],
        reason=reason[:100],
        at=utcnow(),
    )
    db.add(row)
    db.flush()
    ended = _end_web_sessions(db, credential)
    context = {"kind": credential.kind.value, "reason": reason, "revocation": row.id}
    if ended:
        context["web_sessions_ended"] = ended
    append(db, AuditRecord(AuditEvent.CREDENTIAL_REVOKED, actor, credential.token, context))
    if notify is not None:
        event.listen(db, "after_commit", lambda _session: notify(), once=True)
    return row


def request_trust_refresh(
    db: Session, *, actor: str, notify: Callable[[], None] | None = None
) -> None:
    """Ask every running process of the operator to refresh its CRLs and whitelist now (the
    ``mssante operator refresh-whitelist`` verb): a ``trust_refresh`` row their watchers read."""
    db.add(
        Revocation(kind=Kind.TRUST_REFRESH.value, key="", reason="refresh requested", at=utcnow())
    )
    append(db, AuditRecord(AuditEvent.TRUST_REFRESH_REQUESTED, actor, "trust", {}))
    if notify is not None:
        event.listen(db, "after_commit", lambda _session: notify(), once=True)


def _end_web_sessions(db: Session, credential: Credential) -> int:
    if credential.kind is Kind.DELEGATION:  # the session stays; it no longer reads that box
        account, _, mailbox = credential.key.partition("/")
        if account.isdigit() and mailbox.isdigit():
            address = select(Mailbox.address).where(Mailbox.id == int(mailbox)).scalar_subquery()
            db.execute(
                update(WebSession)
                .where(WebSession.account_id == int(account), WebSession.mailbox == address)
                .values(mailbox="")
            )
        return 0
    if credential.kind is Kind.ACCOUNT:
        where: Any = WebSession.account_id == int(credential.key)
    elif credential.kind is Kind.OIDC_TOKEN:
        where = or_(
            WebSession.rests_on == credential.token, WebSession.oidc_token_id == credential.key
        )
    else:
        where = WebSession.rests_on == credential.token
    result: Any = db.execute(delete(WebSession).where(where))
    return int(result.rowcount or 0)


def delegation_ground(db: Session, account_id: int, address: str) -> Credential | None:
    """What a session opened on the mailbox ``address`` rests on beyond its login: the
    account's grant there, or None for its own mailbox."""
    box = db.execute(
        select(Mailbox.id, Mailbox.owner_account_id).where(Mailbox.address == address)
    ).first()
    if box is None or box.owner_account_id == account_id:
        return None
    return Credential.delegation(account_id, box.id)


# -- the watcher -----------------------------------------------------------------------------------
class TokenStatus(Protocol):
    async def is_still_valid(self, token_id: str) -> bool: ...


class RevocationList(Protocol):
    @property
    def generation(self) -> int: ...

    def is_listed(self, issuer_dn: str, serial: int) -> bool: ...


class RevocationWatcher:
    """One per process: applies the revocations recorded anywhere to this process's open
    sessions, and records those found elsewhere (the OIDC issuer, CRLs, grants' end dates)."""

    def __init__(
        self,
        db: Database,
        sessions: SessionRegistry,
        *,
        poll_seconds: float = 1.0,
        token_seconds: float = 60.0,
        bearer: TokenStatus | None = None,
        crls: RevocationList | None = None,
        refresh_trust: Callable[[], Awaitable[Any]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.sessions = sessions
        self.poll_seconds = poll_seconds
        self.token_seconds = token_seconds
        self.bearer = bearer
        self.crls = crls
        self.refresh_trust = refresh_trust
        self.clock = clock
        self._last_id: int | None = None
        self._tokens_at = clock()
        self._crl_generation = crls.generation if crls is not None else 0
        self._grants_at = datetime.fromtimestamp(clock(), UTC)
        self._log = get_logger("mssante.auth.revocation")

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        db: Database,
        sessions: SessionRegistry,
        *,
        bearer: TokenStatus | None = None,
        crls: RevocationList | None = None,
        refresh_trust: Callable[[], Awaitable[Any]] | None = None,
    ) -> RevocationWatcher:
        """The operator's watcher: ``auth.revocation_poll_seconds``, ``oidc.recheck_seconds``."""
        return cls(
            db,
            sessions,
            poll_seconds=settings.auth.revocation_poll_seconds,
            token_seconds=settings.oidc.recheck_seconds,
            bearer=bearer,
            crls=crls,
            refresh_trust=refresh_trust,
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop`` is set. A failed round (the database away) is logged and retried."""
        while not stop.is_set():
            try:
                await self.tick()
            except Exception as exc:
                self._log.warning("revocation.watch_failed", error=type(exc).__name__)
            await self.sessions.wait(self._next_wait())

    async def tick(self) -> None:
        """One round: new rows, then the issuer, the CRLs and the grants when due."""
        if self._last_id is None:
            self._last_id = await asyncio.to_thread(self._newest_id)
        for row in await asyncio.to_thread(self._rows_after, self._last_id):
            self._last_id = row.id
            await self._apply(row)
        if self.bearer is not None and self.clock() - self._tokens_at >= self.token_seconds:
            self._tokens_at = self.clock()
            await self._check_tokens()
        if self.crls is not None and self.crls.generation != self._crl_generation:
            self._crl_generation = self.crls.generation
            await self._check_certificates()
        await self._check_grant_ends()

    def _next_wait(self) -> float:
        wait = self.poll_seconds
        if self.bearer is not None:
            wait = min(wait, max(0.05, self._tokens_at + self.token_seconds - self.clock()))
        return wait

    async def _apply(self, row: Revocation) -> None:
        if row.kind == Kind.TRUST_REFRESH.value:
            if self.refresh_trust is not None:
                await self.refresh_trust()
            return
        try:
            credential = Credential(Kind(row.kind), row.key, row.account_id)
        except ValueError:
            return
        self.sessions.end_matching(credential, row.reason)

    # -- found elsewhere -------------------------------------------------------------------------
    async def _check_tokens(self) -> None:
        """Ask the issuer about the tokens of open sessions (here and in the webmail)."""
        assert self.bearer is not None
        jtis = {c.key for c in self.sessions.credentials(Kind.OIDC_TOKEN)}
        jtis |= await asyncio.to_thread(self._web_tokens)
        limit = asyncio.Semaphore(TOKEN_CHECKS_AT_ONCE)

        async def check(jti: str) -> None:
            assert self.bearer is not None
            async with limit:
                alive = await self.bearer.is_still_valid(jti)
            if not alive:
                await self.record(Credential.oidc_token(None, jti), "token_revoked")

        await asyncio.gather(*(check(j) for j in sorted(jtis)))

    async def _check_certificates(self) -> None:
        """After a CRL change: the certificates of open sessions now listed end them."""
        assert self.crls is not None
        candidates = self.sessions.credentials(Kind.CERTIFICATE)
        candidates |= await asyncio.to_thread(self._web_certificates)
        for credential in candidates:
            parts = credential.certificate_serial()
            if parts is not None and self.crls.is_listed(parts[1], parts[0]):
                await self.record(credential, "certificate_revoked")

    async def _check_grant_ends(self) -> None:
        """Time-limited grants reaching their end: no row, each process compares the dates."""
        if not self.sessions.has(Kind.DELEGATION):
            self._grants_at = datetime.fromtimestamp(self.clock(), UTC)
            return
        since, now = self._grants_at, datetime.fromtimestamp(self.clock(), UTC)
        ended = await asyncio.to_thread(self._grants_ended, since, now)
        self._grants_at = now
        for account_id, mailbox_id in ended:
            self.sessions.end_matching(
                Credential.delegation(account_id, mailbox_id), "delegation_expired"
            )

    async def record(self, credential: Credential, reason: str) -> None:
        """A revocation found here: recorded once for every process, applied here at once."""
        await asyncio.to_thread(self._record, credential, reason)
        self.sessions.end_matching(credential, reason)

    # -- the database ----------------------------------------------------------------------------
    def _newest_id(self) -> int:
        with self.db.session() as db:
            return int(db.execute(select(func.max(Revocation.id))).scalar() or 0)

    def _rows_after(self, last_id: int) -> list[Revocation]:
        with self.db.session() as db:
            rows = db.execute(
                select(Revocation)
                .where(Revocation.id > last_id)
                .order_by(Revocation.id)
                .limit(ROWS_PER_POLL)
            ).scalars()
            result = list(rows)
            db.expunge_all()
            return result

    def _record(self, credential: Credential, reason: str) -> None:
        with self.db.session() as db:
            known = db.execute(
                select(Revocation.id).where(
                    Revocation.kind == credential.kind.value, Revocation.key == credential.key
                )
            ).first()
            if known is None:  # another node may have recorded it first
                revoke(db, credential, reason)

    def _web_tokens(self) -> set[str]:
        with self.db.session() as db:
            rows = db.execute(
                select(WebSession.oidc_token_id).where(WebSession.oidc_token_id != "").distinct()
            ).scalars()
            return set(rows)

    def _web_certificates(self) -> set[Credential]:
        prefix = f"{Kind.CERTIFICATE.value}:"
        with self.db.session() as db:
            rows = db.execute(
                select(WebSession.rests_on).where(WebSession.rests_on.startswith(prefix)).distinct()
            ).scalars()
            found = (Credential.from_token(token) for token in rows)
            return {c for c in found if c is not None}

    def _grants_ended(self, since: datetime, now: datetime) -> list[tuple[int, int]]:
        with self.db.session() as db:
            rows = db.execute(
                select(MailboxAccess.account_id, MailboxAccess.mailbox_id).where(
                    MailboxAccess.revoked_at.is_(None),
                    MailboxAccess.expires_at > since,
                    MailboxAccess.expires_at <= now,
                )
            ).all()
            return [(r.account_id, r.mailbox_id) for r in rows]


__all__ = [
    "ANY",
    "Credential",
    "Ending",
    "Grounds",
    "Kind",
    "LoginNote",
    "OpenSession",
    "RevocationWatcher",
    "SessionRegistry",
    "delegation_ground",
    "note_login",
    "note_refusal",
    "request_trust_refresh",
    "revoke",
    "take_login",
]
