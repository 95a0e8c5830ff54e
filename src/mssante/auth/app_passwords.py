"""App passwords: one generated secret per device or program, for the mail protocols only.

A person names each one ("Thunderbird bureau"), sees it once when it is made, and can revoke it
alone without changing their own password. Only an argon2id hash is kept. The service
(:mod:`mssante.auth.service`) accepts them on IMAP and submission and refuses them on the web.

Shape: four groups of five characters from an alphabet without look-alikes (0/o, 1/l/i), about
99 bits of randomness, e.g. ``kq7dm-3hxta-9wnpe-ru4fz``. Dashes, spaces and case do not matter
when typed: the hash is of the normalised form.

The first group is also a public hint, unique among an account's active app passwords and kept
in clear before the hash (``kq7dm:$argon2id$…``): a login finds the one candidate by it and
verifies a single hash, so a guess costs the same whatever the number of app passwords, and the
list can show which password is which. The other 15 characters (about 74 bits) stay secret.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

from argon2 import PasswordHasher
from sqlalchemy import select
from sqlalchemy.orm import Session

from mssante.errors import MssanteError, NotFoundError
from mssante.store.models import Account, Credential, CredentialKind, utcnow

ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
GROUPS = 4
GROUP_LENGTH = 5
MAX_ACTIVE = 20  # per account: each one costs an argon2 verification at a failed login
MAX_LABEL = 100
HINT_LENGTH = GROUP_LENGTH


class AppPasswordError(MssanteError):
    """An app password could not be created or revoked."""


@dataclass(frozen=True)
class AppPasswordInfo:
    """What may be shown of an app password: never the secret, never its hash."""

    id: int
    label: str
    hint: str  # the first group, e.g. "kq7dm-…"
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "label": self.label,
            "hint": self.hint,
            "created_at": _iso(self.created_at),
            "last_used_at": _iso(self.last_used_at),
            "revoked_at": _iso(self.revoked_at),
        }


@dataclass(frozen=True)
class NewAppPassword:
    """A freshly made app password: ``password`` is shown once and kept nowhere."""

    info: AppPasswordInfo
    password: str


def generate() -> str:
    groups = ("".join(secrets.choice(ALPHABET) for _ in range(GROUP_LENGTH)) for _ in range(GROUPS))
    return "-".join(groups)


def normalise(candidate: str) -> str | None:
    """The canonical form if ``candidate`` has the shape of an app password, else None."""
    compact = candidate.replace("-", "").replace(" ", "").lower()
    if len(compact) != GROUPS * GROUP_LENGTH or any(c not in ALPHABET for c in compact):
        return None
    return compact


def hint_of(stored: str) -> str:
    """The public first group of a stored app password (``prefix:hash``)."""
    return stored.partition(":")[0]


def hash_of(stored: str) -> str:
    return stored.partition(":")[2]


def clean_label(label: str) -> str:
    label = " ".join(label.split())
    if not label:
        raise AppPasswordError("an app password needs a label, e.g. 'Thunderbird bureau'")
    if len(label) > MAX_LABEL:
        raise AppPasswordError(f"a label has at most {MAX_LABEL} characters")
    return label


def info(credential: Credential) -> AppPasswordInfo:
    return AppPasswordInfo(
        id=credential.id,
        label=credential.label,
        hint=hint_of(credential.secret) + "-…",
        created_at=credential.created_at,
        last_used_at=credential.last_used_at,
        revoked_at=credential.revoked_at,
    )


def create(session: Session, account: Account, label: str, ph: PasswordHasher) -> NewAppPassword:
    """Add an app password to ``account`` in the caller's transaction."""
    label = clean_label(label)
    active = _active(session, account.id)
    if len(active) >= MAX_ACTIVE:
        raise AppPasswordError(f"at most {MAX_ACTIVE} app passwords per account: revoke one first")
    if any(c.label.casefold() == label.casefold() for c in active):
        raise AppPasswordError(f"an app password named '{label}' already exists")
    password, canonical = _fresh({hint_of(c.secret) for c in active})
    credential = Credential(
        account_id=account.id,
        kind=CredentialKind.APP_PASSWORD,
        label=label,
        secret=f"{canonical[:HINT_LENGTH]}:{ph.hash(canonical)}",
        created_at=utcnow(),
    )
    session.add(credential)
    session.flush()
    return NewAppPassword(info(credential), password)


def _fresh(taken_hints: set[str]) -> tuple[str, str]:
    """A new password and its normalised form, whose hint no active one of the account has."""
    while True:
        password = generate()
        canonical = password.replace("-", "")
        if canonical[:HINT_LENGTH] not in taken_hints:
            return password, canonical


def listing(
    session: Session, account_id: int, *, include_revoked: bool = False
) -> list[AppPasswordInfo]:
    query = select(Credential).where(
        Credential.account_id == account_id, Credential.kind == CredentialKind.APP_PASSWORD
    )
    if not include_revoked:
        query = query.where(Credential.revoked_at.is_(None))
    rows = session.execute(query.order_by(Credential.id)).scalars()
    return [info(c) for c in rows]


def revoke(session: Session, account_id: int, label_or_id: str) -> AppPasswordInfo:
    """Revoke the active app password named ``label_or_id`` (a label, or its id)."""
    credential = _find_active(session, account_id, label_or_id.strip())
    credential.revoked_at = utcnow()
    session.flush()
    return info(credential)


def _active(session: Session, account_id: int) -> list[Credential]:
    return list(
        session.execute(
            select(Credential).where(
                Credential.account_id == account_id,
                Credential.kind == CredentialKind.APP_PASSWORD,
                Credential.revoked_at.is_(None),
            )
        ).scalars()
    )


def _find_active(session: Session, account_id: int, label_or_id: str) -> Credential:
    active = _active(session, account_id)
    by_label = [c for c in active if c.label.casefold() == label_or_id.casefold()]
    if by_label:
        return by_label[0]
    by_id = [c for c in active if label_or_id.isdigit() and c.id == int(label_or_id)]
    if by_id:
        return by_id[0]
    raise NotFoundError(f"no active app password '{label_or_id}' on this account")


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None
