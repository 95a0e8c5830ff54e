"""Webmail sessions, kept server-side (table ``web_sessions``, docs/webmail.md "Login").

The browser holds a random 256-bit token in the cookie ``__Host-mss_session`` (Secure,
HttpOnly, SameSite=Lax, Path=/, no Domain: RFC 6265bis §4.1.3.2); the table holds its SHA-256,
so a copy of the table opens no session. A session ends:

- after ``web.idle_timeout`` without a request, or ``web.max_session_age`` in all;
- on logout, or "log out everywhere" (every row of the account);
- when the account is disabled or its mailbox closed (checked at every request);
- when what it rests on is revoked (docs/revocation.md): the row records it (``rests_on``:
  the password, the card, the OIDC token of its login) and :func:`mssante.auth.revocation.revoke`
  deletes the rows resting on what it revokes, in the revoking transaction; the revocation
  watcher records a token revoked at the issuer or a card listed on a CRL the same way. The
  server-sent-events stream of a session registers with the process's open sessions
  (:func:`stream_lifetime`) and closes then.

A login with a password alone makes a *pending* session: it reaches only the second-factor
pages (code, or enrolment of a device) until a TOTP code upgrades it.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update

from mssante.auth.revocation import Credential, Ending, Grounds, Kind, SessionRegistry, take_login
from mssante.config import WebSettings
from mssante.store.db import Database
from mssante.store.models import Account, WebSession, utcnow

COOKIE = "__Host-mss_session"
_TOUCH_EVERY = timedelta(seconds=30)  # last_seen_at is written at most this often


@dataclass(frozen=True)
class SessionInfo:
    """One live session, as a request sees it."""

    token_hash: str
    account_id: int
    login: str
    method: str
    pending: bool
    csrf_token: str
    mailbox: str
    language: str
    created_at: datetime
    last_seen_at: datetime
    checked_at: datetime
    oidc_token_id: str
    user_agent: str
    peer: str
    rests_on: str = ""  # Credential.token of what the login rests on besides the account

    @property
    def grounds(self) -> Grounds:
        """What the session rests on (auth/revocation.py)."""
        grounds = {Credential.account(self.account_id)}
        rests = Credential.from_token(self.rests_on, self.account_id)
        if rests is not None:
            grounds.add(rests)
        if self.oidc_token_id:
            grounds.add(Credential.oidc_token(self.account_id, self.oidc_token_id))
        return frozenset(grounds)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


class WebSessions:
    def __init__(self, db: Database, settings: WebSettings) -> None:
        self.db = db
        self.idle = timedelta(seconds=settings.idle_timeout)
        self.max_age = timedelta(seconds=settings.max_session_age)
        # A write at most every 30 s, and often enough that a short idle timeout never ends
        # a session in use.
        self.touch_every = min(_TOUCH_EVERY, self.idle / 4)

    def create(
        self,
        account_id: int,
        method: str,
        *,
        pending: bool,
        mailbox: str,
        user_agent: str,
        peer: str,
        language: str = "",
        oidc_token_id: str = "",
        rests_on: str | None = None,
    ) -> str:
        """A new session; its token, for the cookie (never stored). ``rests_on``: what the
        login rests on (a :class:`Credential` token); by default what the login layer noted
        for the login just checked in this task (:func:`take_login`)."""
        token = secrets.token_urlsafe(32)
        now = utcnow()
        if rests_on is None:
            rests_on = _noted_ground(account_id)
        with self.db.session() as session:
            session.add(
                WebSession(
                    token_hash=token_hash(token),
                    account_id=account_id,
                    method=method,
                    pending=pending,
                    csrf_token=secrets.token_urlsafe(32),
                    mailbox=mailbox,
                    language=language,
                    user_agent=user_agent[:300],
                    peer=peer[:64],
                    oidc_token_id=oidc_token_id,
                    rests_on=rests_on[:600],
                    created_at=now,
                    last_seen_at=now,
                    checked_at=now,
                )
            )
        return token

    def load(self, token: str | None) -> SessionInfo | None:
        """The live session of ``token``, touched; None (and the row gone) if it has ended."""
        if not token or len(token) > 100:
            return None
        key = token_hash(token)
        now = utcnow()
        with self.db.session() as session:
            row = session.execute(
                select(WebSession, Account)
                .join(Account, Account.id == WebSession.account_id)
                .where(WebSession.token_hash == key)
            ).first()
            if row is None:
                return None
            web, account = row
            if account.disabled or self._expired(web, now):
                session.delete(web)
                return None
            if now - web.last_seen_at > self.touch_every:
                web.last_seen_at = now
            return _info(web, account.login)

    def _expired(self, web: WebSession, now: datetime) -> bool:
        return now - web.last_seen_at > self.idle or now - web.created_at > self.max_age

    def upgrade(self, key: str, method: str) -> str:
        """A pending session passed its second factor: a new token (the old one is dropped,
        so a token seen before the second factor is worth nothing after it)."""
        token = secrets.token_urlsafe(32)
        with self.db.session() as session:
            session.execute(
                update(WebSession)
                .where(WebSession.token_hash == key)
                .values(
                    token_hash=token_hash(token),
                    method=method,
                    pending=False,
                    csrf_token=secrets.token_urlsafe(32),
                    last_seen_at=utcnow(),
                )
            )
        return token

    def set_mailbox(self, key: str, address: str) -> None:
        self._set(key, mailbox=address)

    def set_language(self, key: str, language: str) -> None:
        self._set(key, language=language)

    def checked(self, key: str) -> None:
        self._set(key, checked_at=utcnow())

    def _set(self, key: str, **values: object) -> None:
        with self.db.session() as session:
            session.execute(update(WebSession).where(WebSession.token_hash == key).values(values))

    def end(self, key: str) -> None:
        with self.db.session() as session:
            session.execute(delete(WebSession).where(WebSession.token_hash == key))

    def end_all(self, account_id: int) -> int:
        """Log out everywhere: every session of the account; how many there were."""
        with self.db.session() as session:
            result = session.execute(delete(WebSession).where(WebSession.account_id == account_id))
            return int(getattr(result, "rowcount", 0) or 0)

    def end_one(self, account_id: int, key_prefix: str) -> bool:
        """End one of the account's sessions, named by the start of its hash (account page)."""
        if len(key_prefix) < 12:
            return False
        with self.db.session() as session:
            keys = session.execute(
                select(WebSession.token_hash).where(WebSession.account_id == account_id)
            ).scalars()
            matching = [k for k in keys if k.startswith(key_prefix)]
            if len(matching) != 1:
                return False
            session.execute(delete(WebSession).where(WebSession.token_hash == matching[0]))
            return True

    def of_account(self, account_id: int) -> list[SessionInfo]:
        with self.db.session() as session:
            rows = session.execute(
                select(WebSession, Account)
                .join(Account, Account.id == WebSession.account_id)
                .where(WebSession.account_id == account_id)
                .order_by(WebSession.last_seen_at.desc())
            ).all()
            now = utcnow()
            return [_info(w, a.login) for w, a in rows if not self._expired(w, now)]


def _info(web: WebSession, login: str) -> SessionInfo:
    return SessionInfo(
        token_hash=web.token_hash,
        account_id=web.account_id,
        login=login,
        method=web.method,
        pending=web.pending,
        csrf_token=web.csrf_token,
        mailbox=web.mailbox,
        language=web.language,
        created_at=web.created_at,
        last_seen_at=web.last_seen_at,
        checked_at=web.checked_at,
        oidc_token_id=web.oidc_token_id,
        user_agent=web.user_agent,
        peer=web.peer,
        rests_on=web.rests_on,
    )


def _noted_ground(account_id: int) -> str:
    """The token of what the login just checked in this task rests on, besides its account."""
    note = take_login()
    if note is None or note.account_id != account_id:
        return ""
    others = sorted(c.token for c in note.grounds if c.kind is not Kind.ACCOUNT)
    return others[0] if others else ""


@contextmanager
def stream_lifetime(
    registry: SessionRegistry, session: SessionInfo, wake: Callable[[], None]
) -> Iterator[asyncio.Event]:
    """Register a long-lived response of ``session`` (the server-sent events) with the
    process's open sessions; the event returned is set, and ``wake`` called, when what the
    session rests on is revoked: the stream should then end."""
    ended = asyncio.Event()

    async def end(_ending: Ending) -> None:
        ended.set()
        wake()

    registered = registry.open(session.grounds, end, door="web")
    try:
        yield ended
    finally:
        registered.close()
