"""Helpers of the authentication tests: a fast argon2 (the default stays strong), a clock the
tests move, an in-memory audit sink, and people made directly in the store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher

from mssante.audit.events import Actor, ListSink
from mssante.auth.service import AuthService
from mssante.config import AuthSettings, OperatorSettings, Settings
from mssante.pki.ids import luhn_key
from mssante.store.db import Database
from mssante.store.models import Account, AccountKind, Credential, CredentialKind, Professional

LOGIN = "helene.martin@hopital-nord.mssante.test"
PASSWORD = "correct horse battery"
T0 = 1_900_000_005.0  # a fixed moment, 5 s into a 30 s TOTP step
ADMIN = Actor("cli:admin", {"via": "test"})


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def fast_auth(**overrides: float) -> AuthSettings:
    values: dict[str, float] = {
        "argon2_time_cost": 1,
        "argon2_memory_kib": 8,
        "throttle_base": 0.0,
        "throttle_cap": 0.0,
    }
    values.update(overrides)
    return AuthSettings.model_validate(values)


def make_settings(tmp_path: Path, auth: AuthSettings | None = None) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        operator=OperatorSettings(
            name="HOPITAL NORD", domains=["hopital-nord.mssante.test"], structure_id=""
        ),
        auth=auth or fast_auth(),
    )


def id_nat(rpps: str = "1000100010") -> str:
    return "8" + rpps + luhn_key(rpps)


def make_person(
    db: Database,
    hasher: PasswordHasher,
    login: str = LOGIN,
    password: str = PASSWORD,
    *,
    rpps: str = "1000100010",
    disabled: bool = False,
) -> int:
    """An account with a password, written directly (Accounts.create_person hashes at full
    cost; the tests that need it use it)."""
    with db.session() as session:
        professional = Professional(
            id_nat=id_nat(rpps),
            id_type="RPPS",
            id_value=rpps,
            last_name="Martin",
            first_name="Hélène",
        )
        account = Account(
            login=login, kind=AccountKind.PERSON, professional=professional, disabled=disabled
        )
        account.credentials.append(
            Credential(kind=CredentialKind.PASSWORD, secret=hasher.hash(password))
        )
        session.add(account)
        session.flush()
        return account.id


@dataclass
class AuthWorld:
    db: Database
    settings: Settings
    sink: ListSink
    clock: FakeClock
    service: AuthService

    def events(self, name: str) -> list[dict[str, object]]:
        return [
            {"actor": r.actor, "target": r.target, **r.context}
            for r in self.sink.records
            if r.event.value == name
        ]
