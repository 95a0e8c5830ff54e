"""App passwords: shown once, hashed, for the mail protocols only, listed, revocable."""

from __future__ import annotations

import pytest
from auth_helpers import ADMIN, LOGIN, PASSWORD, AuthWorld
from sqlalchemy import select

from mssante.auth import app_passwords, totp
from mssante.auth.app_passwords import AppPasswordError
from mssante.auth.service import AuthMethod
from mssante.errors import NotFoundError
from mssante.store.models import Credential, CredentialKind

PEER = "198.51.100.7"


def test_generated_shape_and_normalisation() -> None:
    password = app_passwords.generate()
    groups = password.split("-")
    assert [len(g) for g in groups] == [5, 5, 5, 5]
    assert set(password.replace("-", "")) <= set(app_passwords.ALPHABET)
    assert app_passwords.normalise(password.upper().replace("-", " ")) == password.replace("-", "")
    assert app_passwords.normalise("correct horse battery") is None
    assert len({app_passwords.generate() for _ in range(200)}) == 200


def test_shown_once_and_only_a_hash_is_kept(world: AuthWorld) -> None:
    new = world.service.add_app_password(LOGIN, "Thunderbird bureau", ADMIN)
    assert new.info.label == "Thunderbird bureau"
    assert new.info.hint == new.password[:5] + "-…"
    with world.db.session() as session:
        stored = session.execute(
            select(Credential.secret).where(Credential.kind == CredentialKind.APP_PASSWORD)
        ).scalar_one()
    assert new.password not in stored and new.password.replace("-", "") not in stored
    assert app_passwords.hash_of(stored).startswith("$argon2id$")
    listed = world.service.list_app_passwords(LOGIN)
    assert [i.label for i in listed] == ["Thunderbird bureau"]
    assert new.password not in repr(listed) and "argon2" not in repr(listed)


@pytest.mark.parametrize("protocol", ["imap", "submission"])
def test_works_on_the_mail_protocols(world: AuthWorld, protocol: str) -> None:
    new = world.service.add_app_password(LOGIN, "Thunderbird bureau", ADMIN)
    principal = world.service.check_password(LOGIN, new.password, peer=PEER, protocol=protocol)
    assert principal is not None
    assert principal.method is AuthMethod.APP_PASSWORD
    assert principal.credential_label == "Thunderbird bureau"
    assert principal.credential_id == new.info.id
    event = world.events("auth.login_succeeded")[-1]
    assert event["protocol"] == protocol and event["app_password"] == "Thunderbird bureau"


def test_typed_without_dashes_or_in_capitals_it_still_works(world: AuthWorld) -> None:
    new = world.service.add_app_password(LOGIN, "phone", ADMIN)
    typed = new.password.replace("-", "").upper()
    assert world.service.check_password(LOGIN, typed, peer=PEER, protocol="imap") is not None


def test_refused_on_the_web(world: AuthWorld) -> None:
    new = world.service.add_app_password(LOGIN, "Thunderbird bureau", ADMIN)
    assert world.service.check_password(LOGIN, new.password, peer=PEER, protocol="web") is None
    assert world.events("auth.login_failed")[-1]["protocol"] == "web"


def test_a_wrong_app_password_fails(world: AuthWorld) -> None:
    new = world.service.add_app_password(LOGIN, "Thunderbird bureau", ADMIN)
    same_hint = new.password[:6] + "".join(reversed(new.password[6:]))
    for guess in (app_passwords.generate(), same_hint):
        if guess == new.password:
            continue
        assert world.service.check_password(LOGIN, guess, peer=PEER, protocol="imap") is None


def test_the_account_password_still_works_on_mail_without_totp(world: AuthWorld) -> None:
    world.service.add_app_password(LOGIN, "Thunderbird bureau", ADMIN)
    principal = world.service.check_password(LOGIN, PASSWORD, peer=PEER, protocol="imap")
    assert principal is not None and principal.method is AuthMethod.PASSWORD


def test_app_password_works_for_a_totp_account(world: AuthWorld) -> None:
    enrolment = world.service.enrol_totp(LOGIN, ADMIN)
    secret = enrolment.uri.split("secret=")[1].split("&")[0]
    world.service.confirm_totp(LOGIN, totp.code_for(secret, totp.step_at(world.clock())), ADMIN)
    new = world.service.add_app_password(LOGIN, "Thunderbird bureau", ADMIN)
    assert world.service.check_password(LOGIN, new.password, peer=PEER, protocol="imap")


def test_revoke_by_label_or_id_ends_it(world: AuthWorld) -> None:
    first = world.service.add_app_password(LOGIN, "Thunderbird bureau", ADMIN)
    second = world.service.add_app_password(LOGIN, "Téléphone", ADMIN)
    revoked = world.service.revoke_app_password(LOGIN, "thunderbird BUREAU", ADMIN)
    assert revoked.id == first.info.id and revoked.revoked_at is not None
    assert world.service.check_password(LOGIN, first.password, peer=PEER, protocol="imap") is None
    assert world.service.check_password(LOGIN, second.password, peer=PEER, protocol="imap")
    world.service.revoke_app_password(LOGIN, str(second.info.id), ADMIN)
    assert world.service.check_password(LOGIN, second.password, peer=PEER, protocol="imap") is None
    assert world.service.list_app_passwords(LOGIN) == []
    every = world.service.list_app_passwords(LOGIN, include_revoked=True)
    assert [(i.label, i.active) for i in every] == [
        ("Thunderbird bureau", False),
        ("Téléphone", False),
    ]
    with pytest.raises(NotFoundError):
        world.service.revoke_app_password(LOGIN, "Thunderbird bureau", ADMIN)


def test_listed_with_label_and_last_use(world: AuthWorld) -> None:
    new = world.service.add_app_password(LOGIN, "Thunderbird bureau", ADMIN)
    world.service.add_app_password(LOGIN, "Téléphone", ADMIN)
    assert all(i.last_used_at is None for i in world.service.list_app_passwords(LOGIN))
    world.service.check_password(LOGIN, new.password, peer=PEER, protocol="submission")
    used = {i.label: i.last_used_at for i in world.service.list_app_passwords(LOGIN)}
    assert used["Thunderbird bureau"] is not None
    assert used["Thunderbird bureau"].timestamp() == pytest.approx(world.clock(), abs=1)
    assert used["Téléphone"] is None
    as_dict = world.service.list_app_passwords(LOGIN)[0].as_dict()
    assert set(as_dict) == {"id", "label", "hint", "created_at", "last_used_at", "revoked_at"}


def test_labels_are_required_and_unique(world: AuthWorld) -> None:
    world.service.add_app_password(LOGIN, "Thunderbird bureau", ADMIN)
    with pytest.raises(AppPasswordError, match="already exists"):
        world.service.add_app_password(LOGIN, "  thunderbird   bureau ", ADMIN)
    with pytest.raises(AppPasswordError, match="needs a label"):
        world.service.add_app_password(LOGIN, "   ", ADMIN)
    with pytest.raises(AppPasswordError, match="at most"):
        world.service.add_app_password(LOGIN, "x" * 101, ADMIN)
    with pytest.raises(NotFoundError):
        world.service.add_app_password("nobody@hopital-nord.mssante.test", "x", ADMIN)


def test_at_most_twenty_active(world: AuthWorld) -> None:
    for i in range(app_passwords.MAX_ACTIVE):
        world.service.add_app_password(LOGIN, f"device {i}", ADMIN)
    with pytest.raises(AppPasswordError, match="revoke one first"):
        world.service.add_app_password(LOGIN, "one more", ADMIN)
    hints = {i.hint for i in world.service.list_app_passwords(LOGIN)}
    assert len(hints) == app_passwords.MAX_ACTIVE  # unique hints: one hash checked per login
