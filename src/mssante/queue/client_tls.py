"""The client side of TLS between operators: our certificate out, the peer's checked in.

Outbound, an operator must speak TLS (RFC 3207 STARTTLS; TLS 1.2 at least, BRIEF §2), present
its own IGC-Santé server certificate as client certificate (mutual authentication), and trust
the peer only if

1. its certificate chains to the configured anchors (checked once by OpenSSL during the
   handshake, then again by the project's one verification function, which adds the purpose
   (serverAuth), the validity dates and revocation by CRL), and
2. its subject DN is listed in the whitelist for the recipient's domain.

Host names: when the route names the peer by a DNS name (an MX host, or a static route with a
name), the certificate must also name that host (subjectAltName). When the route is an IP
literal (``127.0.0.1:2525``, local trust spaces), host-name matching cannot apply: the whitelist
DN check, which binds a certificate to the recipient's domain through the authority's signed
list, is then the authority. It is the stronger check anyway: MX answers are not authenticated.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from datetime import datetime

import aiosmtplib
from cryptography import x509

from mssante.config import Settings
from mssante.errors import ConfigError
from mssante.pki.crl import CrlCache
from mssante.pki.names import dn_string
from mssante.pki.profiles import Purpose
from mssante.pki.truststore import TrustStore
from mssante.pki.verify import verify_certificate
from mssante.queue.routes import is_ip_literal
from mssante.trust.model import Whitelist

# OpenSSL's X509_V_FLAG_NO_CHECK_TIME (Python's ssl.VerifyFlags does not name it): dates are
# left to verify_certificate, so that an expired peer is refused with its own reason.
X509_V_FLAG_NO_CHECK_TIME = 0x200000


def client_context(settings: Settings) -> ssl.SSLContext:
    """The TLS context of outbound connections (built once, shared by every connection)."""
    if not settings.tls.certificate or not settings.tls.key:
        raise ConfigError("tls.certificate and tls.key must be set to deliver to other operators")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # MSSanté: TLS 1.2 at least
    ctx.check_hostname = False  # host names are checked by verify_certificate (see above)
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        for path in [*settings.pki.trust_anchors, *settings.pki.intermediates]:
            ctx.load_verify_locations(cafile=str(path))
        # tls.certificate holds the full chain (leaf first), sent to the peer as is.
        ctx.load_cert_chain(settings.tls.certificate, settings.tls.key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            "cannot load the TLS certificate, key or trust anchors", detail=str(exc)
        ) from None
    ctx.verify_flags = ssl.VerifyFlags(int(ctx.verify_flags) | X509_V_FLAG_NO_CHECK_TIME)
    return ctx


def peer_certificate(smtp: aiosmtplib.SMTP) -> x509.Certificate | None:
    """The certificate the peer presented in the TLS session of ``smtp``."""
    ssl_object = smtp.get_transport_info("ssl_object")
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der) if der else None


def tls_version(smtp: aiosmtplib.SMTP) -> str:
    ssl_object = smtp.get_transport_info("ssl_object")
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        return ""
    return ssl_object.version() or ""


@dataclass(frozen=True)
class PeerCheck:
    """Whether the peer may receive the domain's mail. ``reason`` is safe to log and to put in
    a DSN; ``detail`` is for the log only."""

    ok: bool
    dn: str
    reason: str
    detail: str = ""


def check_peer(
    cert: x509.Certificate | None,
    *,
    domain: str,
    host: str,
    whitelist: Whitelist,
    trust: TrustStore,
    crls: CrlCache | None,
    at: datetime,
) -> PeerCheck:
    """The peer's certificate is valid for a server (chain, dates, revocation, and the host
    name unless ``host`` is an IP literal) and its DN is listed for ``domain``."""
    if cert is None:
        return PeerCheck(False, "", "the peer presented no certificate")
    dns_name = None if is_ip_literal(host) else host
    result = verify_certificate(
        cert, purpose=Purpose.SERVER, trust=trust, crls=crls, at=at, dns_name=dns_name
    )
    if not result.ok:
        return PeerCheck(
            False, result.subject_dn, f"peer certificate refused: {result.reason}", result.detail
        )
    decision = whitelist.is_trusted(domain, result.subject_dn or dn_string(cert.subject))
    if not decision.trusted:
        return PeerCheck(False, result.subject_dn, f"peer not trusted: {decision.message}")
    return PeerCheck(True, result.subject_dn, decision.message, result.detail)
