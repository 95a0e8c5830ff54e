"""The local OIDC provider on a real socket: discovery, JWKS, the code flow with PKCE (login by
password + TOTP and by card certificate), tokens, refresh with rotation, revocation,
introspection and userinfo."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from authlib.oidc.discovery import OpenIDProviderMetadata
from joserfc import jwt
from joserfc.jwk import KeySet
from oidc_helpers import (
    CARD_FORM,
    CLIENT_ID,
    DOMAIN,
    DUBOIS,
    MARTIN,
    MARTIN_ID_NAT,
    REDIRECT_URI,
    RESOURCE_SERVER,
    SCOPE,
    STRANGER_ID_NAT,
    World,
    enrol_totp,
    node_settings,
    password_form,
    running_provider,
)

from support import drop_schema, is_postgres, new_schema_name, selected_database_url


async def _get(world: World, path: str) -> httpx.Response:
    async with world.client().http() as http:
        return await http.get(f"{world.issuer}{path}")


async def _keys(world: World) -> KeySet:
    return KeySet.import_key_set((await _get(world, "/jwks")).json())


async def _introspect(world: World, token: str) -> dict[str, Any]:
    secret = world.secret_file.read_text().strip()
    response = await world.client().post(
        "/introspect", {"token": token}, auth=(RESOURCE_SERVER, secret)
    )
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


async def test_discovery_and_jwks(world: World) -> None:
    response = await _get(world, "/.well-known/openid-configuration")
    assert response.status_code == 200
    document = response.json()
    OpenIDProviderMetadata(document).validate()  # OpenID Connect Discovery 1.0 §3
    assert document["issuer"] == world.issuer
    assert document["code_challenge_methods_supported"] == ["S256"]
    assert document["acr_values_supported"] == ["eidas1", "eidas2"]
    assert document["jwks_uri"] == f"{world.issuer}/jwks"
    keys = (await _get(world, "/jwks")).json()["keys"]
    assert len(keys) == 1
    assert {"kid", "n", "e"} <= set(keys[0]) and "d" not in keys[0]  # public parts only
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-frame-options"] == "DENY"


async def test_password_and_totp_login_gives_eidas1_tokens(world: World) -> None:
    device = enrol_totp(world.settings, MARTIN)
    client = world.client()
    tokens = await client.tokens(password_form(code=device.now()))
    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] == 300
    assert tokens["scope"] == SCOPE
    keys = await _keys(world)
    access = jwt.decode(tokens["access_token"], keys, algorithms=["RS256"])
    assert access.header["typ"] == "at+jwt" and access.header["kid"]
    claims = access.claims
    assert claims["iss"] == world.issuer
    assert claims["sub"] == MARTIN_ID_NAT
    assert claims["aud"] == "mssante-mail"
    assert claims["exp"] - claims["iat"] == 300
    assert claims["acr"] == "eidas1"
    assert claims["amr"] == ["pwd", "otp", "mfa"]
    assert claims["client_id"] == CLIENT_ID and claims["scope"] == SCOPE and claims["jti"]
    assert claims["preferred_username"] == MARTIN_ID_NAT and claims["email"] == MARTIN
    id_token = jwt.decode(tokens["id_token"], keys, algorithms=["RS256"]).claims
    assert id_token["aud"] == [CLIENT_ID] and id_token["nonce"] == client.nonce
    assert id_token["sub"] == MARTIN_ID_NAT and id_token["acr"] == "eidas1"
    assert tokens["refresh_token"]
    events = [e.event for e in world.events()]
    assert "auth.login_succeeded" in events  # the operator's own login audit (protocol web)
    assert "oidc.login_succeeded" in events and "oidc.token_issued" in events


async def test_a_totp_account_needs_its_code(world: World) -> None:
    enrol_totp(world.settings, MARTIN)
    response = await world.client().login(password_form())
    assert response.status_code == 403
    assert "Connexion refusée" in response.text
    assert "location" not in response.headers


async def test_password_alone_for_an_account_without_totp(world: World) -> None:
    tokens = await world.client().tokens(password_form())
    claims = jwt.decode(tokens["access_token"], await _keys(world)).claims
    assert claims["acr"] == "eidas1" and claims["amr"] == ["pwd"]


async def test_wrong_password_is_refused_and_audited(world: World) -> None:
    response = await world.client().login(password_form(password="pas-le-bon"))
    assert response.status_code == 403
    failed = [e for e in world.events() if e.event == "oidc.login_failed"]
    assert failed and failed[-1].context["reason"] == "refused"
    assert "pas-le-bon" not in json.dumps([e.context for e in world.events()])


async def test_card_certificate_login_gives_eidas2(world: World) -> None:
    tokens = await world.client(world.trust.martin_card).tokens(CARD_FORM)
    claims = jwt.decode(tokens["access_token"], await _keys(world)).claims
    assert claims["sub"] == MARTIN_ID_NAT
    assert claims["acr"] == "eidas2" and "sc" in claims["amr"]
    assert claims["family_name"] == "MARTIN" and claims["email"] == MARTIN


async def test_a_revoked_card_is_refused(world: World) -> None:
    response = await world.client(world.trust.revoked_card).login(CARD_FORM)
    assert response.status_code == 403
    failed = [e for e in world.events() if e.event == "oidc.login_failed"]
    assert failed[-1].context["reason"] == "bad_certificate"


async def test_card_login_without_a_card_is_refused(world: World) -> None:
    response = await world.client().login(CARD_FORM)
    assert response.status_code == 403


async def test_acr_values_eidas2_refuses_a_password_login(world: World) -> None:
    response = await world.client().login(password_form(), acr_values="eidas2")
    assert response.status_code == 403
    tokens = await world.client(world.trust.martin_card).tokens(CARD_FORM, acr_values="eidas2")
    assert tokens["access_token"]


async def test_pkce_is_required_and_must_be_s256(world: World) -> None:
    client = world.client()
    for extra in (
        {"code_challenge": "", "code_challenge_method": ""},
        {"code_challenge_method": "plain"},
    ):
        async with client.http() as http:
            response = await http.get(
                f"{world.issuer}/authorize", params=client.authorization_params(**extra)
            )
        assert response.status_code == 302
        assert "error=invalid_request" in response.headers["location"]
        assert response.headers["location"].startswith(REDIRECT_URI)


async def test_a_wrong_code_verifier_is_refused(world: World) -> None:
    client = world.client()
    code = await client.code(password_form())
    response = await client.exchange(code, verifier="x" * 50)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    assert (await client.exchange(code)).status_code == 200  # the real client still can


async def test_an_unregistered_redirect_uri_is_never_redirected_to(world: World) -> None:
    client = world.client()
    params = client.authorization_params(redirect_uri="https://evil.example/cb")
    async with client.http() as http:
        response = await http.get(f"{world.issuer}/authorize", params=params)
    assert response.status_code == 400
    assert "location" not in response.headers


async def test_a_code_serves_once_and_its_reuse_revokes_the_grant(world: World) -> None:
    client = world.client()
    code = await client.code(password_form())
    first = await client.exchange(code)
    assert first.status_code == 200
    second = await client.exchange(code)
    assert second.status_code == 400 and second.json()["error"] == "invalid_grant"
    assert (await _introspect(world, first.json()["access_token"]))["active"] is False


async def test_refresh_rotates_and_a_reused_refresh_token_ends_the_grant(world: World) -> None:
    client = world.client()
    tokens = await client.tokens(password_form())
    refreshed = await client.refresh(tokens["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
    new = refreshed.json()
    assert new["refresh_token"] != tokens["refresh_token"]
    assert new["access_token"] != tokens["access_token"]
    claims = jwt.decode(new["access_token"], await _keys(world)).claims
    assert claims["sub"] == MARTIN_ID_NAT and claims["acr"] == "eidas1"
    reused = await client.refresh(tokens["refresh_token"])
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    # the leak is assumed: the new refresh token and the access tokens die with the grant
    assert (await client.refresh(new["refresh_token"])).status_code == 400
    assert (await _introspect(world, new["access_token"]))["active"] is False


async def test_a_revoked_refresh_token_cannot_refresh(world: World) -> None:
    client = world.client()
    tokens = await client.tokens(password_form())
    assert (await _introspect(world, tokens["access_token"]))["active"] is True
    revoked = await client.revoke(tokens["refresh_token"], "refresh_token")
    assert revoked.status_code == 200
    refused = await client.refresh(tokens["refresh_token"])
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
    assert (await _introspect(world, tokens["access_token"]))["active"] is False
    assert any(e.event == "oidc.token_revoked" for e in world.events())


async def test_revoking_an_unknown_token_answers_200(world: World) -> None:
    # RFC 7009 §2.2: an invalid token is not an error for the client
    assert (await world.client().revoke("not-a-token", "refresh_token")).status_code == 200


async def test_introspection_is_for_resource_servers_only(world: World) -> None:
    tokens = await world.client().tokens(password_form())
    anonymous = await world.client().post("/introspect", {"token": tokens["access_token"]})
    assert anonymous.status_code == 401
    wrong = await world.client().post(
        "/introspect", {"token": tokens["access_token"]}, auth=(RESOURCE_SERVER, "wrong")
    )
    assert wrong.status_code == 401
    data = await _introspect(world, tokens["access_token"])
    assert data["active"] is True and data["sub"] == MARTIN_ID_NAT
    assert data["client_id"] == CLIENT_ID and data["acr"] == "eidas1"
    assert (await _introspect(world, tokens["refresh_token"]))["active"] is True


async def test_userinfo(world: World) -> None:
    tokens = await world.client().tokens(password_form(login=DUBOIS))
    async with world.client().http() as http:
        response = await http.get(
            f"{world.issuer}/userinfo",
            headers={"Authorization": f"Bearer {tokens['access_token']}"},
        )
        refused = await http.get(
            f"{world.issuer}/userinfo", headers={"Authorization": "Bearer nope"}
        )
    assert response.status_code == 200
    info = response.json()
    assert info["email"] == DUBOIS and len(info["mssante_addresses"]) == 2
    assert info["given_name"] == "Anne"
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == 'Bearer error="invalid_token"'


async def test_a_card_of_a_professional_without_account_still_logs_in(world: World) -> None:
    # The provider vouches for the person; the mail server decides what they may open.
    tokens = await world.client(world.trust.stranger_card).tokens(CARD_FORM)
    claims = jwt.decode(tokens["access_token"], await _keys(world)).claims
    assert claims["sub"] == STRANGER_ID_NAT and "email" not in claims


async def test_a_provider_apart_checks_passwords_in_the_operators_database(
    world: World, tmp_path: Path
) -> None:
    """The demo's layout: the provider has its own database and reads the operators'
    accounts through their configuration files ([oidc] account_configs)."""
    operator = world.settings
    operator_file = tmp_path / "operator.toml"
    operator_file.write_text(
        "\n".join(
            [
                f'data_dir = "{operator.data_dir}"',
                "[database]",
                f'url = "{operator.database.url}"',
                f'schema_name = "{operator.database.schema_name}"',
                "[auth]",
                "argon2_time_cost = 1",
                "argon2_memory_kib = 8",
                "[operator]",
                f'domains = ["{DOMAIN}"]',
            ]
        )
        + "\n"
    )
    with _own_database(tmp_path) as database:
        settings, secret_file = node_settings(
            world.trust, tmp_path / "apart", database, account_configs=[operator_file]
        )
        async with running_provider(settings, world.trust, secret_file) as apart:
            tokens = await apart.client().tokens(password_form())
            refused = await apart.client().login(password_form(login="x@elsewhere.test"))
            provider_events = [e.event for e in apart.events()]
            claims = jwt.decode(tokens["access_token"], await _keys(apart)).claims
    assert claims["sub"] == MARTIN_ID_NAT and claims["email"] == MARTIN
    assert refused.status_code == 403
    assert "oidc.login_succeeded" in provider_events and "oidc.login_failed" in provider_events
    assert "auth.login_succeeded" not in provider_events
    assert "auth.login_succeeded" in [e.event for e in world.events()]  # the operator's log


@contextlib.contextmanager
def _own_database(tmp_path: Path) -> Iterator[dict[str, str]]:
    if not is_postgres():
        yield {"url": f"sqlite:///{tmp_path / 'provider.db'}"}
        return
    schema = new_schema_name()
    try:
        yield {"url": selected_database_url(), "schema_name": schema}
    finally:
        drop_schema(schema)
