"""The authority's HTTPS listener with client certificates asked for, not required.

The whitelist and the directory's search are public, like the agency's sites: a client without a
certificate must still reach them. So the TLS handshake *asks* for a certificate (OpenSSL's
``CERT_OPTIONAL``: one presented must chain to the PKI's anchors, none is also fine) and the
routes that need one (an operator's FHIR PATCH, docs/publication.md) require it themselves, then
verify it with the project's one verification function (purpose, dates, revocation).

uvicorn does not offer the ASGI TLS extension: :class:`ClientCertificateH11` puts the chain the
client sent into each request's ``scope["state"]`` (as :mod:`mssante.oidc.run` does).
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

from cryptography import x509
from starlette.requests import Request
from uvicorn.protocols.http.h11_impl import H11Protocol

from mssante.auth.certificates import presented_chain
from mssante.config import PkiSettings

PEER_CHAIN = "mssante_tls_peer_chain"  # ASGI scope state: the client's certificates, leaf first
# OpenSSL's X509_V_FLAG_NO_CHECK_TIME: dates are left to verify_certificate, so that an expired
# client certificate reaches the handler and is refused there, with its reason, and audited.
X509_V_FLAG_NO_CHECK_TIME = 0x200000


def server_context(certfile: Path, keyfile: Path, pki: PkiSettings) -> ssl.SSLContext:
    """TLS 1.2 or newer (MSSanté); a client certificate is asked for when the PKI's anchors
    are configured, never required at this level."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certfile, keyfile)
    if pki.trust_anchors:
        ctx.verify_mode = ssl.CERT_OPTIONAL
        for path in [*pki.trust_anchors, *pki.intermediates]:
            ctx.load_verify_locations(cafile=str(path))
        ctx.verify_flags = ssl.VerifyFlags(int(ctx.verify_flags) | X509_V_FLAG_NO_CHECK_TIME)
    return ctx


class ClientCertificateH11(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, handing the TLS client's certificates to the app."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        chain = presented_chain(transport.get_extra_info("ssl_object"))
        if chain:
            self.app_state = {**self.app_state, PEER_CHAIN: tuple(chain)}


def peer_chain(request: Request) -> tuple[x509.Certificate, ...]:
    """The certificates the client presented (leaf first), or none."""
    state: dict[str, Any] = request.scope.get("state") or {}
    chain = state.get(PEER_CHAIN)
    return chain if isinstance(chain, tuple) else ()
