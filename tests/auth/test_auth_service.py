"""The authentication service: passwords on every protocol, audit, throttling, re-hashing."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from auth_helpers import (
    ADMIN,
    LOGIN,
    PASSWORD,
    AuthWorld,
    FakeClock,
    fast_auth,
    id_nat,
    make_person,
    make_settings,
)
from sqlalchemy import select

from mssante.audit.events import Actor, ListSink
from mssante.audit.log import DatabaseAuditLog, iter_entries, verify_chain
from mssante.auth import totp
from mssante.auth.service import AuthMethod, AuthService, _client_network, password_hasher
from mssante.auth.throttle import LoginThrottle
from mssante.config import AuthSettings
from mssante.ops.accounts import Accounts, NewPerson
from mssante.store.db import Database
from mssante.store.models import AccountKind, Credential, CredentialKind

PEER = "203.0.113.5"


@pytest.mark.parametrize("protocol", ["imap", "submission", "web"])
def test_password_logs_in_on_every_protocol(world: AuthWorld, protocol: str) -> None:
    principal = world.service.check_password(LOGIN, PASSWORD, peer=PEER, protocol=protocol)
    assert principal is not None
    assert principal.login == LOGIN
    assert principal.kind is AccountKind.PERSON
    assert principal.id_nat == id_nat()
    assert principal.method is AuthMethod.PASSWORD
    [event] = world.events("auth.login_succeeded")
    assert event == {
        "actor": LOGIN,
        "target": LOGIN,
        "protocol": protocol,
        "peer": PEER,
        "method": "password",
    }


def test_principal_is_frozen(world: AuthWorld) -> None:
    principal = world.service.check_password(LOGIN, PASSWORD, peer=PEER, protocol="imap")
    assert principal is not None
    with pytest.raises(AttributeError):
        principal.login = "someone@else.test"  # type: ignore[misc]


def test_login_is_trimmed_and_case_insensitive(world: AuthWorld) -> None:
    assert world.service.check_password(f"  {LOGIN.upper()} ", PASSWORD, peer=PEER, protocol="imap")


@pytest.mark.parametrize(
    ("login", "password", "reason"),
    [
        (LOGIN, "not the password", "bad_password"),
        ("nobody@hopital-nord.mssante.test", PASSWORD, "unknown_account"),
        ("nobody@hopital-nord.mssante.test", "kq7dm-3hxta-9wnpe-ru4fz", "unknown_account"),
    ],
)
def test_failures_are_audited_with_their_reason_and_no_secret(
    world: AuthWorld, login: str, password: str, reason: str
) -> None:
    assert world.service.check_password(login, password, peer=PEER, protocol="imap") is None
    [event] = world.events("auth.login_failed")
    assert event["reason"] == reason and event["protocol"] == "imap" and event["peer"] == PEER
    assert event["actor"] == login
    dumped = json.dumps([asdict(r) for r in world.sink.records], default=str)
    assert password not in dumped


def test_disabled_account_is_refused(db: Database, tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    sink = ListSink()
    service = AuthService(db, settings, sink)
    make_person(db, password_hasher(settings.auth), disabled=True)
    assert service.check_password(LOGIN, PASSWORD, peer=PEER, protocol="imap") is None
    assert sink.records[-1].context["reason"] == "account_disabled"


def test_unknown_protocol_is_a_programming_error(world: AuthWorld) -> None:
    with pytest.raises(ValueError, match="pop3"):
        world.service.check_password(LOGIN, PASSWORD, peer=PEER, protocol="pop3")


def test_last_use_is_recorded(world: AuthWorld) -> None:
    world.service.check_password(LOGIN, PASSWORD, peer=PEER, protocol="imap")
    with world.db.session() as session:
        used = session.execute(
            select(Credential.last_used_at).where(Credential.kind == CredentialKind.PASSWORD)
        ).scalar_one()
    assert used is not None and used.timestamp() == pytest.approx(world.clock(), abs=1)


def test_hash_is_redone_with_the_configured_parameters(db: Database, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, fast_auth(argon2_time_cost=2))
    service = AuthService(db, settings, ListSink())
    make_person(db, PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    assert service.check_password(LOGIN, PASSWORD, peer=PEER, protocol="imap") is not None
    with db.session() as session:
        stored = session.execute(
            select(Credential.secret).where(Credential.kind == CredentialKind.PASSWORD)
        ).scalar_one()
    assert "t=2" in stored
    assert service.check_password(LOGIN, PASSWORD, peer=PEER, protocol="imap") is not None


def test_defaults_stay_strong() -> None:
    """RFC 9106 §4, second recommended option: argon2id, t=3, m=64 MiB."""
    defaults = AuthSettings()
    assert defaults.argon2_time_cost >= 3
    assert defaults.argon2_memory_kib >= 64 * 1024
    assert password_hasher(defaults).type.name == "ID"
    with pytest.raises(ValueError, match="8 KiB per lane"):
        AuthSettings(argon2_memory_kib=8, argon2_parallelism=2)


def test_accounts_authenticate_still_works_next_to_the_service(
    db: Database, tmp_path: Path
) -> None:
    """Accounts made by create_person (full-cost hash) log in through both layers."""
    view = Accounts(db).create_person(
        NewPerson(LOGIN, PASSWORD, id_nat(), "Martin", "Hélène"), Actor("cli:admin")
    )
    service = AuthService(db, make_settings(tmp_path), ListSink())
    assert Accounts(db).authenticate(LOGIN, PASSWORD) is not None
    principal = service.check_password(LOGIN, PASSWORD, peer=PEER, protocol="submission")
    assert principal is not None and principal.id_nat == view.id_nat
    # An app password is for the service; the older password-only check does not take it.
    new = service.add_app_password(LOGIN, "Thunderbird", ADMIN)
    assert Accounts(db).authenticate(LOGIN, new.password) is None


# -- audit in the database ------------------------------------------------------------------------
def test_changes_and_logins_land_in_the_database_log(db: Database, tmp_path: Path) -> None:
    clock = FakeClock()
    settings = make_settings(tmp_path)
    service = AuthService(db, settings, DatabaseAuditLog(db), clock=clock)
    make_person(db, password_hasher(settings.auth))
    enrolment = service.enrol_totp(LOGIN, ADMIN)
    secret = enrolment.uri.split("secret=")[1].split("&")[0]
    service.confirm_totp(LOGIN, totp.code_for(secret, totp.step_at(clock())), ADMIN)
    new = service.add_app_password(LOGIN, "Thunderbird bureau", ADMIN)
    service.revoke_app_password(LOGIN, "Thunderbird bureau", ADMIN)
    service.check_password(LOGIN, "wrong password!!", peer=PEER, protocol="web")
    clock.advance(totp.STEP_SECONDS)
    service.check_password_totp(LOGIN, PASSWORD, totp.code_for(secret, totp.step_at(clock())), PEER)

    entries = list(iter_entries(db))
    assert [e.event for e in entries] == [
        "auth.totp_enrolment_started",
        "auth.totp_enrolled",
        "auth.app_password_created",
        "auth.app_password_revoked",
        "auth.credential_revoked",  # its sessions end (docs/revocation.md)
        "auth.login_failed",
        "auth.login_succeeded",
    ]
    assert entries[2].actor == "cli:admin" and entries[2].target == LOGIN
    assert entries[2].context["label"] == "Thunderbird bureau"
    assert entries[-1].context == {"protocol": "web", "peer": PEER, "method": "totp"}
    everything = json.dumps([(e.actor, e.target, e.context) for e in entries])
    assert secret not in everything and new.password not in everything
    assert PASSWORD not in everything
    assert verify_chain(db).ok


# -- throttling -----------------------------------------------------------------------------------
BASE = 0.01


def _throttled(
    db: Database, tmp_path: Path, base: float = BASE, **auth: float
) -> tuple[AuthService, LoginThrottle]:
    settings = make_settings(tmp_path, fast_auth(throttle_base=base, throttle_cap=8 * base, **auth))
    throttle = LoginThrottle.from_settings(settings.auth)
    service = AuthService(db, settings, ListSink(), throttle=throttle)
    make_person(db, password_hasher(settings.auth))
    return service, throttle


def test_delay_grows_per_account(db: Database, tmp_path: Path) -> None:
    service, throttle = _throttled(db, tmp_path)
    delays = []
    for i in range(5):
        peer = f"192.0.2.{i + 1}"  # a new address each time: only the account's count grows
        delays.append(throttle.delay(account=LOGIN, address=peer))
        service.check_password(LOGIN, "wrong password!!", peer=peer, protocol="imap")
    assert delays == [0.0, BASE, 2 * BASE, 4 * BASE, 8 * BASE]
    assert throttle.delay(account=LOGIN) == 8 * BASE  # capped


def test_delay_grows_per_client_address_after_its_allowance(db: Database, tmp_path: Path) -> None:
    service, throttle = _throttled(db, tmp_path, throttle_address_allowance=2)
    for i in range(5):  # five different logins guessed from one address
        login = f"user{i}@hopital-nord.mssante.test"
        service.check_password(login, "guess guess guess", peer=PEER, protocol="submission")
    assert throttle.delay(address=PEER) == 4 * BASE  # 5 failures, 2 allowed: 3 count
    assert throttle.delay(account=LOGIN, address="192.0.2.99") == 0.0


def test_success_clears_the_account_count_not_the_address(db: Database, tmp_path: Path) -> None:
    service, throttle = _throttled(db, tmp_path, throttle_address_allowance=0)
    service.check_password(LOGIN, "wrong password!!", peer=PEER, protocol="imap")
    assert throttle.delay(account=LOGIN) == BASE
    service.check_password(LOGIN, PASSWORD, peer=PEER, protocol="imap")
    assert throttle.delay(account=LOGIN) == 0.0
    assert throttle.delay(address=PEER) == BASE  # the address keeps its count
    assert throttle.in_flight() == 0


async def test_async_login_waits_for_the_delay(db: Database, tmp_path: Path) -> None:
    service, _ = _throttled(db, tmp_path, base=0.1)
    for _ in range(3):
        refused = await service.check_password_async(
            LOGIN, "nope nope nope", peer=PEER, protocol="imap"
        )
        assert refused is None
    started = time.monotonic()
    principal = await service.check_password_async(LOGIN, PASSWORD, peer=PEER, protocol="imap")
    assert principal is not None
    assert time.monotonic() - started >= 0.4  # 0.1 * 2**(3-1)


def test_sync_login_waits_for_the_delay_too(db: Database, tmp_path: Path) -> None:
    service, _ = _throttled(db, tmp_path, base=0.1)
    service.check_password(LOGIN, "nope nope nope", peer=PEER, protocol="web")
    started = time.monotonic()
    service.check_password(LOGIN, PASSWORD, peer=PEER, protocol="web")
    assert time.monotonic() - started >= 0.1


@pytest.mark.parametrize(
    ("peer", "unit"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("192.0.2.7:52100", "192.0.2.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("[2001:db8:1:2::9]", "2001:db8:1:2::/64"),
        ("unix-socket", "unix-socket"),
    ],
)
def test_client_addresses_are_grouped(peer: str, unit: str) -> None:
    assert _client_network(peer) == unit
