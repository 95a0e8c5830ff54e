"""Helpers of the OIDC tests (importable as ``oidc_helpers``): the test trust material, a
running provider, and a client doing the authorization code flow with PKCE over httpx."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import secrets
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pyotp

from mssante.audit.events import Actor, ListSink
from mssante.audit.log import iter_entries
from mssante.auth.bearer import BearerValidator
from mssante.auth.service import AuthService
from mssante.config import Settings, load_settings
from mssante.oidc.models import digest
from mssante.oidc.run import ProviderRuntime, build_provider, serve
from mssante.ops.accounts import Accounts, NewPerson
from mssante.pki.ca import IssuedPaths, TestPki
from mssante.pki.ids import luhn_key
from mssante.runtime import open_node
from support import free_port_block, wait_started

DOMAIN = "b.mssante.test"
MARTIN = f"dr.martin@{DOMAIN}"
MARTIN_ID_NAT = "8" + "1000123456" + luhn_key("1000123456")
DUBOIS = f"a.dubois@{DOMAIN}"
DUBOIS_CABINET = f"cabinet.dubois@{DOMAIN}"
DUBOIS_ID_NAT = "8" + "1000123457" + luhn_key("1000123457")
STRANGER_ID_NAT = "8" + "1000999999" + luhn_key("1000999999")  # no account here
PASSWORD = "mot-de-passe-solide-42"
CLIENT_ID = "thunderbird"
REDIRECT_URI = "http://127.0.0.1/callback"  # RFC 8252 §7.3 loopback redirect, never called
RESOURCE_SERVER = "operator-b"
SCOPE = "openid scope_all"


@dataclass(frozen=True)
class TrustMaterial:
    pki: TestPki
    server: IssuedPaths  # the provider's HTTPS certificate (localhost)
    martin_card: IssuedPaths  # a CPS-like person certificate
    stranger_card: IssuedPaths  # a professional without an account here
    revoked_card: IssuedPaths
    signing_key: Path  # made once: RSA keys take a moment to generate


def make_trust_material(root: Path) -> TrustMaterial:
    from mssante.oidc.keys import load_or_create_key

    pki = TestPki.init(root / "pki")
    revoked = pki.issue_person(MARTIN_ID_NAT, "Martin", "Hélène")
    pki.revoke(revoked.cert, "keyCompromise")
    signing_key = root / "signing-key.pem"
    load_or_create_key(signing_key)
    return TrustMaterial(
        pki=pki,
        server=pki.issue_server("localhost", "318310021300028", "OPERATEUR B", "31"),
        martin_card=pki.issue_person(MARTIN_ID_NAT, "Martin", "Hélène"),
        stranger_card=pki.issue_person(STRANGER_ID_NAT, "Inconnu", "Paul"),
        revoked_card=revoked,
        signing_key=signing_key,
    )


def node_settings(
    trust: TrustMaterial, root: Path, database: dict[str, str], **oidc: Any
) -> tuple[Settings, Path]:
    """One node playing both roles: the provider, and the mail server that validates tokens
    (same database: the provider checks passwords against the operator's accounts)."""
    port = free_port_block(4)
    secret = secrets.token_urlsafe(32)
    secret_file = root / "rs-secret"
    root.mkdir(parents=True, exist_ok=True)
    secret_file.write_text(secret + "\n")
    paths = trust.pki.paths()
    oidc_section: dict[str, Any] = {
        "issuer": f"https://localhost:{port}",
        "listen_port": port,
        "signing_key": trust.signing_key,
        "clients": {CLIENT_ID: [REDIRECT_URI]},
        "resource_servers": {RESOURCE_SERVER: digest(secret)},
        "client_id": RESOURCE_SERVER,
        "client_secret_file": secret_file,
        **oidc,
    }
    settings = load_settings(
        None,
        data_dir=root / "data",
        database=database,
        pki={
            "trust_anchors": [paths.root],
            "intermediates": [paths.intermediates],
            "crl_sources": trust.pki.crl_sources(),
        },
        tls={"certificate": trust.server.fullchain, "key": trust.server.key},
        operator={"name": "OPERATEUR B", "domains": [DOMAIN]},
        auth={"argon2_time_cost": 1, "argon2_memory_kib": 8, "throttle_base": 0.0},
        oidc=oidc_section,
    )
    return settings, secret_file


def create_people(settings: Settings) -> None:
    node = open_node(settings)
    try:
        accounts = Accounts(node.db)
        actor = Actor("test")
        accounts.create_person(
            NewPerson(MARTIN, PASSWORD, MARTIN_ID_NAT, "Martin", "Hélène"), actor
        )
        for address in (DUBOIS, DUBOIS_CABINET):
            accounts.create_person(
                NewPerson(address, PASSWORD, DUBOIS_ID_NAT, "Dubois", "Anne"), actor
            )
    finally:
        node.close()


def enrol_totp(settings: Settings, login: str) -> pyotp.TOTP:
    """A confirmed TOTP device. Confirmed with the previous step's code, so that the current
    code is still unused (codes cannot be replayed)."""
    node = open_node(settings)
    try:
        service = AuthService(node.db, settings, ListSink())
        enrolment = service.enrol_totp(login, Actor("test"))
        secret = parse_qs(urlsplit(enrolment.uri).query)["secret"][0]
        device = pyotp.TOTP(secret)
        service.confirm_totp(login, device.at(time.time() - 30), Actor("test"))
        return device
    finally:
        node.close()


@dataclass
class World:
    settings: Settings
    rt: ProviderRuntime
    trust: TrustMaterial
    secret_file: Path

    @property
    def issuer(self) -> str:
        return self.rt.provider.ctx.issuer

    def validator(self, **oidc: Any) -> BearerValidator:
        settings = self.settings.model_copy(
            update={"oidc": self.settings.oidc.model_copy(update=oidc)}
        )
        return BearerValidator.from_settings(settings, self.rt.node.db, self.rt.node.audit)

    def client(self, card: IssuedPaths | None = None) -> OidcClient:
        return OidcClient(self.issuer, self.trust.pki.paths().root, card)

    def events(self) -> list[Any]:
        return list(iter_entries(self.rt.node.db))


@contextlib.asynccontextmanager
async def running_provider(
    settings: Settings, trust: TrustMaterial, secret_file: Path
) -> AsyncIterator[World]:
    rt = build_provider(settings)
    stop, started = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(serve(rt, stop, started))
    await wait_started(started, task)
    try:
        yield World(settings, rt, trust, secret_file)
    finally:
        stop.set()
        await task
        rt.close()


def pkce_pair() -> tuple[str, str]:
    """RFC 7636 §4.1-4.2: a verifier and its S256 challenge."""
    verifier = secrets.token_urlsafe(48)
    digest_ = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest_).rstrip(b"=").decode("ascii")


@dataclass
class OidcClient:
    """A public client (like Thunderbird) doing the code flow with PKCE."""

    issuer: str
    ca: Path
    card: IssuedPaths | None = None
    client_id: str = CLIENT_ID
    redirect_uri: str = REDIRECT_URI
    verifier: str = ""
    state: str = field(default_factory=lambda: secrets.token_urlsafe(8))
    nonce: str = field(default_factory=lambda: secrets.token_urlsafe(8))

    def http(self) -> httpx.AsyncClient:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        if self.card is not None:
            ctx.load_cert_chain(self.card.fullchain, self.card.key)
        return httpx.AsyncClient(verify=ctx, timeout=20)

    def authorization_params(self, **extra: str) -> dict[str, str]:
        self.verifier, challenge = pkce_pair()
        params = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": SCOPE,
            "state": self.state,
            "nonce": self.nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        params.update(extra)
        return {k: v for k, v in params.items() if v != ""}

    async def login(self, form: dict[str, str], **extra: str) -> httpx.Response:
        """GET the login page, then POST the login: the response is the redirect (or a page)."""
        params = self.authorization_params(**extra)
        async with self.http() as http:
            page = await http.get(f"{self.issuer}/authorize", params=params)
            if page.status_code != 200:
                return page
            return await http.post(f"{self.issuer}/authorize", data={**params, **form})

    async def code(self, form: dict[str, str], **extra: str) -> str:
        response = await self.login(form, **extra)
        assert response.status_code == 302, response.text
        query = parse_qs(urlsplit(response.headers["location"]).query)
        assert query["state"] == [self.state]
        return query["code"][0]

    async def post(self, path: str, data: dict[str, str], **kwargs: Any) -> httpx.Response:
        async with self.http() as http:
            return await http.post(f"{self.issuer}{path}", data=data, **kwargs)

    async def exchange(self, code: str, verifier: str | None = None) -> httpx.Response:
        return await self.post(
            "/token",
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": self.redirect_uri,
                "client_id": self.client_id,
                "code_verifier": self.verifier if verifier is None else verifier,
            },
        )

    async def tokens(self, form: dict[str, str], **extra: str) -> dict[str, Any]:
        response = await self.exchange(await self.code(form, **extra))
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    async def refresh(self, refresh_token: str) -> httpx.Response:
        return await self.post(
            "/token",
            {
                "grant_type": "refresh_token",
                "refresh_token": refresh_token,
                "client_id": self.client_id,
            },
        )

    async def revoke(self, token: str, hint: str) -> httpx.Response:
        return await self.post(
            "/revoke", {"token": token, "token_type_hint": hint, "client_id": self.client_id}
        )


def password_form(login: str = MARTIN, password: str = PASSWORD, code: str = "") -> dict[str, str]:
    return {"method": "password", "login": login, "password": password, "code": code}


CARD_FORM = {"method": "certificate"}
