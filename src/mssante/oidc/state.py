"""The provider's state: authorization codes, grants, refresh tokens and issued access tokens.

A small SQLite file in the provider's data folder (``data_dir/oidc/state.db``), not the
operator database: the provider is a test stand-in for Pro Santé Connect and its tables have no
place in the operator's schema. What is kept:

* codes: their SHA-256 only, with the request they answer; used once (RFC 6749 §4.1.2);
* grants: one per authorization (client, person, scope), revoked as a whole;
* refresh tokens: their SHA-256 only; rotated on every use (RFC 9700 §4.14.2), an old one
  coming back revokes its grant;
* access tokens: their ``jti`` and lifetime only, never the token.

Each operation opens its own connection (they are short), so the store may be used from any
thread; the atomic steps (using a code, rotating a refresh token) are single conditional
``UPDATE`` statements.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

from mssante.oidc.models import AuthorizationCode, GrantToken, Subject, TokenKind, digest

ACCESS_ROWS_KEPT = 7 * 86400  # an access token's jti is remembered this long after it expires
CODES_KEPT = 86400  # a used or expired code, to detect its reuse

_SCHEMA = """
CREATE TABLE IF NOT EXISTS codes (
    code_digest TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    scope TEXT NOT NULL,
    nonce TEXT,
    code_challenge TEXT NOT NULL,
    code_challenge_method TEXT NOT NULL,
    subject TEXT NOT NULL,
    expires_at REAL NOT NULL,
    grant_id TEXT
);
CREATE INDEX IF NOT EXISTS codes_nonce ON codes (client_id, nonce);
CREATE TABLE IF NOT EXISTS grants (
    id TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    subject TEXT NOT NULL,
    created_at REAL NOT NULL,
    revoked_at REAL,
    revoked_reason TEXT
);
CREATE TABLE IF NOT EXISTS refresh_tokens (
    token_digest TEXT PRIMARY KEY,
    grant_id TEXT NOT NULL REFERENCES grants (id),
    issued_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    rotated_at REAL
);
CREATE INDEX IF NOT EXISTS refresh_grant ON refresh_tokens (grant_id);
CREATE TABLE IF NOT EXISTS access_tokens (
    jti TEXT PRIMARY KEY,
    grant_id TEXT NOT NULL REFERENCES grants (id),
    issued_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    revoked_at REAL
);
"""

_COLUMNS = "g.id, g.client_id, g.scope, g.subject, g.revoked_at, t.issued_at, t.expires_at"


@dataclass(frozen=True)
class NewCode:
    """An authorization request the person approved (RFC 6749 §4.1.1, RFC 7636 §4.3)."""

    code: str
    client_id: str
    redirect_uri: str
    scope: str
    nonce: str | None
    code_challenge: str
    code_challenge_method: str
    subject: Subject
    expires_at: float


class StateStore:
    def __init__(self, path: Path, *, clock: Callable[[], float]) -> None:
        self.path = path
        self.clock = clock
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._transaction() as conn:
            conn.executescript(_SCHEMA)
        with closing(sqlite3.connect(path)) as conn:
            conn.execute("PRAGMA journal_mode=WAL")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=30)) as conn, conn:
            yield conn

    # -- authorization codes (RFC 6749 §4.1.2) ---------------------------------------------------
    def save_code(self, new: NewCode) -> None:
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO codes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                (
                    digest(new.code),
                    new.client_id,
                    new.redirect_uri,
                    new.scope,
                    new.nonce,
                    new.code_challenge,
                    new.code_challenge_method,
                    new.subject.to_json(),
                    new.expires_at,
                ),
            )
            self._purge(conn)

    def find_code(self, code: str, client_id: str) -> tuple[AuthorizationCode, str | None] | None:
        """The code issued to ``client_id`` and not expired, with the grant it already made
        (a code used before), or None."""
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT code_digest, client_id, redirect_uri, scope, nonce, code_challenge, "
                "code_challenge_method, subject, expires_at, grant_id FROM codes "
                "WHERE code_digest = ? AND client_id = ?",
                (digest(code), client_id),
            ).fetchone()
        if row is None or row[8] < self.clock():
            return None
        record = AuthorizationCode(*row[:7], Subject.from_json(row[7]), row[8])
        return record, row[9]

    def nonce_used(self, client_id: str, nonce: str) -> bool:
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT 1 FROM codes WHERE client_id = ? AND nonce = ?", (client_id, nonce)
            ).fetchone()
        return row is not None

    def use_code(self, code: AuthorizationCode) -> str | None:
        """Mark the code used and open its grant, at once; None if it was used already."""
        grant_id = secrets.token_urlsafe(16)
        with self._transaction() as conn:
            used = conn.execute(
                "UPDATE codes SET grant_id = ? WHERE code_digest = ? AND grant_id IS NULL",
                (grant_id, code.code_digest),
            ).rowcount
            if used != 1:
                return None
            conn.execute(
                "INSERT INTO grants VALUES (?, ?, ?, ?, ?, NULL, NULL)",
                (grant_id, code.client_id, code.scope, code.subject.to_json(), self.clock()),
            )
        return grant_id

    # -- tokens ----------------------------------------------------------------------------------
    def save_refresh_token(self, token: str, grant_id: str, expires_at: float) -> None:
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO refresh_tokens VALUES (?, ?, ?, ?, NULL)",
                (digest(token), grant_id, self.clock(), expires_at),
            )

    def save_access_token(self, jti: str, grant_id: str, issued_at: int, expires_at: int) -> None:
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO access_tokens VALUES (?, ?, ?, ?, NULL)",
                (jti, grant_id, issued_at, expires_at),
            )

    def find_refresh_token(self, token: str) -> GrantToken | None:
        with self._transaction() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS}, t.rotated_at, t.token_digest FROM refresh_tokens t "  # noqa: S608 - constant columns
                "JOIN grants g ON g.id = t.grant_id WHERE t.token_digest = ?",
                (digest(token),),
            ).fetchone()
        if row is None:
            return None
        return self._token(TokenKind.REFRESH, row[8], row, rotated=row[7] is not None)

    def find_access_token(self, jti: str) -> GrantToken | None:
        with self._transaction() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS}, t.revoked_at FROM access_tokens t "  # noqa: S608 - constant columns
                "JOIN grants g ON g.id = t.grant_id WHERE t.jti = ?",
                (jti,),
            ).fetchone()
        if row is None:
            return None
        token = self._token(TokenKind.ACCESS, jti, row)
        if row[7] is not None:
            return GrantToken(**{**token.__dict__, "revoked": True})
        return token

    def rotate_refresh_token(self, token: GrantToken) -> bool:
        """Mark a refresh token used (it gives way to a new one); False if it was already."""
        with self._transaction() as conn:
            return (
                conn.execute(
                    "UPDATE refresh_tokens SET rotated_at = ? "
                    "WHERE token_digest = ? AND rotated_at IS NULL",
                    (self.clock(), token.key),
                ).rowcount
                == 1
            )

    # -- revocation (RFC 7009) -------------------------------------------------------------------
    def revoke_grant(self, grant_id: str, reason: str) -> None:
        """Ends the grant: its refresh tokens and every access token issued under it."""
        with self._transaction() as conn:
            conn.execute(
                "UPDATE grants SET revoked_at = ?, revoked_reason = ? "
                "WHERE id = ? AND revoked_at IS NULL",
                (self.clock(), reason, grant_id),
            )

    def revoke_access_token(self, jti: str) -> None:
        with self._transaction() as conn:
            conn.execute(
                "UPDATE access_tokens SET revoked_at = ? WHERE jti = ? AND revoked_at IS NULL",
                (self.clock(), jti),
            )

    def session_active(self, jti: str) -> bool:
        """Whether a mail session opened with access token ``jti`` may go on: the token was not
        revoked, its grant was not, and either the token is still valid or the grant still has
        a valid refresh token (BRIEF §5: the session ends with the refresh token)."""
        now = self.clock()
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT t.expires_at, t.revoked_at, g.revoked_at, "
                "(SELECT MAX(r.expires_at) FROM refresh_tokens r "
                " WHERE r.grant_id = g.id AND r.rotated_at IS NULL) "
                "FROM access_tokens t JOIN grants g ON g.id = t.grant_id WHERE t.jti = ?",
                (jti,),
            ).fetchone()
        if row is None or row[1] is not None or row[2] is not None:
            return False
        return bool(row[0] > now or (row[3] is not None and row[3] > now))

    # -- internals -------------------------------------------------------------------------------
    def _token(
        self, kind: TokenKind, key: str, row: tuple[object, ...], *, rotated: bool = False
    ) -> GrantToken:
        grant_id, client_id, scope, subject, grant_revoked, issued, expires = row[:7]
        return GrantToken(
            kind=kind,
            key=key,
            grant_id=str(grant_id),
            client_id=str(client_id),
            scope=str(scope),
            subject=Subject.from_json(str(subject)),
            issued_at=int(issued),  # type: ignore[call-overload]
            expires_at=int(expires),  # type: ignore[call-overload]
            revoked=grant_revoked is not None,
            expired=float(expires) <= self.clock(),  # type: ignore[arg-type]
            rotated=rotated,
        )

    def _purge(self, conn: sqlite3.Connection) -> None:
        now = self.clock()
        conn.execute("DELETE FROM codes WHERE expires_at < ?", (now - CODES_KEPT,))
        conn.execute("DELETE FROM access_tokens WHERE expires_at < ?", (now - ACCESS_ROWS_KEPT,))
        conn.execute("DELETE FROM refresh_tokens WHERE expires_at < ?", (now - ACCESS_ROWS_KEPT,))
