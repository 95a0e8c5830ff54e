"""Thunderbird's autoconfiguration document (``config-v1.1.xml``, clientConfig version 1.1).

Format: https://wiki.mozilla.org/Thunderbird:Autoconfiguration:ConfigFileFormat. One
``emailProvider`` per domain; ``incomingServer`` and ``outgoingServer`` in order of preference
(the client takes the first as its choice and keeps the others as alternatives). The user name
is the whole address (``%EMAILADDRESS%``, which the client substitutes), the authentication
``password-cleartext``: the password travels inside TLS only (the server offers AUTH after TLS
only). OAuth2 (XOAUTH2 with Pro Santé Connect) will be added as another ``authentication``
once that login exists.

The document holds only values from the settings: nothing a request carries is ever written
into it, so it cannot reflect input.
"""

from __future__ import annotations

from lxml import etree

from mssante.autoconfig.endpoints import Endpoint, Service, client_endpoints
from mssante.config import Settings

USERNAME = "%EMAILADDRESS%"
PASSWORD_AUTH = "password-cleartext"  # noqa: S105 - Thunderbird's name of the method, in TLS


def config_xml(settings: Settings, domain: str) -> bytes:
    """The document for ``domain`` (one of the operator's domains; the caller checks)."""
    root = etree.Element("clientConfig", version="1.1")
    provider = etree.SubElement(root, "emailProvider", id=domain)
    etree.SubElement(provider, "domain").text = domain
    name = settings.operator.name or domain
    etree.SubElement(provider, "displayName").text = f"{name} (MSSanté)"
    etree.SubElement(provider, "displayShortName").text = name
    for endpoint in client_endpoints(settings):
        if endpoint.offered:
            provider.append(_server(endpoint))
    body: bytes = etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
    return body


def _server(endpoint: Endpoint) -> etree._Element:
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
    return element
