"""One authentication layer for IMAP, submission and the web (docs/auth.md).

:class:`AuthService` decides who a login is, from what a client sent: the account password; an
app password (mail protocols only); or, for interactive logins on the web, the password and a
TOTP code (RFC 6238, :mod:`mssante.auth.totp`). Once an account has confirmed a TOTP device, its
password alone no longer opens anything: the web asks for the code, mail clients need an app
password.

Every attempt is audited with its protocol and client address, and slowed after failures per
login and per client address (:class:`~mssante.auth.throttle.Throttle`: the attempt's place is
reserved before it waits, so concurrent attempts cannot all read "no failure yet"; one instance
per process, shared with the certificate logins). An unknown login
costs the same argon2 work as a known one, so timing does not tell whether an account exists.
The reason of a failure goes to the audit log only; the caller gets ``None`` and must answer
the client with one undifferentiated refusal.

Login events go to the ``audit`` sink given (the database log in production), after the small
bookkeeping they cause (last use, the TOTP step, a re-hash) has committed. Changes made by a
person (TOTP enrolment, app passwords) commit with their audit entry, in one transaction.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from argon2 import PasswordHasher
from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session, selectinload

from mssante.audit.events import Actor, AuditEvent, AuditRecord, AuditSink
from mssante.audit.log import append
from mssante.auth import app_passwords, totp
from mssante.auth.passwords import needs_rehash, password_problem, verify_password
from mssante.auth.revocation import (
    Credential as Ground,
)
from mssante.auth.revocation import (
    Grounds,
    SessionRegistry,
    note_login,
    note_refusal,
    revoke,
)
from mssante.auth.throttle import LoginThrottle, Outcome, Reservation, Throttle
from mssante.config import AuthSettings, Settings
from mssante.errors import MssanteError, NotFoundError
from mssante.store.db import Database
from mssante.store.models import Account, AccountKind, Credential, CredentialKind, WebSession

PENDING_TOTP_LIFETIME = timedelta(hours=1)  # an enrolment not confirmed by then must start over
MAX_LOGIN_LENGTH = 320  # what is kept of a typed login (audit log, throttle keys)


class AuthProtocol(StrEnum):
    """Where a login comes from; app passwords are for the mail protocols only."""

    IMAP = "imap"
    SUBMISSION = "submission"
    WEB = "web"


MAIL_PROTOCOLS = frozenset({AuthProtocol.IMAP, AuthProtocol.SUBMISSION})

# Told to a mail client whose user typed the account's password, right, while the account has
# a TOTP device (only then: a wrong password learns nothing). French, then English; ASCII, as
# IMAP (RFC 3501 §9 text) and SMTP replies (RFC 5321 §2.4) carry it.
TWO_FACTOR_HINT = (
    "Ce compte utilise la double authentification : creez un mot de passe d'application "
    "dans le webmail (Compte) / This account uses two-factor authentication: create an app "
    "password in the webmail (Account)"
)


class AuthMethod(StrEnum):
    """How a principal proved itself."""

    PASSWORD = "password"  # noqa: S105 - a method name
    APP_PASSWORD = "app_password"  # noqa: S105 - a method name
    TOTP = "totp"  # the account password and a one-time code (two factors)


class FailureReason(StrEnum):
    """Why a login failed: for the audit log, never for the client."""

    UNKNOWN_ACCOUNT = "unknown_account"
    DISABLED = "account_disabled"
    BAD_PASSWORD = "bad_password"  # noqa: S105 - a reason name
    TOTP_REQUIRED = "totp_required"  # web: the account has TOTP, no code was given
    APP_PASSWORD_REQUIRED = "app_password_required"  # noqa: S105 - mail protocol, TOTP account
    TOTP_NOT_ENROLLED = "totp_not_enrolled"
    BAD_CODE = "bad_code"
    REPLAYED_CODE = "replayed_code"


class AuthError(MssanteError):
    """An enrolment or credential change was refused."""


@dataclass(frozen=True)
class Principal:
    """Who is logged in, and how. Handed to IMAP, submission and the webmail sessions."""

    account_id: int
    login: str
    kind: AccountKind
    id_nat: str | None
    method: AuthMethod
    credential_id: int | None = None  # the password or app password that matched
    credential_label: str = ""  # the app password's label

    @property
    def grounds(self) -> Grounds:
        """What a session opened by this login rests on (auth/revocation.py)."""
        grounds = {Ground.account(self.account_id)}
        if self.credential_id is not None:
            make = (
                Ground.app_password if self.method is AuthMethod.APP_PASSWORD else Ground.password
            )
            grounds.add(make(self.account_id, self.credential_id))
        return frozenset(grounds)


@dataclass(frozen=True)
class _Stored:
    id: int
    label: str
    secret: str
    last_used_at: datetime | None


@dataclass(frozen=True)
class _Snapshot:
    """What a login needs of an account, read in one short transaction."""

    account_id: int
    login: str
    kind: AccountKind
    id_nat: str | None
    disabled: bool
    passwords: tuple[_Stored, ...]
    app_passwords: tuple[_Stored, ...]
    totp: _Stored | None  # the confirmed, unrevoked device, if any


@dataclass(frozen=True)
class _Attempt:
    login: str
    password: str
    code: str | None
    peer: str
    protocol: AuthProtocol

    @property
    def throttle_account(self) -> str:
        return self.login[:MAX_LOGIN_LENGTH]

    @property
    def throttle_address(self) -> str:
        return _client_network(self.peer)


@dataclass(frozen=True)
class _Verdict:
    principal: Principal | None
    reason: FailureReason | None = None
    totp_step: tuple[int, int] | None = None  # (credential id, step) to store
    new_hash: bool = False  # the password's hash should be redone with today's parameters


class AuthService:
    """Checks logins for every protocol and manages TOTP devices and app passwords."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        audit: AuditSink,
        *,
        clock: Callable[[], float] = time.time,
        throttle: Throttle | None = None,
        sleep: Callable[[float], None] = time.sleep,
        async_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """``throttle``: the process's one login throttle (the operator runtime shares it with
        the certificate logins); by default one of this service's own, from the settings.
        ``sleep`` and ``async_sleep`` make the throttle's waits (sync and async entry points)."""
        self.db = db
        self.audit = audit
        self.clock = clock
        self.issuer = settings.auth.totp_issuer or settings.operator.name or "MSSanté"
        self.hasher = password_hasher(settings.auth)
        self.throttle: Throttle = (
            throttle if throttle is not None else LoginThrottle.from_settings(settings.auth)
        )
        self._sleep = sleep
        self._async_sleep = async_sleep
        # argon2 takes 64 MiB per verification by default: bound how many run at once.
        self._hashing = threading.BoundedSemaphore(os.cpu_count() or 4)
        # Verified against when there is nothing real to verify (unknown login, no matching app
        # password), so that every path costs the same (no timing oracle).
        self._dummy_hash = self.hasher.hash(secrets.token_urlsafe(16))
        # The open sessions of this process, by what they rest on (IMAP, submission, the
        # webmail's event streams register there; docs/revocation.md).
        self.sessions = SessionRegistry()

    # -- logins ----------------------------------------------------------------------------------
    def check_password(
        self, login: str, password: str, *, peer: str, protocol: AuthProtocol | str
    ) -> Principal | None:
        """A password or app password login; blocks for the throttle's delay first."""
        attempt = _Attempt(_clean_login(login), password, None, peer, AuthProtocol(protocol))
        return _noted(self._checked(attempt))

    async def check_password_async(
        self, login: str, password: str, *, peer: str, protocol: AuthProtocol | str
    ) -> Principal | None:
        """:meth:`check_password` for servers: waits without blocking, hashes in a thread.
        The outcome is noted in the task's context (:func:`revocation.take_login`): what the
        session rests on, or the hint of :data:`TWO_FACTOR_HINT`."""
        attempt = _Attempt(_clean_login(login), password, None, peer, AuthProtocol(protocol))
        return _noted(await self._checked_async(attempt))

    def check_password_totp(
        self, login: str, password: str, code: str, peer: str
    ) -> Principal | None:
        """An interactive (web) login with the account password and a TOTP code."""
        attempt = _Attempt(_clean_login(login), password, code, peer, AuthProtocol.WEB)
        return _noted(self._checked(attempt))

    async def check_password_totp_async(
        self, login: str, password: str, code: str, peer: str
    ) -> Principal | None:
        attempt = _Attempt(_clean_login(login), password, code, peer, AuthProtocol.WEB)
        return _noted(await self._checked_async(attempt))

    # -- TOTP devices ----------------------------------------------------------------------------
    def enrol_totp(self, login: str, actor: Actor) -> totp.TotpEnrolment:
        """A new TOTP secret for ``login``, inactive until :meth:`confirm_totp`. An enrolment
        still waiting is replaced; a confirmed device stays active until the new one is."""
        secret = totp.new_secret()
        with self.db.session() as session:
            account = _account_or_error(session, login)
            session.execute(delete(Credential).where(*_pending_totp(account.id)))
            credential = Credential(
                account_id=account.id,
                kind=CredentialKind.TOTP,
                secret=secret,
                created_at=self._now(),
            )
            session.add(credential)
            session.flush()
            _audit(session, AuditEvent.TOTP_ENROLMENT_STARTED, actor, account.login, credential)
            uri = totp.provisioning_uri(secret, account.login, self.issuer)
            return totp.TotpEnrolment(account.login, credential.id, uri)

    def confirm_totp(self, login: str, code: str, actor: Actor) -> None:
        """Activate the waiting enrolment with a first valid code (which cannot serve again)."""
        if not self._confirm(login, code, actor):
            self.audit.record(
                AuditRecord(
                    AuditEvent.TOTP_CONFIRMATION_FAILED,
                    actor=actor.name,
                    target=_clean_login(login),
                    context=dict(actor.context),
                )
            )
            raise AuthError("this code is not valid: check the device's clock and try again")

    def totp_active(self, login: str) -> bool:
        snapshot = self._load(_clean_login(login))
        return snapshot is not None and snapshot.totp is not None

    # -- the account password --------------------------------------------------------------------
    def change_password(
        self, login: str, new_password: str, actor: Actor, *, keep_web_session: str = ""
    ) -> None:
        """Replace the account's password (the caller has checked the current one); raises
        :class:`AuthError` with the reason if the new one is too weak. Every session opened
        with the old one ends (docs/revocation.md), but the webmail session whose token hash
        is ``keep_web_session`` (the one making the change) goes on, on the new one."""
        problem = password_problem(new_password)
        if problem:
            raise AuthError(problem)
        with self._hashing_slot():
            hashed = self.hasher.hash(new_password)
        with self.db.session() as session:
            account = _account_or_error(session, login)
            now = self._now()
            old = list(
                session.execute(
                    select(Credential).where(
                        Credential.account_id == account.id,
                        Credential.kind == CredentialKind.PASSWORD,
                        Credential.revoked_at.is_(None),
                    )
                ).scalars()
            )
            for stale in old:
                stale.revoked_at = now
            credential = Credential(
                account_id=account.id, kind=CredentialKind.PASSWORD, secret=hashed, created_at=now
            )
            session.add(credential)
            session.flush()
            _audit(session, AuditEvent.PASSWORD_CHANGED, actor, account.login, credential)
            if keep_web_session:
                session.execute(
                    update(WebSession)
                    .where(WebSession.token_hash == keep_web_session)
                    .values(rests_on=Ground.password(account.id, credential.id).token)
                )
            for stale in old:
                ground = Ground.password(account.id, stale.id)
                revoke(
                    session, ground, "password_changed", actor=actor.name, notify=self.sessions.poke
                )

    # -- app passwords ---------------------------------------------------------------------------
    def add_app_password(
        self, login: str, label: str, actor: Actor
    ) -> app_passwords.NewAppPassword:
        """A new app password; its clear text is in the result and nowhere else."""
        with self.db.session() as session:
            account = _account_or_error(session, login)
            with self._hashing_slot():
                new = app_passwords.create(session, account, label, self.hasher)
            _audit_app_password(session, AuditEvent.APP_PASSWORD_CREATED, actor, account, new.info)
            return new

    def list_app_passwords(
        self, login: str, *, include_revoked: bool = False
    ) -> list[app_passwords.AppPasswordInfo]:
        with self.db.session() as session:
            account = _account_or_error(session, login)
            return app_passwords.listing(session, account.id, include_revoked=include_revoked)

    def revoke_app_password(
        self, login: str, label_or_id: str, actor: Actor
    ) -> app_passwords.AppPasswordInfo:
        with self.db.session() as session:
            account = _account_or_error(session, login)
            info = app_passwords.revoke(session, account.id, label_or_id)
            _audit_app_password(session, AuditEvent.APP_PASSWORD_REVOKED, actor, account, info)
            ground = Ground.app_password(account.id, info.id)
            revoke(
                session, ground, "app_password_revoked", actor=actor.name, notify=self.sessions.poke
            )
            return info

    # -- the core of a login ---------------------------------------------------------------------
    def _reserve(self, attempt: _Attempt) -> Reservation:
        """The attempt's place in the throttle, and its wait, in one atomic step."""
        return self.throttle.reserve(
            account=attempt.throttle_account, address=attempt.throttle_address
        )

    def _checked(self, attempt: _Attempt) -> _Verdict:
        reservation = self._reserve(attempt)
        try:
            self._sleep(reservation.delay)
        except BaseException:
            self.throttle.settle(reservation, Outcome.ABANDONED)  # nothing was checked
            raise
        return self._run(attempt, reservation)

    async def _checked_async(self, attempt: _Attempt) -> _Verdict:
        reservation = self._reserve(attempt)
        try:
            await self._async_sleep(reservation.delay)
        except BaseException:  # the client left during the wait: nothing was checked
            self.throttle.settle(reservation, Outcome.ABANDONED)
            raise
        # Once the check has started, the thread settles the reservation even if this task is
        # cancelled (asyncio.to_thread lets the thread finish).
        return await asyncio.to_thread(self._run, attempt, reservation)

    def _run(self, attempt: _Attempt, reservation: Reservation) -> _Verdict:
        outcome = Outcome.FAILED  # also if the check raises: it counts as a failure
        try:
            snapshot = self._load(attempt.login)
            verdict = self._judge(snapshot, attempt)
            if verdict.principal is not None:
                verdict = self._record_use(attempt, verdict)
            self._audit_login(attempt, verdict)
            if verdict.principal is not None:
                outcome = Outcome.SUCCEEDED
            return verdict
        finally:
            self.throttle.settle(reservation, outcome)

    def _load(self, login: str) -> _Snapshot | None:
        with self.db.session() as session:
            account = session.execute(
                select(Account)
                .options(selectinload(Account.credentials), selectinload(Account.professional))
                .where(Account.login == login)
            ).scalar_one_or_none()
            return None if account is None else _snapshot(account)

    def _judge(self, snapshot: _Snapshot | None, attempt: _Attempt) -> _Verdict:
        app_shaped = _may_be_app_password(attempt)
        if snapshot is None or snapshot.disabled:
            self._burn(2 if app_shaped else 1)
            missing = snapshot is None
            return _Verdict(
                None, FailureReason.UNKNOWN_ACCOUNT if missing else FailureReason.DISABLED
            )
        if app_shaped:
            app = self._match_app_password(snapshot, attempt.password)
            if app is not None:
                return _Verdict(_principal(snapshot, AuthMethod.APP_PASSWORD, app))
        password = self._match_password(snapshot, attempt.password)
        if password is None:
            return _Verdict(None, FailureReason.BAD_PASSWORD)
        return self._second_factor(snapshot, attempt, password)

    def _second_factor(self, snapshot: _Snapshot, attempt: _Attempt, password: _Stored) -> _Verdict:
        rehash = needs_rehash(password.secret, self.hasher)
        if attempt.code is None:
            if snapshot.totp is None:
                return _Verdict(
                    _principal(snapshot, AuthMethod.PASSWORD, password), new_hash=rehash
                )
            web = attempt.protocol is AuthProtocol.WEB
            reason = FailureReason.TOTP_REQUIRED if web else FailureReason.APP_PASSWORD_REQUIRED
            return _Verdict(None, reason)
        if snapshot.totp is None:
            return _Verdict(None, FailureReason.TOTP_NOT_ENROLLED)
        device = snapshot.totp
        last = totp.step_of(device.last_used_at) if device.last_used_at else None
        result = totp.check_code(device.secret, attempt.code, now=self.clock(), last_step=last)
        if result.check is totp.CodeCheck.REPLAYED:
            return _Verdict(None, FailureReason.REPLAYED_CODE)
        if result.check is totp.CodeCheck.WRONG or result.step is None:
            return _Verdict(None, FailureReason.BAD_CODE)
        principal = _principal(snapshot, AuthMethod.TOTP, password)
        return _Verdict(principal, totp_step=(device.id, result.step), new_hash=rehash)

    def _match_password(self, snapshot: _Snapshot, candidate: str) -> _Stored | None:
        for stored in snapshot.passwords:
            if self._verify(stored.secret, candidate):
                return stored
        if not snapshot.passwords:
            self._burn(1)
        return None

    def _match_app_password(self, snapshot: _Snapshot, candidate: str) -> _Stored | None:
        canonical = app_passwords.normalise(candidate)
        if canonical is None:
            return None
        hint = canonical[: app_passwords.HINT_LENGTH]
        for stored in snapshot.app_passwords:
            if app_passwords.hint_of(stored.secret) == hint:
                ok = self._verify(app_passwords.hash_of(stored.secret), canonical)
                return stored if ok else None
        self._burn(1)
        return None

    def _verify(self, stored_hash: str, candidate: str) -> bool:
        with self._hashing_slot():
            return verify_password(stored_hash, candidate, self.hasher)

    def _burn(self, times: int) -> None:
        for _ in range(times):
            self._verify(self._dummy_hash, "")

    @contextmanager
    def _hashing_slot(self) -> Iterator[None]:
        with self._hashing:
            yield

    def _record_use(self, attempt: _Attempt, verdict: _Verdict) -> _Verdict:
        """Store the last use, the TOTP step (refusing a code raced in twice) and a new hash."""
        principal = verdict.principal
        assert principal is not None and principal.credential_id is not None
        new_hash = self._rehash(attempt.password) if verdict.new_hash else None
        with self.db.session() as session:
            if verdict.totp_step and not _advance_totp(session, *verdict.totp_step):
                return _Verdict(None, FailureReason.REPLAYED_CODE)
            values: dict[str, Any] = {"last_used_at": self._now()}
            if new_hash:
                values["secret"] = new_hash
            session.execute(
                update(Credential).where(Credential.id == principal.credential_id).values(**values)
            )
        return verdict

    def _rehash(self, password: str) -> str:
        with self._hashing_slot():
            return self.hasher.hash(password)

    def _audit_login(self, attempt: _Attempt, verdict: _Verdict) -> None:
        context: dict[str, Any] = {"protocol": attempt.protocol.value, "peer": attempt.peer}
        principal = verdict.principal
        if principal is None:
            event, who = AuditEvent.LOGIN_FAILED, attempt.login[:MAX_LOGIN_LENGTH]
            context["reason"] = verdict.reason.value if verdict.reason else "unknown"
        else:
            event, who = AuditEvent.LOGIN_SUCCEEDED, principal.login
            context["method"] = principal.method.value
            if principal.credential_label:
                context["app_password"] = principal.credential_label
        self.audit.record(AuditRecord(event, actor=who, target=who, context=context))

    def _confirm(self, login: str, code: str, actor: Actor) -> bool:
        with self.db.session() as session:
            account = _account_or_error(session, login)
            pending = session.execute(
                select(Credential)
                .where(*_pending_totp(account.id))
                .order_by(Credential.id.desc())
                .limit(1)
            ).scalar_one_or_none()
            if pending is None:
                raise AuthError(f"no TOTP enrolment is waiting for {account.login}: enrol first")
            if pending.created_at < self._now() - PENDING_TOTP_LIFETIME:
                raise AuthError("this TOTP enrolment has expired: enrol again")
            result = totp.check_code(pending.secret, code, now=self.clock(), last_step=None)
            if result.check is not totp.CodeCheck.ACCEPTED or result.step is None:
                return False
            _retire_other_devices(session, account.id, keep=pending.id, now=self._now())
            pending.last_used_at = totp.step_start(result.step)
            _audit(session, AuditEvent.TOTP_ENROLLED, actor, account.login, pending)
            return True

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)


def password_hasher(auth: AuthSettings) -> PasswordHasher:
    """argon2id with the configured cost (RFC 9106 §4 second recommended option by default)."""
    return PasswordHasher(
        time_cost=auth.argon2_time_cost,
        memory_cost=auth.argon2_memory_kib,
        parallelism=auth.argon2_parallelism,
    )


# -- helpers ------------------------------------------------------------------------------------
def _noted(verdict: _Verdict) -> Principal | None:
    """Note the outcome in the caller's task (auth/revocation.py), then return the principal."""
    if verdict.principal is not None:
        note_login(verdict.principal.grounds)
    else:
        right_password = verdict.reason is FailureReason.APP_PASSWORD_REQUIRED
        note_refusal(TWO_FACTOR_HINT if right_password else "")
    return verdict.principal


def _clean_login(login: str) -> str:
    return login.strip().lower()


def _client_network(peer: str) -> str:
    """The unit a client address is throttled by: the address (IPv4) or its /64 (IPv6), since
    one IPv6 client usually holds a whole /64."""
    host = peer.rsplit(":", 1)[0] if peer.count(":") == 1 else peer  # "1.2.3.4:5678"
    host = host.strip("[]")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return peer
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def _may_be_app_password(attempt: _Attempt) -> bool:
    return (
        attempt.protocol in MAIL_PROTOCOLS
        and attempt.code is None
        and app_passwords.normalise(attempt.password) is not None
    )


def _snapshot(account: Account) -> _Snapshot:
    live = [c for c in account.credentials if c.revoked_at is None]

    def stored(kind: CredentialKind) -> tuple[_Stored, ...]:
        return tuple(
            _Stored(c.id, c.label, c.secret, c.last_used_at)
            for c in sorted(live, key=lambda c: c.id)
            if c.kind is kind
        )

    devices = [d for d in stored(CredentialKind.TOTP) if d.last_used_at is not None]
    return _Snapshot(
        account_id=account.id,
        login=account.login,
        kind=account.kind,
        id_nat=account.professional.id_nat if account.professional else None,
        disabled=account.disabled,
        passwords=stored(CredentialKind.PASSWORD),
        app_passwords=stored(CredentialKind.APP_PASSWORD),
        totp=devices[-1] if devices else None,
    )


def _principal(snapshot: _Snapshot, method: AuthMethod, credential: _Stored) -> Principal:
    return Principal(
        account_id=snapshot.account_id,
        login=snapshot.login,
        kind=snapshot.kind,
        id_nat=snapshot.id_nat,
        method=method,
        credential_id=credential.id,
        credential_label=credential.label if method is AuthMethod.APP_PASSWORD else "",
    )


def _pending_totp(account_id: int) -> tuple[Any, ...]:
    return (
        Credential.account_id == account_id,
        Credential.kind == CredentialKind.TOTP,
        Credential.revoked_at.is_(None),
        Credential.last_used_at.is_(None),
    )


def _advance_totp(session: Session, credential_id: int, step: int) -> bool:
    """Move the device's last step forward, only if no other login took this step first
    (RFC 6238 §5.2: a code is accepted once). One conditional UPDATE: safe across nodes."""
    start = totp.step_start(step)
    result: Any = session.execute(
        update(Credential)
        .where(
            Credential.id == credential_id,
            Credential.revoked_at.is_(None),
            or_(Credential.last_used_at.is_(None), Credential.last_used_at < start),
        )
        .values(last_used_at=start)
    )
    return int(result.rowcount or 0) == 1


def _retire_other_devices(session: Session, account_id: int, *, keep: int, now: datetime) -> None:
    """Revoke the account's other TOTP devices, and forget their secrets."""
    session.execute(
        update(Credential)
        .where(
            Credential.account_id == account_id,
            Credential.kind == CredentialKind.TOTP,
            Credential.id != keep,
            Credential.revoked_at.is_(None),
        )
        .values(revoked_at=now, secret="")
    )


def _account_or_error(session: Session, login: str) -> Account:
    account = session.execute(
        select(Account).where(Account.login == _clean_login(login))
    ).scalar_one_or_none()
    if account is None:
        raise NotFoundError(f"no account {_clean_login(login)}")
    return account


def _audit(
    session: Session, event: AuditEvent, actor: Actor, login: str, credential: Credential
) -> None:
    context = {**actor.context, "credential_id": credential.id}
    append(session, AuditRecord(event, actor=actor.name, target=login, context=context))


def _audit_app_password(
    session: Session,
    event: AuditEvent,
    actor: Actor,
    account: Account,
    info: app_passwords.AppPasswordInfo,
) -> None:
    context = {**actor.context, "credential_id": info.id, "label": info.label}
    append(session, AuditRecord(event, actor=actor.name, target=account.login, context=context))


__all__ = [
    "MAIL_PROTOCOLS",
    "TWO_FACTOR_HINT",
    "AuthError",
    "AuthMethod",
    "AuthProtocol",
    "AuthService",
    "FailureReason",
    "Principal",
    "password_hasher",
]
