"""TOTP (RFC 6238): codes, ±1 step, no replay, enrolment confirmed before use."""

from __future__ import annotations

import base64
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, urlparse

import pyotp
import pytest
from auth_helpers import ADMIN, LOGIN, PASSWORD, T0, AuthWorld

from mssante.auth import totp
from mssante.auth.service import AuthError, AuthMethod
from mssante.errors import NotFoundError

PEER = "192.0.2.10"


def _secret(uri: str) -> str:
    return parse_qs(urlparse(uri).query)["secret"][0]


def _enrolled(world: AuthWorld) -> str:
    """Enrol and confirm a device; returns its secret. The clock ends one step later."""
    enrolment = world.service.enrol_totp(LOGIN, ADMIN)
    secret = _secret(enrolment.uri)
    world.service.confirm_totp(LOGIN, totp.code_for(secret, totp.step_at(world.clock())), ADMIN)
    world.clock.advance(totp.STEP_SECONDS)
    return secret


def _now_code(world: AuthWorld, secret: str, offset_steps: int = 0) -> str:
    return totp.code_for(secret, totp.step_at(world.clock()) + offset_steps)


# -- the code check alone -------------------------------------------------------------------------
def test_codes_match_pyotp_and_rfc6238_test_vector() -> None:
    # RFC 6238 Appendix B, SHA-1, T = 59 s: 94287082 (8 digits); its last 6 digits for 6.
    rfc_secret = base64.b32encode(b"12345678901234567890").decode()
    assert pyotp.TOTP(rfc_secret, digits=8).at(59) == "94287082"
    assert totp.code_for(rfc_secret, totp.step_at(59)) == "287082"


def test_check_code_accepts_one_step_either_side_only() -> None:
    secret = totp.new_secret()
    step = totp.step_at(T0)
    for offset in (-1, 0, 1):
        result = totp.check_code(
            secret, totp.code_for(secret, step + offset), now=T0, last_step=None
        )
        assert result.check is totp.CodeCheck.ACCEPTED
        assert result.step == step + offset
    for offset in (-2, 2):
        result = totp.check_code(
            secret, totp.code_for(secret, step + offset), now=T0, last_step=None
        )
        assert result.check is totp.CodeCheck.WRONG


def test_check_code_refuses_a_used_step_and_junk() -> None:
    secret = totp.new_secret()
    step = totp.step_at(T0)
    code = totp.code_for(secret, step)
    assert totp.check_code(secret, code, now=T0, last_step=step).check is totp.CodeCheck.REPLAYED
    assert totp.check_code(secret, code, now=T0, last_step=step + 1).check is (
        totp.CodeCheck.REPLAYED
    )
    for junk in ("", "12345", "1234567", "abcdef", "１２３４５６"):
        assert totp.check_code(secret, junk, now=T0, last_step=None).check is totp.CodeCheck.WRONG
    spaced = f"{code[:3]} {code[3:]}"
    assert totp.check_code(secret, spaced, now=T0, last_step=None).check is (
        totp.CodeCheck.ACCEPTED
    )


def test_secret_is_160_bits() -> None:
    assert len(base64.b32decode(totp.new_secret())) == 20


# -- enrolment ------------------------------------------------------------------------------------
def test_enrolment_gives_uri_and_qr_codes(world: AuthWorld) -> None:
    enrolment = world.service.enrol_totp(LOGIN, ADMIN)
    uri = urlparse(enrolment.uri)
    assert uri.scheme == "otpauth" and uri.netloc == "totp"
    assert "HOPITAL%20NORD" in uri.path and "helene.martin" in uri.path
    query = parse_qs(uri.query)
    assert query["issuer"] == ["HOPITAL NORD"]
    assert len(query["secret"][0]) == 32
    assert enrolment.qr_png().startswith(b"\x89PNG\r\n\x1a\n")
    assert "<svg" in enrolment.qr_svg()
    assert world.events("auth.totp_enrolment_started") == []  # in the database log, not the sink


def test_enrolment_must_be_confirmed_before_it_counts(world: AuthWorld) -> None:
    enrolment = world.service.enrol_totp(LOGIN, ADMIN)
    secret = _secret(enrolment.uri)
    assert not world.service.totp_active(LOGIN)
    # Not confirmed: the password alone still opens the web, and a code is not accepted.
    assert world.service.check_password(LOGIN, PASSWORD, peer=PEER, protocol="web") is not None
    code = _now_code(world, secret)
    assert world.service.check_password_totp(LOGIN, PASSWORD, code, PEER) is None
    assert world.events("auth.login_failed")[-1]["reason"] == "totp_not_enrolled"

    with pytest.raises(AuthError, match="not valid"):
        world.service.confirm_totp(LOGIN, "000000" if code != "000000" else "111111", ADMIN)
    assert world.events("auth.totp_confirmation_failed")
    world.service.confirm_totp(LOGIN, code, ADMIN)
    assert world.service.totp_active(LOGIN)


def test_confirmation_without_enrolment_or_after_expiry(world: AuthWorld) -> None:
    with pytest.raises(AuthError, match="enrol first"):
        world.service.confirm_totp(LOGIN, "123456", ADMIN)
    with pytest.raises(NotFoundError):
        world.service.enrol_totp("nobody@hopital-nord.mssante.test", ADMIN)
    enrolment = world.service.enrol_totp(LOGIN, ADMIN)
    world.clock.advance(2 * 3600)
    with pytest.raises(AuthError, match="expired"):
        world.service.confirm_totp(LOGIN, _now_code(world, _secret(enrolment.uri)), ADMIN)


def test_the_confirmation_code_cannot_be_replayed_to_log_in(world: AuthWorld) -> None:
    enrolment = world.service.enrol_totp(LOGIN, ADMIN)
    secret = _secret(enrolment.uri)
    code = _now_code(world, secret)
    world.service.confirm_totp(LOGIN, code, ADMIN)
    assert world.service.check_password_totp(LOGIN, PASSWORD, code, PEER) is None
    assert world.events("auth.login_failed")[-1]["reason"] == "replayed_code"


def test_reenrolment_replaces_the_device_only_once_confirmed(world: AuthWorld) -> None:
    old = _enrolled(world)
    new = _secret(world.service.enrol_totp(LOGIN, ADMIN).uri)
    # The old device still works while the new one waits.
    assert world.service.check_password_totp(LOGIN, PASSWORD, _now_code(world, old), PEER)
    world.clock.advance(totp.STEP_SECONDS)
    world.service.confirm_totp(LOGIN, _now_code(world, new), ADMIN)
    world.clock.advance(totp.STEP_SECONDS)
    assert world.service.check_password_totp(LOGIN, PASSWORD, _now_code(world, old), PEER) is None
    assert world.service.check_password_totp(LOGIN, PASSWORD, _now_code(world, new), PEER)


# -- logins with a code ---------------------------------------------------------------------------
def test_valid_code_logs_in_on_the_web(world: AuthWorld) -> None:
    secret = _enrolled(world)
    principal = world.service.check_password_totp(LOGIN, PASSWORD, _now_code(world, secret), PEER)
    assert principal is not None
    assert principal.method is AuthMethod.TOTP
    success = world.events("auth.login_succeeded")[-1]
    assert success["method"] == "totp" and success["protocol"] == "web"


def test_wrong_code_or_wrong_password_fails(world: AuthWorld) -> None:
    secret = _enrolled(world)
    code = _now_code(world, secret)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    assert world.service.check_password_totp(LOGIN, PASSWORD, wrong, PEER) is None
    assert world.events("auth.login_failed")[-1]["reason"] == "bad_code"
    assert world.service.check_password_totp(LOGIN, "wrong password!!", code, PEER) is None
    assert world.events("auth.login_failed")[-1]["reason"] == "bad_password"


@pytest.mark.parametrize("offset", [-1, 1])
def test_one_step_of_drift_is_tolerated(world: AuthWorld, offset: int) -> None:
    secret = _enrolled(world)
    world.clock.advance(totp.STEP_SECONDS)
    code = _now_code(world, secret, offset)
    assert world.service.check_password_totp(LOGIN, PASSWORD, code, PEER) is not None


def test_two_steps_of_drift_are_not(world: AuthWorld) -> None:
    secret = _enrolled(world)
    world.clock.advance(3 * totp.STEP_SECONDS)
    for offset in (-2, 2):
        code = _now_code(world, secret, offset)
        assert world.service.check_password_totp(LOGIN, PASSWORD, code, PEER) is None


def test_a_used_code_is_refused_and_so_are_older_ones(world: AuthWorld) -> None:
    secret = _enrolled(world)
    world.clock.advance(totp.STEP_SECONDS)
    previous = _now_code(world, secret, -1)
    current = _now_code(world, secret)
    assert world.service.check_password_totp(LOGIN, PASSWORD, current, PEER) is not None
    assert world.service.check_password_totp(LOGIN, PASSWORD, current, PEER) is None
    assert world.events("auth.login_failed")[-1]["reason"] == "replayed_code"
    # The step before the one used is within the window, but older than the last accepted.
    assert world.service.check_password_totp(LOGIN, PASSWORD, previous, PEER) is None
    world.clock.advance(totp.STEP_SECONDS)
    assert world.service.check_password_totp(LOGIN, PASSWORD, _now_code(world, secret), PEER)


def test_a_code_sent_twice_at_once_is_accepted_once(world: AuthWorld) -> None:
    secret = _enrolled(world)
    code = _now_code(world, secret)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(
            pool.map(
                lambda _: world.service.check_password_totp(LOGIN, PASSWORD, code, PEER), range(4)
            )
        )
    assert sum(r is not None for r in results) == 1


def test_with_totp_the_password_alone_no_longer_opens_anything(world: AuthWorld) -> None:
    _enrolled(world)
    assert world.service.check_password(LOGIN, PASSWORD, peer=PEER, protocol="web") is None
    assert world.events("auth.login_failed")[-1]["reason"] == "totp_required"
    assert world.service.check_password(LOGIN, PASSWORD, peer=PEER, protocol="imap") is None
    assert world.events("auth.login_failed")[-1]["reason"] == "app_password_required"
