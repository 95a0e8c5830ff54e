"""Thunderbird's autoconfiguration document (``config-v1.1.xml``, clientConfig version 1.1).

Format: https://wiki.mozilla.org/Thunderbird:Autoconfiguration:ConfigFileFormat. One
``emailProvider`` per domain; ``incomingServer`` and ``outgoingServer`` in order of preference
(the client takes the first as its choice and keeps the others as alternatives). The user name
is the whole address (``%EMAILADDRESS%``, which the client substitutes), the authentication
``password-cleartext``: the password travels inside TLS only (the server offers AUTH after TLS
only). When the operator accepts access tokens (``[oidc] issuer``), each server also lists
``OAuth2`` (SASL XOAUTH2), and an ``oAuth2`` element names the issuer, the scope and the
authorization and token endpoints, for clients that know how to use them. The password comes
first: a client that knows no client id for the issuer still works.

The document holds only values from the settings: nothing a request carries is ever written
into it, so it cannot reflect input.
"""

from __future__ import annotations

from lxml import etree

from mssante.auth.sasl import DEFAULT_SCOPE
from mssante.autoconfig.endpoints import Endpoint, Service, client_endpoints
from mssante.config import Settings

USERNAME = "%EMAILADDRESS%"
PASSWORD_AUTH = "password-cleartext"  # noqa: S105 - Thunderbird's name of the method, in TLS
OAUTH2_AUTH = "OAuth2"


def config_xml(settings: Settings, domain: str) -> bytes:
    """The document for ``domain`` (one of the operator's domains; the caller checks)."""
    root = etree.Element("clientConfig", version="1.1")
    provider = etree.SubElement(root, "emailProvider", id=domain)
    etree.SubElement(provider, "domain").text = domain
    name = settings.operator.name or domain
    etree.SubElement(provider, "displayName").text = f"{name} (MSSanté)"
    etree.SubElement(provider, "displayShortName").text = name
    oauth = bool(settings.oidc.issuer)
    for endpoint in client_endpoints(settings):
        if endpoint.offered:
            provider.append(_server(endpoint, oauth=oauth))
    if oauth:
        root.append(_oauth2(settings))
    body: bytes = etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
    return body


def _oauth2(settings: Settings) -> etree._Element:
    issuer = settings.oidc.issuer.rstrip("/")
    element = etree.Element("oAuth2")
    for tag, text in (
        ("issuer", issuer),
        ("scope", DEFAULT_SCOPE),
        ("authURL", settings.oidc.authorization_endpoint or f"{issuer}/authorize"),
        ("tokenURL", settings.oidc.token_endpoint or f"{issuer}/token"),
    ):
        etree.SubElement(element, tag).text = text
    return element


def _server(endpoint: Endpoint, *, oauth: bool) -> etree._Element:
    if endpoint.service is Service.IMAP:
        element = etree.Element("incomingServer", type="imap")
    else:
        element = etree.Element("outgoingServer", type="smtp")
    for tag, text in (
        ("hostname", endpoint.hostname),
        ("port", str(endpoint.port)),
        ("socketType", endpoint.security.value),
        ("username", USERNAME),
        ("authentication", PASSWORD_AUTH),
    ):
        etree.SubElement(element, tag).text = text
    if oauth:
        etree.SubElement(element, "authentication").text = OAUTH2_AUTH
    return element
