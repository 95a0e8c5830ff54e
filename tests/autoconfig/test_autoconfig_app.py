"""Thunderbird's autoconfig document, served for our domains only, never reflecting input."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from lxml import etree

from mssante.autoconfig import create_autoconfig_app
from mssante.config import OperatorSettings, Settings, SmtpSettings
from support import serving

DOMAIN = "hopital-nord.mssante.test"
OTHER = "clinique-est.mssante.test"
WELL_KNOWN = "/.well-known/autoconfig/mail/config-v1.1.xml"
AUTOCONFIG = "/mail/config-v1.1.xml"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        operator=OperatorSettings(name="HOPITAL NORD", domains=[DOMAIN, OTHER.upper()]),
        smtp=SmtpSettings(hostname="mail.hopital-nord.mssante.test"),
    )


def _client(settings: Settings) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_autoconfig_app(settings))
    return httpx.AsyncClient(transport=transport, base_url=f"https://{DOMAIN}")


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(settings) as http:
        yield http


def _servers(body: bytes) -> dict[str, list[tuple[str, int, str, str, str]]]:
    root = etree.fromstring(body)
    assert root.tag == "clientConfig" and root.get("version") == "1.1"
    found: dict[str, list[tuple[str, int, str, str, str]]] = {}
    for server in root.iter("incomingServer", "outgoingServer"):
        found.setdefault(server.get("type") or "", []).append(
            (
                server.findtext("hostname") or "",
                int(server.findtext("port") or 0),
                server.findtext("socketType") or "",
                server.findtext("username") or "",
                server.findtext("authentication") or "",
            )
        )
    return found


async def test_well_known_path_with_the_address(client: httpx.AsyncClient) -> None:
    response = await client.get(WELL_KNOWN, params={"emailaddress": f"helene.martin@{DOMAIN}"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/xml")
    host = "mail.hopital-nord.mssante.test"
    user, auth = "%EMAILADDRESS%", "password-cleartext"
    assert _servers(response.content) == {
        "imap": [(host, 993, "SSL", user, auth), (host, 143, "STARTTLS", user, auth)],
        "smtp": [(host, 465, "SSL", user, auth), (host, 587, "STARTTLS", user, auth)],
    }
    root = etree.fromstring(response.content)
    provider = root.find("emailProvider")
    assert provider is not None and provider.get("id") == DOMAIN
    assert provider.findtext("domain") == DOMAIN
    assert provider.findtext("displayShortName") == "HOPITAL NORD"


async def test_autoconfig_host_without_the_address(client: httpx.AsyncClient) -> None:
    response = await client.get(AUTOCONFIG, headers={"Host": f"autoconfig.{OTHER}:443"})
    assert response.status_code == 200
    provider = etree.fromstring(response.content).find("emailProvider")
    assert provider is not None and provider.get("id") == OTHER


async def test_ports_come_from_the_settings(settings: Settings) -> None:
    settings.smtp.submission_port = 2587
    settings.smtp.submissions_port = 0  # implicit TLS submission turned off
    settings.imap.port, settings.imap.tls_port = 1143, 1993
    async with _client(settings) as client:
        response = await client.get(AUTOCONFIG, params={"emailaddress": f"a@{DOMAIN}"})
    servers = _servers(response.content)
    assert [(port, tls) for _, port, tls, _, _ in servers["smtp"]] == [(2587, "STARTTLS")]
    assert [(port, tls) for _, port, tls, _, _ in servers["imap"]] == [
        (1993, "SSL"),
        (1143, "STARTTLS"),
    ]


@pytest.mark.parametrize(
    ("path", "params", "host"),
    [
        (WELL_KNOWN, {"emailaddress": "someone@gmail.com"}, DOMAIN),
        (WELL_KNOWN, {"emailaddress": f"no-at-sign.{DOMAIN}"}, DOMAIN),
        (WELL_KNOWN, {"emailaddress": f"@{DOMAIN}"}, DOMAIN),
        (AUTOCONFIG, {}, "autoconfig.gmail.com"),
        (AUTOCONFIG, {}, "[::1]:8443"),
        (AUTOCONFIG, {}, f"evil.{DOMAIN}"),
        ("/mail/other.xml", {"emailaddress": f"a@{DOMAIN}"}, DOMAIN),
    ],
)
async def test_anything_else_is_404(
    client: httpx.AsyncClient, path: str, params: dict[str, str], host: str
) -> None:
    response = await client.get(path, params=params, headers={"Host": host})
    assert response.status_code == 404


@pytest.mark.parametrize(
    "address",
    [
        f"<script>alert(1)</script>@{DOMAIN}",
        f'"><img src=x onerror=alert(1)>@{DOMAIN}',
        f"]]><!ENTITY x SYSTEM 'file:///etc/passwd'>@{DOMAIN}",
        "<script>alert(1)</script>@evil.test",
        f"a@{DOMAIN}<script>",
        f"a@{DOMAIN}%0d%0aX-Injected: 1",
    ],
)
async def test_injection_in_the_address_is_never_reflected(
    client: httpx.AsyncClient, address: str
) -> None:
    response = await client.get(WELL_KNOWN, params={"emailaddress": address})
    body = response.text
    for marker in ("<script", "onerror", "ENTITY", "passwd", "X-Injected", "evil.test"):
        assert marker not in body
    assert "X-Injected" not in response.headers
    if response.status_code == 200:
        etree.fromstring(response.content)  # still a well-formed document
    else:
        assert response.status_code == 404 and body == "not found\n"


async def test_only_get_and_head(client: httpx.AsyncClient) -> None:
    params = {"emailaddress": f"a@{DOMAIN}"}
    assert (await client.post(AUTOCONFIG, params=params)).status_code == 405
    assert (await client.head(AUTOCONFIG, params=params)).status_code == 200


# -- over a real socket ---------------------------------------------------------------------------
@pytest.fixture
def served(settings: Settings) -> Iterator[str]:
    config = uvicorn.Config(
        create_autoconfig_app(settings), host="127.0.0.1", port=0, log_level="warning"
    )
    with serving(config) as port:
        yield f"http://127.0.0.1:{port}"


def test_thunderbird_requests_over_http(served: str) -> None:
    """The two requests Thunderbird makes for helene.martin@<domain>, in its order."""
    address = f"helene.martin@{DOMAIN}"
    with httpx.Client(base_url=served) as http:
        first = http.get(
            AUTOCONFIG, params={"emailaddress": address}, headers={"Host": f"autoconfig.{DOMAIN}"}
        )
        second = http.get(WELL_KNOWN, params={"emailaddress": address}, headers={"Host": DOMAIN})
        unknown = http.get(WELL_KNOWN, params={"emailaddress": "x@unknown.test"})
    assert first.status_code == second.status_code == 200
    assert first.content == second.content
    servers = _servers(first.content)
    assert servers["imap"][0][1:3] == (993, "SSL")
    assert servers["smtp"][-1][1:3] == (587, "STARTTLS")
    assert unknown.status_code == 404


async def test_oauth2_is_offered_when_tokens_are_accepted(settings: Settings) -> None:
    async with _client(settings) as client:
        before = await client.get(AUTOCONFIG, params={"emailaddress": f"a@{DOMAIN}"})
    assert b"OAuth2" not in before.content and b"oAuth2" not in before.content
    settings.oidc.issuer = "https://auth.esw.esante.gouv.fr/auth/realms/esante-wallet"
    settings.oidc.authorization_endpoint = f"{settings.oidc.issuer}/protocol/openid-connect/auth"
    async with _client(settings) as client:
        response = await client.get(AUTOCONFIG, params={"emailaddress": f"a@{DOMAIN}"})
    root = etree.fromstring(response.content)
    for server in root.iter("incomingServer", "outgoingServer"):
        methods = [m.text for m in server.iter("authentication")]
        assert methods == ["password-cleartext", "OAuth2"]  # the password first: any client
    oauth = root.find("oAuth2")
    assert oauth is not None
    assert oauth.findtext("issuer") == settings.oidc.issuer
    assert oauth.findtext("scope") == "openid scope_all"
    assert oauth.findtext("authURL", "").endswith("/protocol/openid-connect/auth")
    assert oauth.findtext("tokenURL") == f"{settings.oidc.issuer}/token"
