"""XOAUTH2 and OAUTHBEARER (RFC 7628) messages: parsing, building, the error challenge."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mssante.auth.sasl import (
    BearerCredentials,
    SaslError,
    build_oauthbearer,
    build_xoauth2,
    error_challenge,
    parse_oauthbearer,
    parse_xoauth2,
)

# RFC 6750 §2.1 b64token
tokens = st.from_regex(r"[A-Za-z0-9\-._~+/]{1,300}={0,2}", fullmatch=True)
logins = st.from_regex(r"[a-z0-9.]{1,20}@[a-z0-9-]{1,20}\.mssante\.fr", fullmatch=True)
# anything an authzid may carry, including the characters RFC 5801 escapes
authzids = st.text(
    st.characters(blacklist_categories=["Cs", "Cc"], blacklist_characters="\x00"), min_size=1
)


@given(tokens, logins)
def test_xoauth2_round_trip(token: str, login: str) -> None:
    assert parse_xoauth2(build_xoauth2(login, token)) == BearerCredentials(token, login)


@given(tokens, authzids, st.integers(0, 65535))
def test_oauthbearer_round_trip(token: str, login: str, port: int) -> None:
    parsed = parse_oauthbearer(build_oauthbearer(token, login, "smtp.example.fr", port))
    assert parsed == BearerCredentials(token, login, "smtp.example.fr", port)


@given(tokens)
def test_oauthbearer_without_authzid(token: str) -> None:
    assert parse_oauthbearer(build_oauthbearer(token)).login is None


@given(st.binary(max_size=400))
def test_anything_either_parses_or_is_a_sasl_error(data: bytes) -> None:
    for parse in (parse_xoauth2, parse_oauthbearer):
        try:
            parsed = parse(data)
        except SaslError:
            continue
        assert parsed.token


def test_the_rfc7628_example() -> None:
    # RFC 7628 §4.1 (host and port keys, authzid, token)
    message = (
        b"n,a=user@example.com,\x01host=server.example.com\x01port=143\x01"
        b"auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01"
    )
    parsed = parse_oauthbearer(message)
    assert parsed.login == "user@example.com"
    assert parsed.token == "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg=="
    assert (parsed.host, parsed.port) == ("server.example.com", 143)


def test_the_bearer_scheme_is_case_insensitive() -> None:
    parsed = parse_xoauth2(b"user=a@b.fr\x01auth=bearer   abc\x01\x01")
    assert parsed.token == "abc"


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"user=a@b.fr\x01auth=Bearer abc\x01",  # one ^A at the end
        b"user=a@b.fr\x01auth=Basic abc\x01\x01",
        b"user=a@b.fr\x01auth=Bearer \x01\x01",
        b"user=a@b.fr\x01auth=Bearer a b\x01\x01",
        b"auth=Bearer abc\x01\x01",  # no user
        b"user=a@b.fr\x01auth=Bearer abc\x01extra=1\x01\x01",
        b"user=a@b.fr\x01user=c@d.fr\x01auth=Bearer abc\x01\x01",
        b"\xff\xfe",
        b"x" * 20000,
    ],
)
def test_malformed_xoauth2(message: bytes) -> None:
    with pytest.raises(SaslError):
        parse_xoauth2(message)


@pytest.mark.parametrize(
    "message",
    [
        b"\x01",  # the client's dummy response after an error (RFC 7628 §3.2.3)
        b"n,,\x01\x01",  # no auth
        b"p=tls-unique,,\x01auth=Bearer abc\x01\x01",  # channel binding: not supported
        b"n,u=x,\x01auth=Bearer abc\x01\x01",
        b"n,a=x=y,\x01auth=Bearer abc\x01\x01",  # an unescaped '='
        b"n,a=x\x01auth=Bearer abc\x01\x01",  # header without its final comma
        b"n,,\x01port=99999\x01auth=Bearer abc\x01\x01",
        b"n,,\x01auth=Bearer abc\x01auth=Bearer def\x01\x01",
        b"n,,\x011=2\x01auth=Bearer abc\x01\x01",  # key must be letters
    ],
)
def test_malformed_oauthbearer(message: bytes) -> None:
    with pytest.raises(SaslError):
        parse_oauthbearer(message)


def test_error_challenge_is_the_rfc7628_json() -> None:
    assert json.loads(error_challenge()) == {
        "status": "invalid_token",
        "schemes": "bearer",
        "scope": "openid scope_all",
    }
    with_discovery = json.loads(
        error_challenge(openid_configuration="https://idp.example/.well-known/openid-configuration")
    )
    assert with_discovery["openid-configuration"].startswith("https://idp.example/")


def test_credentials_never_show_the_token() -> None:
    assert "secret-token" not in repr(BearerCredentials("secret-token", "a@b.fr"))
