"""Certificate profiles: what each use of a certificate requires (key usage, extended key usage).

The same table drives issuance in :mod:`mssante.pki.ca` and checking in
:mod:`mssante.pki.verify`, so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType

from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

# RFC 9336: id-kp-documentSigning, for signing documents that are not code, mail or time stamps.
# Chosen for the authority's whitelist-signing certificate (see docs/pki.md).
DOCUMENT_SIGNING = ObjectIdentifier("1.3.6.1.5.5.7.3.36")


class Purpose(StrEnum):
    """What a certificate is being verified for."""

    SERVER = "server"  # an operator's MTA answering a TLS connection
    CLIENT = "client"  # an operator's MTA (or an APP mailbox's software) as TLS client
    PERSON = "person"  # a professional's CPS-like authentication certificate
    SIGNER = "signer"  # the authority's whitelist-signing certificate


# RFC 5280 §4.2.1.12: the extended key usage a certificate must list for each purpose.
PURPOSE_EKU: Mapping[Purpose, ObjectIdentifier] = MappingProxyType(
    {
        Purpose.SERVER: ExtendedKeyUsageOID.SERVER_AUTH,
        Purpose.CLIENT: ExtendedKeyUsageOID.CLIENT_AUTH,
        Purpose.PERSON: ExtendedKeyUsageOID.CLIENT_AUTH,
        Purpose.SIGNER: DOCUMENT_SIGNING,
    }
)

# RFC 5280 §4.2.1.3: the key usage bits a certificate must assert for each purpose (names of
# the attributes of cryptography's KeyUsage).
PURPOSE_KEY_USAGE: Mapping[Purpose, tuple[str, ...]] = MappingProxyType(
    {
        Purpose.SERVER: ("digital_signature",),
        Purpose.CLIENT: ("digital_signature",),
        Purpose.PERSON: ("digital_signature",),
        Purpose.SIGNER: ("digital_signature",),
    }
)

PURPOSE_TEXT: Mapping[Purpose, str] = MappingProxyType(
    {
        Purpose.SERVER: "TLS server authentication",
        Purpose.CLIENT: "TLS client authentication",
        Purpose.PERSON: "personal authentication",
        Purpose.SIGNER: "document signing",
    }
)
