"""End to end with mail clients, as the issue's acceptance puts it: in the demo's trust space, a
professional's client configures itself from the address alone (autoconfig), reads over IMAP the
message a colleague of the other operator sent, and replies over submission; the colleague reads
the reply with a Pro Santé Connect-like token from the demo's OIDC provider (IMAP XOAUTH2)."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import httpx
import imapclient

from mssante import demo
from mssante.config import load_settings
from oidc.oidc_helpers import OidcClient, password_form

Space = tuple[demo.DemoLayout, dict[str, Any]]


def _ca(op: dict[str, Any]) -> Path:
    return load_settings(Path(op["config"])).pki.trust_anchors[0]


def _tls(op: dict[str, Any]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(_ca(op)))
    ctx.check_hostname = False  # 127.0.0.1; the certificates name smtp.<domain>
    return ctx


def _autoconfig(op: dict[str, Any], address: str) -> dict[str, tuple[str, int, str]]:
    """What Thunderbird asks first (docs/autoconfig.md): server, port and TLS per protocol."""
    url = f"https://{op['endpoints']['web']}/.well-known/autoconfig/mail/config-v1.1.xml"
    answer = httpx.get(url, params={"emailaddress": address}, verify=_tls(op))
    assert answer.status_code == 200, answer.text
    servers: dict[str, tuple[str, int, str]] = {}
    for server in ElementTree.fromstring(answer.content).iter():
        if server.tag.endswith("Server") and server.get("type") not in servers:
            assert server.findtext("username") == "%EMAILADDRESS%"
            servers[server.get("type") or ""] = (
                server.findtext("hostname") or "",
                int(server.findtext("port") or 0),
                server.findtext("socketType") or "",
            )
    return servers


def _loopback(host: str) -> str:
    """The demo's servers are named imap./smtp.<domain> in autoconfig; they listen on loopback."""
    assert host.endswith(".mssante.test"), host
    return "127.0.0.1"


def _send(op: dict[str, Any], account: dict[str, str], msg: EmailMessage) -> None:
    """Submission as the client was told: implicit TLS ("SSL", RFC 8314) or STARTTLS."""
    host, port, socket_type = _autoconfig(op, account["address"])["smtp"]
    smtp: smtplib.SMTP
    if socket_type == "SSL":
        smtp = smtplib.SMTP_SSL(_loopback(host), port, context=_tls(op), timeout=30)
    else:
        assert socket_type == "STARTTLS", socket_type
        smtp = smtplib.SMTP(_loopback(host), port, timeout=30)
        smtp.starttls(context=_tls(op))
    with smtp:
        smtp.login(account["address"], account["password"])
        smtp.send_message(msg)


def _imap(op: dict[str, Any], address: str) -> imapclient.IMAPClient:
    host, port, socket_type = _autoconfig(op, address)["imap"]
    if socket_type == "SSL":
        return imapclient.IMAPClient(
            _loopback(host), port, ssl=True, ssl_context=_tls(op), timeout=30
        )
    assert socket_type == "STARTTLS", socket_type
    client = imapclient.IMAPClient(_loopback(host), port, ssl=False, timeout=30)
    client.starttls(_tls(op))
    return client


def _wait_in_inbox(client: imapclient.IMAPClient, subject: str, timeout: float = 30) -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        client.select_folder("INBOX")
        uids = client.search(["SUBJECT", subject])
        if uids:
            return client.fetch(uids[-1:], ["RFC822"])[uids[-1]][b"RFC822"]  # type: ignore[no-any-return]
        time.sleep(0.3)
    raise AssertionError(f"{subject!r} never arrived")


def test_a_client_set_up_from_the_address_reads_and_replies(trust_space: Space) -> None:
    layout, info = trust_space
    demo.start(layout, info, log_dir=layout.root / "logs")
    demo.wait_until_operators_hold_the_list(info, layout)
    nord, sud = info["operators"]
    helene, paul = nord["accounts"][0], sud["accounts"][0]

    first = EmailMessage()
    first["From"], first["To"], first["Subject"] = paul["address"], helene["address"], "Avis"
    first.set_content("Pouvez-vous voir ce patient ?")
    _send(sud, paul, first)

    # Hélène's client knows only her address and password.
    client = _imap(nord, helene["address"])
    client.login(helene["address"], helene["password"])
    try:
        received = _wait_in_inbox(client, "Avis")
    finally:
        client.logout()
    assert b"Pouvez-vous voir ce patient" in received

    reply = EmailMessage()
    reply["From"], reply["To"], reply["Subject"] = helene["address"], paul["address"], "Re: Avis"
    reply["In-Reply-To"] = "<avis@test>"
    reply.set_content("Oui, demain matin.")
    _send(nord, helene, reply)

    # Paul reads it with a token from the demo's provider (the Pro Santé Connect stand-in).
    oidc = info["oidc"]
    provider = OidcClient(
        oidc["issuer"], _ca(sud), client_id=oidc["client_id"], redirect_uri=oidc["redirect_uri"]
    )
    tokens = asyncio.run(provider.tokens(password_form(paul["address"], paul["password"])))
    client = _imap(sud, paul["address"])
    assert b"AUTH=XOAUTH2" in client.capabilities()
    client.oauth2_login(paul["address"], tokens["access_token"])
    try:
        answer = _wait_in_inbox(client, "Re: Avis")
    finally:
        client.logout()
    assert b"Oui, demain matin." in answer
