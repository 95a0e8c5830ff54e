"""BearerValidator: tokens of the local provider opening mail logins, and every way a token is
refused (another issuer, another key, expired, wrong audience or level, an ID token, a
professional who does not own the login, a revoked token), each refusal audited."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from oidc_helpers import (
    CARD_FORM,
    DUBOIS,
    DUBOIS_CABINET,
    MARTIN,
    MARTIN_ID_NAT,
    World,
    password_form,
)

from mssante.auth.bearer import BearerError, BearerFailure
from mssante.auth.service import AuthProtocol
from mssante.oidc.keys import key_set, load_or_create_key


async def _login(world: World, token: str, login: str | None = MARTIN, **oidc: Any):  # type: ignore[no-untyped-def]
    return await world.validator(**oidc).authenticate(
        token, login, peer="127.0.0.1", protocol=AuthProtocol.SUBMISSION
    )


def _last_failure(world: World) -> dict[str, Any]:
    failed = [e for e in world.events() if e.event == "auth.login_failed"]
    assert failed, "the refusal was not audited"
    context: dict[str, Any] = failed[-1].context
    return context


def _forged(world: World, keys: KeySet, **changes: Any) -> str:
    """A token like the provider's, with ``changes``, signed with ``keys``."""
    now = int(time.time())
    claims = {
        "iss": world.issuer,
        "sub": MARTIN_ID_NAT,
        "aud": "mssante-mail",
        "exp": now + 300,
        "iat": now,
        "jti": "forged-1",
        "acr": "eidas1",
        "client_id": "thunderbird",
        "scope": "openid scope_all",
    }
    claims.update(changes)
    header = {"alg": "RS256", "typ": "at+jwt"}
    return jwt.encode(header, {k: v for k, v in claims.items() if v is not None}, keys)


async def test_a_provider_token_opens_the_login_it_belongs_to(world: World) -> None:
    tokens = await world.client().tokens(password_form())
    result = await _login(world, tokens["access_token"])
    assert result is not None
    assert result.login == MARTIN and result.id_nat == MARTIN_ID_NAT and result.acr == "eidas1"
    succeeded = [e for e in world.events() if e.event == "auth.login_succeeded"]
    context = succeeded[-1].context
    assert context["method"] == "oidc" and context["protocol"] == "submission"
    assert context["jti"] == result.token_id
    everything = json.dumps([e.context for e in world.events()])
    assert tokens["access_token"] not in everything and tokens["refresh_token"] not in everything


async def test_the_login_may_be_left_out_when_the_professional_has_one_account(
    world: World,
) -> None:
    tokens = await world.client(world.trust.martin_card).tokens(CARD_FORM)
    result = await _login(world, tokens["access_token"], login=None)
    assert result is not None and result.login == MARTIN and result.acr == "eidas2"


async def test_several_accounts_need_the_login_named(world: World) -> None:
    tokens = await world.client().tokens(password_form(login=DUBOIS))
    assert await _login(world, tokens["access_token"], login=None) is None
    assert _last_failure(world)["reason"] == "login_required"
    result = await _login(world, tokens["access_token"], login=DUBOIS_CABINET.upper())
    assert result is not None and result.login == DUBOIS_CABINET


async def test_a_professional_who_does_not_own_the_login_is_refused(world: World) -> None:
    tokens = await world.client().tokens(password_form(login=DUBOIS))
    assert await _login(world, tokens["access_token"], login=MARTIN) is None
    assert _last_failure(world)["reason"] == "login_not_owned"


async def test_a_professional_without_account_is_refused(world: World) -> None:
    tokens = await world.client(world.trust.stranger_card).tokens(CARD_FORM)
    assert await _login(world, tokens["access_token"], login=None) is None
    assert _last_failure(world)["reason"] == "unknown_professional"


async def test_a_token_of_another_issuer_is_refused(world: World) -> None:
    # Same key, so the signature verifies: only the issuer check can refuse it.
    keys = key_set(load_or_create_key(world.trust.signing_key))
    token = _forged(world, keys, iss="https://auth.esw.esante.gouv.fr/auth/realms/esante-wallet")
    with pytest.raises(BearerError) as info:
        await world.validator().verify(token)
    assert info.value.failure is BearerFailure.WRONG_ISSUER
    assert await _login(world, token) is None
    assert _last_failure(world)["reason"] == "wrong_issuer"


async def test_a_token_signed_by_an_unknown_key_is_refused(world: World) -> None:
    stranger = RSAKey.generate_key(2048, parameters={"kid": "not-the-providers"})
    with pytest.raises(BearerError) as info:
        await world.validator().verify(_forged(world, KeySet([stranger])))
    assert info.value.failure is BearerFailure.UNKNOWN_KEY
    # the provider's kid with another key: the signature fails
    real_kid = load_or_create_key(world.trust.signing_key).kid
    impostor = RSAKey.generate_key(2048, parameters={"kid": real_kid})
    with pytest.raises(BearerError) as info:
        await world.validator().verify(_forged(world, KeySet([impostor])))
    assert info.value.failure is BearerFailure.BAD_SIGNATURE


async def test_an_expired_token_is_refused(world: World) -> None:
    tokens = await world.client().tokens(password_form())
    validator = world.validator()
    validator.clock = lambda: time.time() + 300 + 61  # lifetime and skew are past
    with pytest.raises(BearerError) as info:
        await validator.verify(tokens["access_token"])
    assert info.value.failure is BearerFailure.EXPIRED
    validator.clock = lambda: time.time() + 300 + 30  # within the skew: still good
    assert (await validator.verify(tokens["access_token"])).sub == MARTIN_ID_NAT


async def test_a_token_from_the_future_is_refused(world: World) -> None:
    keys = key_set(load_or_create_key(world.trust.signing_key))
    token = _forged(world, keys, nbf=int(time.time()) + 3600)
    with pytest.raises(BearerError) as info:
        await world.validator().verify(token)
    assert info.value.failure is BearerFailure.NOT_YET_VALID


@pytest.mark.parametrize(
    ("oidc", "failure"),
    [
        ({"audience": "another-service"}, BearerFailure.WRONG_AUDIENCE),
        ({"accepted_acr": ["eidas2"]}, BearerFailure.ACR_REFUSED),
    ],
)
async def test_audience_and_level_are_checked(
    world: World, oidc: dict[str, Any], failure: BearerFailure
) -> None:
    tokens = await world.client().tokens(password_form())
    with pytest.raises(BearerError) as info:
        await world.validator(**oidc).verify(tokens["access_token"])
    assert info.value.failure is failure


async def test_an_id_token_is_not_an_access_token(world: World) -> None:
    tokens = await world.client().tokens(password_form())
    with pytest.raises(BearerError) as info:
        await world.validator().verify(tokens["id_token"])
    assert info.value.failure is BearerFailure.WRONG_TYPE


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "é.é.é", "x" * 9000])
async def test_garbage_is_refused(world: World, token: str) -> None:
    assert await _login(world, token) is None
    assert _last_failure(world)["reason"] == "malformed_token"


async def test_a_revoked_token_is_refused_and_its_sessions_end(world: World) -> None:
    client = world.client()
    tokens = await client.tokens(password_form())
    validator = world.validator()
    result = await validator.authenticate(
        tokens["access_token"], MARTIN, peer="127.0.0.1", protocol="imap"
    )
    assert result is not None
    assert await validator.is_still_valid(result.token_id) is True
    assert (await client.revoke(tokens["refresh_token"], "refresh_token")).status_code == 200
    assert await validator.is_still_valid(result.token_id) is False
    assert any(e.event == "oidc.session_ended" for e in world.events())
    again = await validator.authenticate(
        tokens["access_token"], MARTIN, peer="127.0.0.1", protocol="imap"
    )
    assert again is None
    assert _last_failure(world)["reason"] == "inactive"


async def test_revoking_the_access_token_alone_ends_its_sessions(world: World) -> None:
    client = world.client()
    tokens = await client.tokens(password_form())
    validator = world.validator()
    result = await _login(world, tokens["access_token"])
    assert result is not None
    refreshed = (await client.refresh(tokens["refresh_token"])).json()
    other = await validator.authenticate(
        refreshed["access_token"], MARTIN, peer="127.0.0.1", protocol="imap"
    )
    assert other is not None
    assert (await client.revoke(tokens["access_token"], "access_token")).status_code == 200
    assert await validator.is_still_valid(result.token_id) is False
    assert await validator.is_still_valid(other.token_id) is True  # the grant lives on


async def test_a_session_outlives_its_access_token_while_the_refresh_token_lives(
    world: World,
) -> None:
    tokens = await world.client().tokens(password_form())
    validator = world.validator()
    result = await _login(world, tokens["access_token"])
    assert result is not None
    world.rt.provider.ctx.state.clock = lambda: time.time() + 600  # access token expired
    assert await validator.is_still_valid(result.token_id) is True
    world.rt.provider.ctx.state.clock = lambda: time.time() + 36000 + 60  # refresh too
    assert await validator.is_still_valid(result.token_id) is False


async def test_without_issuer_credentials_a_session_lasts_until_the_token_expires(
    world: World,
) -> None:
    tokens = await world.client().tokens(password_form())
    validator = world.validator(client_id="", client_secret_file=None)
    result = await validator.authenticate(
        tokens["access_token"], MARTIN, peer="127.0.0.1", protocol="imap"
    )
    assert result is not None
    assert await validator.is_still_valid(result.token_id) is True
    validator.clock = lambda: time.time() + 400
    assert await validator.is_still_valid(result.token_id) is False
    assert await validator.is_still_valid("never-seen") is False
